"""``zssr batch`` on object storage: URL inputs, ``stac_items`` and ``output_prefix``.

A job's inputs may be URLs (``s3://bucket/prefix/``, ``s3://bucket/a/*.tif``, single
``s3://``/``gs://``/``az://``/``https://`` objects), expanded as ``zssr run`` expands them
(:mod:`pipeline.runs.remote_inputs`); an object's content is identified by its size and
ETag (:func:`object_content`), so a replaced object is processed again and a rerun
over unchanged objects skips them without downloading anything.

The batch's run writes into its hidden run folder under the run's names, and the batch
then moves each output to its name from the job's template; so the Item and the upload
of an output are made here, after that move, by the functions ``zssr run`` uses
(:func:`pipeline.runs.stac_run.write_job_item`,
:func:`pipeline.runs.upload.upload_with_item` and ``upload_collection``):

- ``stac_items: true``: ``<output>.stac-item.json`` beside each output (``derived_from``
  the input's path or URL) and ``collection.json`` in the output folder, linking the
  Item of every output the state file records (each Item names it: ``collection`` id
  ``zssr-batch-<output folder name>`` and a relative ``collection`` link);
- ``output_prefix: s3://bucket/prefix/``: each output uploaded to the prefix plus its
  path inside the output folder, its Item beside it, then ``collection.json``.  The
  bucket is checked before any work (a missing one: exit 7); an existing object is
  replaced only when this batch wrote that output before (else that input fails).

The output folder, its state file, lock and run folder stay local.  A later run puts
back what is missing (an Item not written, an object not uploaded: a failed upload
leaves the input done locally) and rewrites the Collection only when something changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from io_adapters.objstore import check_remote_output, object_exists
from io_adapters.output_safety import check_output
from io_adapters.vsi import display_url, gdal_path, is_vsi
from pipeline.catalog.stac import item_path
from pipeline.runs.identity import input_identity
from pipeline.runs.inputs import InputItem
from pipeline.runs.settings import RunSettings
from pipeline.runs.stac_run import COLLECTION_FILE, write_items_collection, write_job_item
from pipeline.runs.upload import check_prefix_bucket, upload_collection, upload_with_item

from .jobspec import JobSpec

__all__ = ["object_content", "input_names", "remote_url", "check_bucket_first",
           "check_object", "finish_output", "finish_batch", "collection_id"]


def object_content(path: Path) -> str:
    """The content id of a URL input: its size and ETag (``s3://``), else its URL."""
    text = json.dumps(input_identity(path), sort_keys=True)
    return "object:" + hashlib.sha256(text.encode()).hexdigest()


def input_names(item: InputItem) -> tuple[str, str]:
    """``(name, parent)`` of an input for the name template (an object's from its key)."""
    if is_vsi(item.path):
        key = PurePosixPath(urlsplit(item.location).path)
        return key.name, key.parent.name
    return item.path.name, item.path.parent.name


def collection_id(spec: JobSpec) -> str:
    return f"zssr-batch-{spec.output.name}"


def remote_url(spec: JobSpec, out: Path) -> str:
    """Where ``out`` is uploaded: the prefix plus its path inside the output folder."""
    return str(spec.output_prefix) + out.relative_to(spec.output).as_posix()


def check_bucket_first(spec: JobSpec) -> None:
    """Before any work: the prefix's bucket exists and is reachable, and
    ``collection.json`` obeys the output rule (no link there; else exit 7)."""
    if spec.output_prefix:
        check_prefix_bucket(spec.output_prefix)
    if spec.stac_items:
        check_output(spec.output / COLLECTION_FILE, root=spec.output, overwrite=True)


def check_object(spec: JobSpec, out: Path, *, ours: bool) -> None:
    """Before an input is processed: its object may be written (``ours``: this batch
    wrote that output before, so an object zssr wrote there may be replaced), and its
    Item's name obeys the output rule (no link there)."""
    if spec.stac_items:
        check_output(item_path(out), root=spec.output, overwrite=True)
    if spec.output_prefix:
        check_remote_output(remote_url(spec, out), overwrite=ours)


def finish_output(spec: JobSpec, settings: RunSettings, location: str, out: Path) -> None:
    """A placed output: its Item, then its upload (with the Item)."""
    if spec.stac_items:
        _write_item(spec, settings, location, out)
    if spec.output_prefix:
        upload_with_item(out, remote_url(spec, out), item=spec.stac_items)


def _write_item(spec: JobSpec, settings: RunSettings, location: str, out: Path) -> None:
    job = replace(settings.image_job(Path(gdal_path(location))), output=out)
    href = os.path.relpath(spec.output / COLLECTION_FILE, out.parent)
    write_job_item(job, source=display_url(location),
                   collection=(collection_id(spec), href))


def _own_file(path: Path) -> bool:
    """A file at ``path`` that is no link (a planted link is refused when written, never
    read as an Item nor uploaded)."""
    return path.is_file() and not path.is_symlink()


def finish_batch(spec: JobSpec, settings: RunSettings, done: Iterable[tuple[str, Path]], *,
                 changed: bool) -> list[dict[str, Any]]:
    """The end of a batch over ``done`` (every ``(input, output)`` the state file
    records): missing Items and objects put back, the Collection rewritten (and
    uploaded) when something changed or it is missing.  Returns the failed inputs."""
    failed: list[dict[str, Any]] = []
    done = [(loc, out) for loc, out in done if out.exists()]
    for loc, out in done:
        try:
            if spec.stac_items and not _own_file(item_path(out)):
                _write_item(spec, settings, loc, out)
                changed = True
            if spec.output_prefix and not object_exists(remote_url(spec, out)):
                upload_with_item(out, remote_url(spec, out), item=spec.stac_items)
                changed = True
        except Exception as exc:  # noqa: BLE001 - one output fails alone
            failed.append({"input": loc, "error_class": type(exc).__name__, "error": str(exc)})
    if not spec.stac_items:
        return failed
    collection = spec.output / COLLECTION_FILE
    if changed or not _own_file(collection):
        items = sorted(p for p in (item_path(out) for _, out in done) if _own_file(p))
        if write_items_collection(items, collection, collection_id=collection_id(spec),
                                  what=f"the zssr batch {spec.output}") is None:
            return failed
        changed = True
    if spec.output_prefix and (changed or not object_exists(spec.output_prefix
                                                             + COLLECTION_FILE)):
        upload_collection(spec.output_prefix, collection)
    return failed
