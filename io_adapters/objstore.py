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

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from .errors import InputNotFoundError, WriteError
from .vsi import scrub

__all__ = ["is_remote", "parse_s3_url", "check_remote_output", "upload_atomic",
           "staged_output", "abort_pending", "read_text", "list_keys", "object_identity",
           "check_bucket", "object_exists", "PreconditionFailed", "join_url", "put_bytes",
           "get_bytes", "download", "list_under", "delete_objects", "delete_under",
           "delete_object", "new_client", "get_with_age", "upload_tree", "MARKER", "PART_SIZE"]

log = logging.getLogger(__name__)

MARKER = {"zssr-output": "1"}
PART_SIZE = 8 * 1024 * 1024  # S3's minimum is 5 MiB for every part but the last
_FOLDER_SUFFIXES = ("",)  # a DICOM series; a Zarr store is uploaded metadata last


def is_remote(text: str | Path) -> bool:
    """An ``s3://`` URL (the object stores zssr writes to)."""
    return str(text).lower().startswith("s3://")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``; a usage error names the URL otherwise."""
    rest = url[len("s3://"):] if is_remote(url) else ""
    bucket, _, key = rest.partition("/")
    if not bucket or not key or key.endswith("/"):
        raise WriteError(f"{url}: expected s3://bucket/key naming one object")
    return bucket, key


def _client() -> Any:
    return boto3.client("s3", config=Config(retries={"max_attempts": 3, "mode": "standard"},
                                            connect_timeout=10, read_timeout=60))


def _error(url: str, exc: BaseException, doing: str) -> WriteError:
    """Our one line for a boto error while ``doing``."""
    if isinstance(exc, EndpointConnectionError):
        return WriteError(f"{url}: the endpoint cannot be reached while {doing}")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchBucket",) or (doing == "checking the bucket" and status == 404):
            return WriteError(f"{url}: the bucket does not exist")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                    "ExpiredToken", "Forbidden") or status == 403:
            return WriteError(f"{url}: access denied while {doing} (check the credentials "
                              "and the bucket's permissions)")
        return WriteError(f"{url}: {doing} failed: {scrub(code or str(status))}")
    text = scrub(" ".join(str(exc).split()))[:200]
    return WriteError(f"{url}: {doing} failed: {type(exc).__name__}: {text}")


def check_bucket(url: str, *, client: Any = None) -> None:
    """The bucket of ``url`` (an object or a prefix) exists and is reachable (exit 7)."""
    bucket = url[len("s3://"):].partition("/")[0] if is_remote(url) else ""
    if not bucket:
        raise WriteError(f"{url}: expected s3://bucket/...")
    try:
        (client or _client()).head_bucket(Bucket=bucket)
    except (ClientError, BotoCoreError) as exc:
        raise _error(url, exc, "checking the bucket") from None


def object_exists(url: str) -> bool:
    """Whether the object ``url`` exists (errors other than a 404: exit 7)."""
    bucket, key = parse_s3_url(url)
    try:
        _client().head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            return False
        raise _error(url, exc, "checking the object") from None
    except BotoCoreError as exc:
        raise _error(url, exc, "checking the object") from None
    return True


def check_remote_output(url: str, *, overwrite: bool, client: Any = None) -> None:
    """Before any work: the bucket is there and reachable; an existing object needs
    ``overwrite`` and must be one zssr wrote; a DICOM series (a folder) is refused."""
    bucket, key = parse_s3_url(url)
    if Path(key).suffix.lower() in _FOLDER_SUFFIXES:
        raise WriteError(f"{url}: a DICOM series output cannot go to object storage yet; "
                         "write a .dcm (one enhanced file), .tif, .png or .zarr, or a local "
                         "folder")
    client = client or _client()
    check_bucket(url, client=client)
    if Path(key).suffix.lower() == ".zarr":
        _check_remote_store(url, overwrite=overwrite, client=client)
        return
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            return
        raise _error(url, exc, "checking the object") from None
    except BotoCoreError as exc:
        raise _error(url, exc, "checking the object") from None
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
    client = client or _client()
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
        body = _client().get_object(Bucket=bucket, Key=key)["Body"]
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
    client = _client()
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
    client = _client()
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
    client = client or _client()
    media = mimetypes.guess_type(key)[0] or "application/octet-stream"
    try:
        abort_pending(client, bucket, key)
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=MARKER,
                                                   ContentType=media)["UploadId"]
    except (ClientError, BotoCoreError) as exc:
        raise _error(url, exc, "starting the upload") from None
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
            raise _error(url, exc, "uploading") from None
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


# ----------------------------------------------------------------------------- a run folder
# The small-object primitives a run folder on object storage is made of (pipeline.runs.
# remote): whole objects put and got, prefixes listed and deleted, and the conditional
# writes its lease relies on.  Errors are one-line WriteErrors naming the URL (exit 7).


class PreconditionFailed(WriteError):
    """A conditional write lost: the object exists (``if_none_match``) or changed
    (``if_match``)."""


def _status(exc: ClientError) -> int | None:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def join_url(base: str, *parts: str) -> str:
    """``s3://b/p`` + ``a/b`` -> ``s3://b/p/a/b``."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts if p)])


def put_bytes(url: str, data: bytes, *, if_none_match: bool = False,
              if_match: str | None = None, client: Any = None) -> str:
    """Put ``data`` at ``url`` (one PUT: the object appears whole or not at all); returns
    the new ETag.  ``if_none_match``: only if no object is there; ``if_match``: only if the
    object still has that ETag (else :class:`PreconditionFailed`)."""
    bucket, key = parse_s3_url(url)
    options: dict[str, Any] = {"Metadata": MARKER}
    if if_none_match:
        options["IfNoneMatch"] = "*"
    if if_match is not None:
        options["IfMatch"] = if_match
    try:
        return (client or _client()).put_object(Bucket=bucket, Key=key, Body=data,
                                                **options)["ETag"]
    except ClientError as exc:
        if _status(exc) in (412, 409):  # 409: a concurrent conditional write won
            raise PreconditionFailed(f"{url}: changed by another writer") from None
        raise _error(url, exc, "writing") from None
    except BotoCoreError as exc:
        raise _error(url, exc, "writing") from None


def new_client() -> Any:
    """A boto3 S3 client (endpoint, credentials and retries as every call here)."""
    return _client()


def get_with_age(url: str, *, client: Any = None) -> tuple[bytes, str, float] | None:
    """``(content, ETag, age)`` of the object ``url``, its age in the server's seconds
    (``Date`` of the answer minus ``Last-Modified``: no two clocks compared; 0 when the
    server sends no date); None when there is none."""
    from email.utils import parsedate_to_datetime

    bucket, key = parse_s3_url(url)
    try:
        got = (client or _client()).get_object(Bucket=bucket, Key=key)
        body = got["Body"].read()
    except ClientError as exc:
        if _status(exc) == 404:
            return None
        raise _error(url, exc, "reading") from None
    except BotoCoreError as exc:
        raise _error(url, exc, "reading") from None
    date = got.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        age = (parsedate_to_datetime(date) - got["LastModified"]).total_seconds()
    except (TypeError, ValueError, KeyError):
        age = 0.0
    return body, got["ETag"], age


def get_bytes(url: str, *, client: Any = None) -> tuple[bytes, str] | None:
    """``(content, ETag)`` of the object ``url``; None when there is none."""
    bucket, key = parse_s3_url(url)
    try:
        got = (client or _client()).get_object(Bucket=bucket, Key=key)
        return got["Body"].read(), got["ETag"]
    except ClientError as exc:
        if _status(exc) == 404:
            return None
        raise _error(url, exc, "reading") from None
    except BotoCoreError as exc:
        raise _error(url, exc, "reading") from None


def download(url: str, local: Path, *, client: Any = None) -> bool:
    """Copy the object ``url`` to the new file ``local`` (streamed); False when there is
    no such object."""
    bucket, key = parse_s3_url(url)
    try:
        body = (client or _client()).get_object(Bucket=bucket, Key=key)["Body"]
        with open(local, "xb") as fh:
            shutil.copyfileobj(body, fh, 1 << 20)
    except ClientError as exc:
        if _status(exc) == 404:
            return False
        raise _error(url, exc, "reading") from None
    except BotoCoreError as exc:
        raise _error(url, exc, "reading") from None
    return True


def list_under(url: str, *, client: Any = None) -> list[str]:
    """The keys under the prefix ``url`` (a folder: ``url`` + ``/``), relative to it,
    sorted."""
    base = url.rstrip("/") + "/"
    bucket, _, prefix = base[len("s3://"):].partition("/")
    try:
        pages = (client or _client()).get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"][len(prefix):] for page in pages for o in page.get("Contents", []))
    except ClientError as exc:
        raise _error(url, exc, "listing") from None
    except BotoCoreError as exc:
        raise _error(url, exc, "listing") from None


def delete_objects(url: str, names: list[str], *, client: Any = None) -> None:
    """Delete ``url``/``name`` for each of ``names`` (1 000 per request)."""
    if not names:
        return
    base = url.rstrip("/") + "/"
    bucket, _, prefix = base[len("s3://"):].partition("/")
    client = client or _client()
    try:
        for i in range(0, len(names), 1000):
            client.delete_objects(Bucket=bucket, Delete={
                "Objects": [{"Key": prefix + n} for n in names[i:i + 1000]], "Quiet": True})
    except ClientError as exc:
        raise _error(url, exc, "deleting") from None
    except BotoCoreError as exc:
        raise _error(url, exc, "deleting") from None


def delete_under(url: str, *, client: Any = None) -> int:
    """Delete every object under the prefix ``url``; returns how many."""
    client = client or _client()
    names = list_under(url, client=client)
    delete_objects(url, names, client=client)
    return len(names)


def delete_object(url: str, *, if_match: str | None = None, client: Any = None) -> None:
    """Delete the object ``url`` (``if_match``: only while it has that ETag)."""
    bucket, key = parse_s3_url(url)
    try:
        (client or _client()).delete_object(Bucket=bucket, Key=key,
                                            **({} if if_match is None else {"IfMatch": if_match}))
    except ClientError as exc:
        if _status(exc) in (412, 409):
            raise PreconditionFailed(f"{url}: changed by another writer") from None
        if _status(exc) != 404:
            raise _error(url, exc, "deleting") from None
    except BotoCoreError as exc:
        raise _error(url, exc, "deleting") from None
