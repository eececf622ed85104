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
uploaded as it is.  A rerun rewrites it from the run's images, never appending.  Each Item
names the Collection (``collection`` id ``zssr-run-<run folder name>`` and a
``collection`` link to ``collection.json`` beside it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from io_adapters.vsi import is_vsi
from pipeline.catalog.provenance import job_provenance
from pipeline.catalog.stac import item_path, write_output_item, write_run_collection
from pipeline.catalog.stac_input import item_href, read_item
from pipeline.image.job import ImageJob
from pipeline.image.kernel_estimate import GroupChoices, KernelChoice
from pipeline.runs.tasks import ImageSpec

__all__ = ["COLLECTION_FILE", "collection_id", "write_item", "write_job_item", "write_run_stac",
           "write_collection", "write_items_collection"]

log = logging.getLogger(__name__)

COLLECTION_FILE = "collection.json"


def collection_id(run_name: str) -> str:
    """The id of the Collection of the run folder named ``run_name``."""
    return f"zssr-run-{run_name}"


def write_item(spec: ImageSpec, *, chosen: KernelChoice | GroupChoices | None = None
               ) -> Path | None:
    """The STAC Item of ``spec``'s committed output (None when the run asked for none),
    in the run's Collection (``outputs/collection.json``, beside the Item); ``chosen``:
    the kernel(s) ``--kernel estimate`` chose."""
    if spec.stac_source is None:
        return None
    return write_job_item(spec.job, source=spec.stac_source, chosen=chosen,
                          collection=(collection_id(spec.run_dir.name), COLLECTION_FILE))


def write_job_item(job: ImageJob, *, source: str, collection: tuple[str, str],
                   chosen: KernelChoice | GroupChoices | None = None) -> Path:
    """The Item of ``job``'s committed output: ``derived_from`` ``source`` (the input's
    path or URL), in the Collection ``collection`` = ``(id, href relative to the Item)``."""
    inputs = () if is_vsi(job.input) else (Path(job.input),)
    item = read_item(source) if item_href(source) else None  # a STAC Item input's bands
    return write_output_item(Path(job.output), provenance=job_provenance(
                                 job, source=source, chosen=chosen),
                             source_href=source, inputs=inputs, collection=collection,
                             source_item=item)


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
    return write_items_collection(sorted(items), Path(outputs) / COLLECTION_FILE,
                                  collection_id=collection_id(run_name),
                                  what=f"the zssr run {run_name}")


def write_items_collection(items: Sequence[Path], path: Path, *, collection_id: str,
                           what: str) -> Path | None:
    """``path``, a Collection linking the Item files ``items`` (None: no Item)."""
    if not items:
        return None
    path = write_run_collection(items, path, collection_id=collection_id,
                                description=f"Outputs of {what}: {len(items)} super-resolved "
                                "image(s)")
    log.info("wrote STAC Collection %s (%d items)", path, len(items))
    return path
