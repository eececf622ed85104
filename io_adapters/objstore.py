"""Outputs on S3-compatible object storage: built locally, uploaded so the key appears
only when complete.

``with staged_output("s3://bucket/out.tif", overwrite=False) as local: ...`` checks
the target before any work (:func:`check_remote_output`: the bucket exists and is
reachable, an existing object is replaced only with ``overwrite`` and only when zssr
wrote it), yields a path in a private temporary folder for the writer, and on success
uploads the file with a multipart upload (:func:`upload_atomic`), then its sidecars
written beside it (``<name>.stac-item.json``).  S3 makes an object
visible only at ``CompleteMultipartUpload``, so a failed or interrupted upload leaves no
object; every failure path (an error, a 5xx that outlives the retries, Ctrl-C, SIGTERM
raised as an exception) aborts the upload, so no pending multipart upload stays either.
A SIGKILL cannot abort anything: the next upload to the same key aborts the pending
uploads of that key before it starts.  The temporary folder is always removed.

Objects zssr wrote carry the user metadata ``zssr-output: 1``; ``--overwrite`` replaces
only those.  A Zarr store built locally is uploaded by :func:`upload_tree`: chunks first,
its ``zarr.json`` documents last (the root's the very last), so it opens only whole; one
zssr wrote has the ``zssr`` group attribute.  A DICOM series (a folder) is refused.

For ``zssr run``'s inputs on S3, :func:`list_keys` lists a prefix (the objects a prefix or
a pattern stands for) and :func:`object_identity` gives an object's size and ETag (what
tells a resumed run that the object is the same); their errors are input errors (exit 3).

The client is boto3's: endpoint from ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``),
credentials from the usual environment variables, profiles and instance roles.  Error
messages are our own one line, naming the URL and the class of failure (exit 7), never
a credential.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from .errors import InputNotFoundError, WriteError
from .s3_objects import (
    MARKER,
    check_bucket,
    delete_object,
    delete_under,
    get_bytes,
    is_remote,
    join_url,
    new_client,
    object_exists,
    parse_s3_url,
    put_bytes,
    s3_error,
)

__all__ = ["is_remote", "parse_s3_url", "check_remote_output", "upload_atomic",
           "staged_output", "abort_pending", "read_text", "list_keys", "object_identity",
           "check_bucket", "object_exists", "upload_tree", "MARKER", "PART_SIZE"]

log = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024  # S3's minimum is 5 MiB for every part but the last
_FOLDER_SUFFIXES = ("",)  # a DICOM series; a Zarr store is uploaded metadata last


def check_remote_output(url: str, *, overwrite: bool, client: Any = None) -> None:
    """Before any work: the bucket is there and reachable; an existing object needs
    ``overwrite`` and must be one zssr wrote; a DICOM series (a folder) is refused."""
    bucket, key = parse_s3_url(url)
    if Path(key).suffix.lower() in _FOLDER_SUFFIXES:
        raise WriteError(f"{url}: a DICOM series output cannot go to object storage yet; "
                         "write a .dcm (one enhanced file), .tif, .png or .zarr, or a local "
                         "folder")
    client = client or new_client()
    check_bucket(url, client=client)
    if Path(key).suffix.lower() == ".zarr":
        _check_remote_store(url, overwrite=overwrite, client=client)
        return
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            return
        raise s3_error(url, exc, "checking the object") from None
    except BotoCoreError as exc:
        raise s3_error(url, exc, "checking the object") from None
    if not overwrite:
        raise WriteError(f"{url}: output exists; pass --overwrite to replace it")
    if head.get("Metadata", {}).get("zssr-output") != "1":
        raise WriteError(f"{url}: an object zssr did not write; refusing to replace it "
                         "whatever --overwrite says")


def _check_remote_store(url: str, *, overwrite: bool, client: Any) -> None:
    """:func:`check_remote_output` for a Zarr store: it exists when its root ``zarr.json``
    does; zssr's has the ``zssr`` group attribute."""
    got = get_bytes(join_url(url, "zarr.json"), client=client)
    if got is None:
        return
    if not overwrite:
        raise WriteError(f"{url}: output exists; pass --overwrite to replace it")
    try:
        ours = "zssr" in json.loads(got[0]).get("attributes", {})
    except (ValueError, AttributeError):
        ours = False
    if not ours:
        raise WriteError(f"{url}: a Zarr store zssr did not write; refusing to replace it "
                         "whatever --overwrite says")


def upload_tree(local: Path, url: str, *, client: Any = None) -> None:
    """Upload the Zarr store folder ``local`` under the prefix ``url``: whatever was there
    goes first (its root ``zarr.json`` before anything), then the chunks, then the
    metadata, the deepest first and the root's last, so the store appears only whole; on
    any failure what was uploaded is deleted."""
    client = client or new_client()
    files = sorted((p for p in Path(local).rglob("*") if p.is_file()),
                   key=lambda p: (p.name == "zarr.json", -len(p.parts), str(p)))
    delete_object(join_url(url, "zarr.json"), client=client)
    delete_under(url, client=client)
    try:
        for p in files:
            with open(p, "rb") as fh:
                put_bytes(join_url(url, p.relative_to(local).as_posix()), fh.read(),
                          client=client)
    except BaseException:
        try:
            delete_object(join_url(url, "zarr.json"), client=client)
            delete_under(url, client=client)
        except WriteError as exc:
            log.warning("%s: could not remove a partly uploaded store (%s)", url, exc)
        raise


def _input_error(url: str, exc: BaseException, client: Any = None,
                 bucket: str | None = None) -> InputNotFoundError:
    """Our one line for a boto error while reading ``url`` (exit 3).  A HEAD answers a
    bare 404 for a missing bucket as for a missing key: with ``client`` and ``bucket`` the
    bucket is asked which it is."""
    response = getattr(exc, "response", {})
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if status == 404 and code in ("404", "NotFound") and client is not None:
        try:
            client.head_bucket(Bucket=bucket)
            code = "NoSuchKey"
        except (ClientError, BotoCoreError):
            code = "NoSuchBucket"
    what = {"NoSuchKey": "no such object", "NoSuchBucket": "the bucket does not exist",
            "AccessDenied": "access denied", "403": "access denied"}.get(code)
    if isinstance(exc, EndpointConnectionError):
        what = "the endpoint cannot be reached"
    return InputNotFoundError(f"{url}: {what or 'cannot be read'}")


def read_text(url: str, *, limit: int = 16 * 1024 * 1024) -> str:
    """The text of a small object (a STAC Item); one-line input errors (exit 3)."""
    bucket, key = parse_s3_url(url)
    try:
        body = new_client().get_object(Bucket=bucket, Key=key)["Body"]
        data = body.read(limit + 1)
    except (ClientError, BotoCoreError) as exc:
        raise _input_error(url, exc) from None
    if len(data) > limit:
        raise InputNotFoundError(f"{url}: larger than {limit} bytes; not a STAC Item")
    return data.decode("utf-8", errors="replace")


def list_keys(url: str, bucket: str, prefix: str, *, direct: bool = False) -> list[str]:
    """The keys of ``bucket`` that start with ``prefix`` (``direct``: only those with no
    ``/`` after it, as a folder lists its files), sorted; one-line input errors naming
    ``url`` (exit 3)."""
    client = new_client()
    options = {"Bucket": bucket, "Prefix": prefix, **({"Delimiter": "/"} if direct else {})}
    try:
        pages = client.get_paginator("list_objects_v2").paginate(**options)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))
    except (ClientError, BotoCoreError) as exc:
        raise _input_error(url, exc) from None


def object_identity(url: str) -> dict[str, Any]:
    """What identifies an object's content for a run's resume: its size and ETag (a new
    upload of the key gets a new ETag); one-line input errors (exit 3).

    A prefix (a Zarr store, a DICOM series: no object of that key, objects under it) is
    identified by its objects: their total size, and as ETag the SHA-256 of their keys
    and ETags."""
    bucket, key = parse_s3_url(url.rstrip("/"))
    client = new_client()
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
            raise _input_error(url, exc, client, bucket) from None
        prefix = _prefix_identity(client, url, bucket, key + "/")
        if prefix is None:
            raise _input_error(url, exc, client, bucket) from None
        return prefix
    except BotoCoreError as exc:
        raise _input_error(url, exc, client, bucket) from None
    return {"url": url, "size": head.get("ContentLength"), "etag": head.get("ETag")}


def _prefix_identity(client: Any, url: str, bucket: str, prefix: str) -> dict[str, Any] | None:
    """The identity of the objects under ``prefix`` (None when there are none)."""
    digest, size, n = hashlib.sha256(), 0, 0
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                     Prefix=prefix):
            for obj in page.get("Contents", []):
                digest.update(f"{obj['Key']}\0{obj.get('ETag')}\0".encode())
                size, n = size + int(obj.get("Size") or 0), n + 1
    except (ClientError, BotoCoreError) as exc:
        raise _input_error(url, exc, client, bucket) from None
    if not n:
        return None
    return {"url": url, "size": size, "etag": f"prefix:{n}:{digest.hexdigest()}"}


def abort_pending(client: Any, bucket: str, key: str) -> int:
    """Abort the pending multipart uploads of exactly ``key`` (what a killed upload left);
    returns how many."""
    n = 0
    pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket,
                                                                    Prefix=key)
    for page in pages:
        for upload in page.get("Uploads", []):
            if upload["Key"] == key:
                client.abort_multipart_upload(Bucket=bucket, Key=key,
                                              UploadId=upload["UploadId"])
                n += 1
    if n:
        log.info("s3://%s/%s: aborted %d pending upload(s) left by an earlier run",
                 bucket, key, n)
    return n


def upload_atomic(local: Path, url: str, *, part_size: int = PART_SIZE,
                  client: Any = None) -> None:
    """Upload ``local`` to ``url`` as one multipart upload (see the module docstring)."""
    bucket, key = parse_s3_url(url)
    client = client or new_client()
    media = mimetypes.guess_type(key)[0] or "application/octet-stream"
    try:
        abort_pending(client, bucket, key)
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=MARKER,
                                                   ContentType=media)["UploadId"]
    except (ClientError, BotoCoreError) as exc:
        raise s3_error(url, exc, "starting the upload") from None
    try:
        parts = []
        with open(local, "rb") as fh:
            number = 1
            while True:
                chunk = fh.read(part_size)
                if not chunk and parts:
                    break
                etag = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id,
                                          PartNumber=number, Body=chunk)["ETag"]
                parts.append({"ETag": etag, "PartNumber": number})
                number += 1
                if len(chunk) < part_size:
                    break
        client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                         MultipartUpload={"Parts": parts})
    except BaseException as exc:  # an error, Ctrl-C or SIGTERM: no object, no pending upload
        _abort(client, bucket, key, upload_id)
        if isinstance(exc, ClientError | BotoCoreError):
            raise s3_error(url, exc, "uploading") from None
        raise
    log.debug("uploaded %s", url)


def _abort(client: Any, bucket: str, key: str, upload_id: str) -> None:
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except (ClientError, BotoCoreError) as exc:  # the next upload of this key retries it
        log.warning("s3://%s/%s: could not abort the failed upload (%s); the next upload "
                    "of this key aborts it", bucket, key, type(exc).__name__)


@contextmanager
def staged_output(url: str, *, overwrite: bool) -> Iterator[Path]:
    """A local path to write ``url``'s object to; uploaded on success (see the module)."""
    check_remote_output(url, overwrite=overwrite)
    _, key = parse_s3_url(url)
    folder = Path(tempfile.mkdtemp(prefix=".zssr-upload-"))
    try:
        local = folder / os.path.basename(key)
        yield local
        if local.suffix.lower() == ".zarr" and local.is_dir():
            upload_tree(local, url)
            return
        if not local.is_file():
            raise WriteError(f"{url}: nothing was written to upload")
        upload_atomic(local, url)
        for side in sorted(folder.iterdir()):  # <name>.stac-item.json and the like
            if side.name.startswith(local.name + ".") and side.is_file():
                upload_atomic(side, url + side.name[len(local.name):])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
