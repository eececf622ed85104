"""``zssr upscale``'s STAC and provenance options: ``--assets`` and ``--stac-item``.

* INPUT may be a STAC Item (a JSON file, or an ``s3://``/``https://`` URL) with ``--assets red,green,blue`` (asset
  keys or ``eo:bands`` common names / names, stacked in that order;
  :mod:`pipeline.catalog.stac_input`): the bands are stacked in a GDAL VRT in a private
  temporary folder, removed when the command ends, and the job reads the VRT.
* Every COG/TIFF/Zarr output records its provenance (:mod:`pipeline.catalog.provenance`); the
  source named there is the Item, or the input's URL (never a ``/vsi`` name).
* ``--stac-item`` (implied by a STAC input) writes ``<output>.stac-item.json`` beside the
  output (:mod:`pipeline.catalog.stac`), linked ``derived_from`` the Item or the input file; for
  an ``s3://`` output it is uploaded beside the object.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from io_adapters.output_safety import check_output
from io_adapters.vsi import display_url
from pipeline.catalog.provenance import job_provenance, with_provenance
from pipeline.catalog.stac import item_path, write_output_item
from pipeline.catalog.stac_input import StacInput, item_href, resolve_item_input
from pipeline.image.job import ImageJob
from pipeline.image.kernel_estimate import GroupChoices, KernelChoice

__all__ = ["add_cloud_args", "stac_source", "source_name", "record", "check_item",
           "write_item"]


def add_cloud_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--assets", default=None, metavar="NAMES",
                   help="INPUT is a STAC Item (JSON): stack these assets or eo:bands common "
                   "names, in this order (e.g. red,green,blue or B04,B03,B02)")
    p.add_argument("--stac-item", action="store_true",
                   help="write a STAC Item <output>.stac-item.json beside the output "
                   "(always done for a STAC Item input)")


@contextmanager
def stac_source(args: argparse.Namespace) -> Iterator[StacInput | None]:
    """With a STAC Item INPUT: ``args.input`` becomes the VRT stacking ``--assets`` for as
    long as the block runs; yields the :class:`StacInput` (None for other inputs)."""
    if item_href(args.input) is None and args.assets is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="zssr-stac-") as tmp:
        stac = resolve_item_input(args.input, args.assets, workdir=Path(tmp))
        args.stac_href, args.input = stac.item_href, stac.vrt
        yield stac


def source_name(args: argparse.Namespace) -> str:
    """The input as provenance names it: the STAC Item, a URL, or the path."""
    href = getattr(args, "stac_href", None)
    return href if href is not None else display_url(args.input)


def record(job: ImageJob, args: argparse.Namespace) -> ImageJob:
    """``job`` whose writer records its provenance."""
    return with_provenance(job, source=source_name(args))


def check_item(args: argparse.Namespace) -> None:
    """Before any work: the Item's name obeys the output rule (no link there, never an
    input, only over an earlier JSON document), like the output's."""
    if getattr(args, "stac_input", None) is not None or args.stac_item:
        check_output(item_path(Path(args.output)), inputs=(Path(args.input),), overwrite=True)


def write_item(job: ImageJob, args: argparse.Namespace, stac: StacInput | None, *,
               chosen: KernelChoice | GroupChoices | None = None) -> Path | None:
    """The output's STAC Item, when asked for (or the input is an Item); ``chosen``: the
    kernel(s) ``--kernel estimate`` chose."""
    if stac is None and not args.stac_item:
        return None
    return write_output_item(Path(job.output), provenance=job_provenance(
        job, source=source_name(args), chosen=chosen), source_href=source_name(args),
        source_item=stac.item if stac is not None else None,
        eo_bands=stac.eo_bands if stac is not None else None, inputs=(Path(job.input),))
