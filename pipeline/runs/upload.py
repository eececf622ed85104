"""``zssr run --output-prefix s3://bucket/prefix/``: each output uploaded beside the run.

The run folder (``--out``) stays local and keeps every output; with an output prefix
each finished output file is also uploaded to ``<prefix>/<output name>``
(:func:`io_adapters.objstore.upload_atomic`: one multipart upload, the key appears only
when complete, aborted on any failure), with its STAC Item after it when the run writes
one; the finalize task uploads right after the commit, where the output is.  At the end
of the run the driver uploads the outputs finished by an earlier run whose object is
missing (resume), then ``collection.json`` (its Item links are relative, so they hold
on the prefix too).

The rule for an existing object is the local one: replaced only when zssr wrote it
(``zssr-output`` metadata), and only with ``--overwrite`` or when this run folder owns
the output (it uploaded it before).  A Zarr store is uploaded metadata last
(:func:`io_adapters.objstore.upload_tree`); a DICOM series is refused before any work,
that image failing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from io_adapters.objstore import (
    check_bucket,
    check_remote_output,
    is_remote,
    object_exists,
    upload_atomic,
    upload_tree,
)
from io_adapters.output_safety import check_no_links
from pipeline.catalog.stac import item_path
from pipeline.errors import UsageError
from pipeline.runs.tasks import ImageSpec

__all__ = ["check_prefix", "check_prefix_bucket", "with_upload", "upload_output", "upload_run",
           "upload_with_item", "upload_collection"]

log = logging.getLogger(__name__)


def check_prefix(prefix: str) -> str:
    """``--output-prefix``: an ``s3://bucket/prefix`` URL (the bucket checked later)."""
    if not is_remote(prefix) or not prefix[len("s3://"):].strip("/"):
        raise UsageError(f"--output-prefix {prefix!r}: expected s3://bucket/ or "
                         "s3://bucket/prefix/")
    return prefix.rstrip("/") + "/"


def check_prefix_bucket(prefix: str) -> None:
    """Before any work: the prefix's bucket exists and is reachable (else exit 7)."""
    check_bucket(prefix)


def with_upload(spec: ImageSpec, prefix: str, *, skipped: bool) -> ImageSpec:
    """``spec`` uploading its output under ``prefix``; unless the image is finished
    already, the object is checked first (see the module doc)."""
    url = prefix + Path(spec.job.output).name
    if not skipped:
        check_remote_output(url, overwrite=spec.replace_output)
    return replace(spec, upload_to=url)


def upload_output(spec: ImageSpec) -> None:
    """Upload ``spec``'s committed output, then its STAC Item (if written)."""
    if spec.upload_to is None:
        return
    upload_with_item(Path(spec.job.output), spec.upload_to, item=spec.stac_source is not None)


def upload_with_item(output: Path, url: str, *, item: bool) -> None:
    """Upload the committed ``output`` to ``url`` (checked before), then, with ``item``,
    its STAC Item (if written) to ``url`` + ``.stac-item.json``."""
    if output.suffix.lower() == ".zarr" and output.is_dir():
        upload_tree(output, url)
    else:
        upload_atomic(output, url)
    path = item_path(output)
    if item and os.path.lexists(path):
        check_no_links(path)  # never upload what a planted link points at
        item_url = url + path.name[len(output.name):]
        check_remote_output(item_url, overwrite=True)  # never over an object zssr did not write
        upload_atomic(path, item_url)
    log.info("uploaded %s", url)


def upload_collection(prefix: str, collection: Path) -> None:
    """``collection`` to ``prefix`` + its name (never over an object zssr did not write)."""
    check_remote_output(prefix + collection.name, overwrite=True)
    upload_atomic(collection, prefix + collection.name)


def upload_run(prefix: str, finished: Sequence[tuple[ImageSpec, bool]],
               collection: Path | None) -> None:
    """The end of a run: outputs finished earlier whose object is missing, then the
    Collection (``finished``: ``(spec, skipped)`` pairs)."""
    for spec, earlier in finished:
        if earlier and spec.upload_to is not None and not object_exists(
                spec.upload_to + ("/zarr.json" if spec.upload_to.endswith(".zarr") else "")):
            upload_output(spec)
    if collection is not None:
        upload_collection(prefix, collection)
