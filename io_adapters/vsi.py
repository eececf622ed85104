"""Rasters by URL through GDAL's virtual file systems, and their errors.

``gdal_path("s3://bucket/key.tif")`` is ``/vsis3/bucket/key.tif`` (``gs://`` ->
``/vsigs/``, ``az://`` -> ``/vsiaz/``, ``http(s)://`` -> ``/vsicurl?url=…`` with the URL
percent-encoded, a form that survives :class:`pathlib.Path`, which folds the ``//`` of a
plain ``/vsicurl/https://…``); ``/vsi…`` names pass unchanged.  GDAL reads such a path
by HTTP range requests: a windowed read of a COG fetches its header and the blocks the
window covers, not the object.

Credentials come from GDAL's usual sources (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
/``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and ``~/.aws``; ``GOOGLE_APPLICATION_CREDENTIALS``;
``AZURE_STORAGE_*``); a loopback or private endpoint is ``AWS_S3_ENDPOINT`` with
``AWS_HTTPS=NO`` and ``AWS_VIRTUAL_HOSTING=FALSE``.  They are never part of a message:
:func:`remote_error` writes its own one-line text (the URL and the class of failure) and
:func:`scrub` removes the values of the credential variables from any text.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, unquote

from .errors import CorruptFileError, InputNotFoundError, IOAdapterError

__all__ = ["gdal_path", "is_vsi", "display_url", "remote_error", "scrub", "CREDENTIAL_VARS",
           "gdal_messages", "CredentialFilter"]

_PREFIX = {"s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/"}
CREDENTIAL_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID",
                   "GS_SECRET_ACCESS_KEY", "GS_ACCESS_KEY_ID", "AZURE_STORAGE_ACCESS_KEY",
                   "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING")


def gdal_path(href: str | Path) -> str:
    """The name GDAL opens for ``href`` (see the module docstring)."""
    text = str(href)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    scheme = scheme.lower()
    if scheme in _PREFIX:
        return _PREFIX[scheme] + rest
    if scheme in ("http", "https"):
        return "/vsicurl?url=" + quote(text, safe="")
    return text


def is_vsi(path: str | Path) -> bool:
    """A GDAL virtual file system name (``/vsis3/…``, ``/vsicurl?…``, ``/vsizip/…``)."""
    return str(path).startswith("/vsi")


def display_url(path: str | Path) -> str:
    """``/vsis3/b/k`` -> ``s3://b/k``; ``/vsicurl?url=…`` -> the URL; else unchanged."""
    text = str(path)
    if text.startswith("/vsicurl?"):
        match = re.search(r"(?:^|[?&])url=([^&]*)", text[len("/vsicurl?"):])
        return unquote(match.group(1)) if match else text
    for scheme, prefix in _PREFIX.items():
        if text.startswith(prefix):
            return f"{scheme}://{text[len(prefix):]}"
    return text


def scrub(text: str) -> str:
    """``text`` with the value of every credential variable set in the environment
    replaced by ``***``."""
    for var in CREDENTIAL_VARS:
        value = os.environ.get(var)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


class CredentialFilter(logging.Filter):
    """A handler filter: any record whose text holds a credential value (botocore's debug
    lines carry the access key id in the Authorization header) has it replaced by ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = scrub(text)
        if clean != text:
            record.msg, record.args = clean, ()
        return True


_NOT_FOUND = ("does not exist", "nosuchkey", "nosuchbucket", "404", "not found")
_DENIED = ("access denied", "accessdenied", "403", "forbidden", "invalidaccesskeyid",
           "signaturedoesnotmatch", "expiredtoken", "permission")
_UNREACHABLE = ("curl error", "could not connect", "could not resolve", "timed out",
                "connection refused", "failed to connect")


def remote_error(path: str | Path, message: str) -> IOAdapterError:
    """Our one-line error for GDAL's ``message`` about the remote ``path``: a missing
    object or bucket, denied access or an unreachable endpoint is an input error (exit 3),
    anything else (a damaged object) corrupt input (exit 5)."""
    url = display_url(path)
    low = message.lower()
    if "bucket" in low and "does not exist" in low:
        return InputNotFoundError(f"{url}: the bucket does not exist")
    if any(w in low for w in _DENIED):
        return InputNotFoundError(f"{url}: access denied (check the credentials and the "
                                  "object's permissions)")
    if any(w in low for w in _UNREACHABLE):
        return InputNotFoundError(f"{url}: the endpoint cannot be reached")
    if any(w in low for w in _NOT_FOUND):
        return InputNotFoundError(f"{url}: no such object")
    if "got 0 bytes" in low:  # a range request past the end: deleted or replaced meanwhile
        return InputNotFoundError(f"{url}: the object vanished or changed while it was read")
    return CorruptFileError(f"{url}: cannot be read as a raster: "
                            f"{scrub(' '.join(message.split()))[:200]}")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def gdal_messages() -> Iterator[list[str]]:
    """The messages GDAL signals inside the block (rasterio logs each at debug level on
    ``rasterio._err`` before raising only the last): a remote read that fails says why
    (``got 0 bytes``: the object shrank or vanished) only there.  Not propagated."""
    logger = logging.getLogger("rasterio._err")
    handler = _Collect()
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
