"""STAC for ``zssr run --stac-item``: an Item beside each output, a Collection for the run.

Each finalized output gets ``<output name>.stac-item.json`` beside it in ``outputs/``
(:func:`pipeline.catalog.stac.write_output_item`: written atomically, ``derived_from``
the input file or URL, projection/raster/eo/processing extensions), written by the
finalize task right after the output's commit, where the output is.  An image finished
by an earlier run (skipped on resume) gets its Item from the driver when it has none
(the earlier run was not asked for one).

At the end of the run the driver writes ``outputs/collection.json``
(:func:`pipeline.catalog.stac.write_run_collection`): one Collection linking the Item of
every output of this run's inputs that has one, each once, by a path relative to the
Collection, so ``outputs/`` is a self-contained static catalogue that can be copied or
uploaded as it is.  A rerun rewrites it from the run's images, never appending.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from io_adapters.vsi import is_vsi
from pipeline.catalog.provenance import job_provenance
from pipeline.catalog.stac import item_path, write_output_item, write_run_collection
from pipeline.runs.tasks import ImageSpec

__all__ = ["COLLECTION_FILE", "write_item", "write_run_stac", "write_collection"]

log = logging.getLogger(__name__)

COLLECTION_FILE = "collection.json"


def write_item(spec: ImageSpec) -> Path | None:
    """The STAC Item of ``spec``'s committed output (None when the run asked for none)."""
    if spec.stac_source is None:
        return None
    inputs = () if is_vsi(spec.job.input) else (Path(spec.job.input),)
    return write_output_item(Path(spec.job.output), provenance=job_provenance(
        spec.job, source=spec.stac_source), source_href=spec.stac_source, inputs=inputs)


def write_run_stac(outputs: Path, finished: Sequence[tuple[ImageSpec, bool]], *,
                   run_name: str) -> Path | None:
    """The end of a run: an Item for each output finished by an earlier run (``True`` in
    ``finished``) that has none, then the Collection of every finished output."""
    for spec, earlier in finished:
        if earlier and spec.stac_source is not None and not item_path(
                Path(spec.job.output)).exists():
            write_item(spec)
    return write_collection(outputs, [spec for spec, _ in finished], run_name=run_name)


def write_collection(outputs: Path, specs: Iterable[ImageSpec], *,
                     run_name: str) -> Path | None:
    """``outputs/collection.json`` linking the Items of ``specs``' outputs (None: no Item)."""
    items: dict[Path, Any] = {}
    for spec in specs:
        path = item_path(Path(spec.job.output))
        if spec.stac_source is not None and path.is_file():
            items.setdefault(path, spec)
    if not items:
        return None
    path = write_run_collection(sorted(items), Path(outputs) / COLLECTION_FILE,
                                collection_id=f"zssr-run-{run_name}",
                                description=f"Outputs of the zssr run {run_name}: "
                                f"{len(items)} super-resolved image(s)")
    log.info("wrote STAC Collection %s (%d items)", path, len(items))
    return path
