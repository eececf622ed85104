"""S3 objects, one request at a time: the client, URLs, one-line errors, and the small-object
primitives a run folder on object storage is made of (:mod:`pipeline.runs.remote`).

The client is boto3's: endpoint from ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``),
credentials from the usual environment variables, profiles and instance roles, a few
retries and short timeouts.  Whole objects are put (``If-None-Match``/``If-Match``:
the conditional writes the run folder's lease relies on; a lost condition is
:class:`PreconditionFailed`) and got (with the server's age of the object,
:func:`get_with_age`), prefixes listed and deleted.  Errors are :class:`WriteError`s of
one line naming the URL and the class of failure (exit 7), never a credential.
Uploads of whole outputs, their checks and input identities are :mod:`io_adapters.objstore`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from .errors import WriteError
from .vsi import scrub

__all__ = ["MARKER", "is_remote", "parse_s3_url", "new_client", "s3_error", "check_bucket",
           "object_exists", "PreconditionFailed", "join_url", "put_bytes", "get_with_age",
           "get_bytes", "download", "list_under", "delete_objects", "delete_under",
           "delete_object"]

log = logging.getLogger(__name__)

MARKER = {"zssr-output": "1"}


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


def new_client() -> Any:
    """A boto3 S3 client (endpoint, credentials and retries as every call here)."""
    return boto3.client("s3", config=Config(retries={"max_attempts": 3, "mode": "standard"},
                                            connect_timeout=10, read_timeout=60))


def s3_error(url: str, exc: BaseException, doing: str) -> WriteError:
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
        (client or new_client()).head_bucket(Bucket=bucket)
    except (ClientError, BotoCoreError) as exc:
        raise s3_error(url, exc, "checking the bucket") from None


def object_exists(url: str) -> bool:
    """Whether the object ``url`` exists (errors other than a 404: exit 7)."""
    bucket, key = parse_s3_url(url)
    try:
        new_client().head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            return False
        raise s3_error(url, exc, "checking the object") from None
    except BotoCoreError as exc:
        raise s3_error(url, exc, "checking the object") from None
    return True


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
        return (client or new_client()).put_object(Bucket=bucket, Key=key, Body=data,
                                                **options)["ETag"]
    except ClientError as exc:
        if _status(exc) in (412, 409):  # 409: a concurrent conditional write won
            raise PreconditionFailed(f"{url}: changed by another writer") from None
        raise s3_error(url, exc, "writing") from None
    except BotoCoreError as exc:
        raise s3_error(url, exc, "writing") from None



def get_with_age(url: str, *, client: Any = None) -> tuple[bytes, str, float] | None:
    """``(content, ETag, age)`` of the object ``url``, its age in the server's seconds
    (``Date`` of the answer minus ``Last-Modified``: no two clocks compared; 0 when the
    server sends no date); None when there is none."""
    from email.utils import parsedate_to_datetime

    bucket, key = parse_s3_url(url)
    try:
        got = (client or new_client()).get_object(Bucket=bucket, Key=key)
        body = got["Body"].read()
    except ClientError as exc:
        if _status(exc) == 404:
            return None
        raise s3_error(url, exc, "reading") from None
    except BotoCoreError as exc:
        raise s3_error(url, exc, "reading") from None
    date = got.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        age = (parsedate_to_datetime(date) - got["LastModified"]).total_seconds()
    except (TypeError, ValueError, KeyError):
        age = 0.0
    return body, got["ETag"], age


def get_bytes(url: str, *, client: Any = None) -> tuple[bytes, str] | None:
    """``(content, ETag)`` of the object ``url``; None when there is none."""
    got = get_with_age(url, client=client)
    return None if got is None else (got[0], got[1])


def download(url: str, local: Path, *, client: Any = None) -> bool:
    """Copy the object ``url`` to the new file ``local`` (streamed); False when there is
    no such object."""
    bucket, key = parse_s3_url(url)
    try:
        body = (client or new_client()).get_object(Bucket=bucket, Key=key)["Body"]
        with open(local, "xb") as fh:
            shutil.copyfileobj(body, fh, 1 << 20)
    except ClientError as exc:
        if _status(exc) == 404:
            return False
        raise s3_error(url, exc, "reading") from None
    except BotoCoreError as exc:
        raise s3_error(url, exc, "reading") from None
    return True


def list_under(url: str, *, client: Any = None) -> list[str]:
    """The keys under the prefix ``url`` (a folder: ``url`` + ``/``), relative to it,
    sorted."""
    base = url.rstrip("/") + "/"
    bucket, _, prefix = base[len("s3://"):].partition("/")
    try:
        pages = (client or new_client()).get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"][len(prefix):] for page in pages for o in page.get("Contents", []))
    except ClientError as exc:
        raise s3_error(url, exc, "listing") from None
    except BotoCoreError as exc:
        raise s3_error(url, exc, "listing") from None


def delete_objects(url: str, names: list[str], *, client: Any = None) -> None:
    """Delete ``url``/``name`` for each of ``names`` (1 000 per request)."""
    if not names:
        return
    base = url.rstrip("/") + "/"
    bucket, _, prefix = base[len("s3://"):].partition("/")
    client = client or new_client()
    try:
        for i in range(0, len(names), 1000):
            client.delete_objects(Bucket=bucket, Delete={
                "Objects": [{"Key": prefix + n} for n in names[i:i + 1000]], "Quiet": True})
    except ClientError as exc:
        raise s3_error(url, exc, "deleting") from None
    except BotoCoreError as exc:
        raise s3_error(url, exc, "deleting") from None


def delete_under(url: str, *, client: Any = None) -> int:
    """Delete every object under the prefix ``url``; returns how many."""
    client = client or new_client()
    names = list_under(url, client=client)
    delete_objects(url, names, client=client)
    return len(names)


def delete_object(url: str, *, if_match: str | None = None, client: Any = None) -> None:
    """Delete the object ``url`` (``if_match``: only while it has that ETag)."""
    bucket, key = parse_s3_url(url)
    try:
        (client or new_client()).delete_object(Bucket=bucket, Key=key,
                                            **({} if if_match is None else {"IfMatch": if_match}))
    except ClientError as exc:
        if _status(exc) in (412, 409):
            raise PreconditionFailed(f"{url}: changed by another writer") from None
        if _status(exc) != 404:
            raise s3_error(url, exc, "deleting") from None
    except BotoCoreError as exc:
        raise s3_error(url, exc, "deleting") from None
