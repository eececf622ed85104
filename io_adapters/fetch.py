"""Inputs by URL that GDAL does not read by windows: DICOM, plain images and Zarr stores.

A GeoTIFF/COG URL is read by GDAL's range requests (:mod:`io_adapters.vsi`).  The other
formats go through fsspec (``s3://`` by s3fs, ``http(s)://`` by aiohttp; ``gs://`` and
``az://`` when gcsfs/adlfs are installed):

* **whole-file formats** (DICOM, PNG, JPEG, BMP, a non-geo TIFF named otherwise): the
  object is copied into a private temporary folder (``mkdtemp``: mode 0700, created
  fresh; the file opened ``O_EXCL | O_NOFOLLOW``) and read by the format's own reader;
  the folder is removed when the reader is closed (or collected, or the copy fails).
  The object's size is checked first against :func:`fetch_limit` (what the declared-size
  guard ``--max-pixels`` lets an input hold, uncompressed) and the free space of the
  temporary folder; a copy longer than the size announced is refused (the object changed).
* **a DICOM series**: a prefix (``s3://bucket/series/``) of DICOM objects, copied the same
  way into one folder and read as a folder of slices;
* **Zarr**: opened where it is (zarr's ``FsspecStore``): a window reads only the chunks it
  covers.

Which one a URL is: a ``.tif``/``.tiff``/``.vrt`` name goes to GDAL as before (no extra
request); a ``.dcm``/``.png``/``.jpg``/``.bmp``… name is copied (the copy's content picks
the reader, as for a local file); a ``.zarr`` name, or a prefix holding ``zarr.json``
(``.zgroup``, ``.zarray``), is a Zarr store; another prefix with objects under it is a
DICOM series; any other object is judged by its first 132 bytes (one range request):
DICOM, PNG, JPEG or BMP are copied, anything else goes to GDAL.

A missing object or bucket, denied access or an unreachable endpoint is the one-line input
error of the GDAL path (:func:`io_adapters.vsi.remote_error`, exit 3), naming the URL and
never a credential.  The endpoint and credentials are botocore's (``AWS_ENDPOINT_URL``…).

Whole-file inputs go through the process's fetch cache (:mod:`io_adapters.fetch_cache`):
one opened again is not downloaded again while its identity (size, ETag…) is unchanged.
This module reads the URLs (kinds, listings, copies, the size guard, the one-line errors)
and asks the cache for an entry, or copies privately where it has none.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from .base import Metadata, Reader
from .errors import CorruptFileError, InputNotFoundError, InvalidDataError, IOAdapterError
from .fetch_cache import (
    cache_limit,
    fetch_cache,
    info_etag,
    info_version,
    link_entry,
    listing_identity,
)
from .vsi import display_url, remote_error, scrub

__all__ = ["fsspec_url", "remote_kind", "fetch_limit", "open_remote", "zarr_store",
           "FetchedReader", "GDAL_SUFFIXES", "WHOLE_FILE_SUFFIXES", "ZARR_MARKERS"]

log = logging.getLogger(__name__)

GDAL_SUFFIXES = frozenset({".tif", ".tiff", ".vrt"})
WHOLE_FILE_SUFFIXES = frozenset({".dcm", ".dicom", ".ima", ".png", ".jpg", ".jpeg", ".bmp"})
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")
_HEAD = 132  # DICOM's preamble + 'DICM', as io_adapters.detect sniffs a file
_SCHEMES = ("s3", "gs", "az", "http", "https")
#: Headers and metadata a whole file may carry beyond its pixels (DICOM's private tags,
#: a PNG's text chunks) when its size is judged against the pixel limit.
HEADER_ALLOWANCE = 64 * 1024 * 1024
#: Bytes per pixel of the largest uncompressed sample the readers take whole (4 bands of
#: 16 bits, or one float64 band).
BYTES_PER_PIXEL = 8


def fsspec_url(path: str | Path) -> str | None:
    """The URL fsspec opens for a GDAL name (``/vsis3/b/k`` -> ``s3://b/k``,
    ``/vsicurl?url=…`` -> the URL); None for names only GDAL knows (``/vsizip/…``)."""
    url = display_url(path)
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    return url if scheme in _SCHEMES else None


def fetch_limit(max_pixels: int) -> int:
    """Most bytes an input read whole may have: ``max_pixels`` uncompressed pixels of
    :data:`BYTES_PER_PIXEL` bytes, plus :data:`HEADER_ALLOWANCE`."""
    return int(max_pixels) * BYTES_PER_PIXEL + HEADER_ALLOWANCE


def _options(url: str) -> dict[str, Any]:
    """fsspec's options for ``url``: s3 with the endpoint of ``AWS_ENDPOINT_URL(_S3)``
    (part of fsspec's instance-cache key: another endpoint, another client), short
    timeouts."""
    options: dict[str, Any] = {}
    if url.lower().startswith("s3://"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        options["config_kwargs"] = {"connect_timeout": 10, "read_timeout": 60,
                                    "retries": {"max_attempts": 3, "mode": "standard"}}
        if endpoint:
            options["endpoint_url"] = endpoint
    return options


def _filesystem(url: str) -> tuple[Any, str]:
    """``(fsspec filesystem, path)`` for ``url`` (:func:`_options`), with no listing
    cached from an earlier call."""
    import fsspec

    try:
        fs, where = fsspec.core.url_to_fs(url, **_options(url))
        fs.invalidate_cache()
        return fs, where
    except (ImportError, ValueError) as exc:  # gcsfs/adlfs not installed, a bad URL
        raise InputNotFoundError(f"{url}: cannot be opened through fsspec: "
                                 f"{scrub(' '.join(str(exc).split()))[:200]}") from None


def fetch_error(url: str, exc: BaseException) -> IOAdapterError:
    """Our one line for an fsspec failure on ``url`` (the classes of the GDAL path)."""
    if isinstance(exc, IOAdapterError):
        return exc
    text = " ".join(str(exc).split())
    if isinstance(exc, FileNotFoundError):  # s3fs says only the key, or the bucket's text
        return remote_error(url, text if "bucket" in text.lower() else "404 not found")
    # a 403 (PermissionError: "Forbidden"/"Access Denied"), botocore's "Could not connect",
    # aiohttp's "Cannot connect": the words remote_error knows from GDAL's messages
    return remote_error(url, f"{type(exc).__name__}: {text}")


def _call(url: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - fsspec backends raise many types
        raise fetch_error(url, exc) from None


def _suffix(url: str) -> str:
    return PurePosixPath(urlsplit(url).path.rstrip("/")).suffix.lower()


def remote_kind(path: str | Path) -> str:
    """``"gdal"``, ``"zarr"``, ``"series"`` or ``"file"`` for a URL input (module doc)."""
    url = fsspec_url(path)
    suffix = _suffix(url) if url else ""
    if url is None or suffix in GDAL_SUFFIXES:
        return "gdal"
    if suffix == ".zarr":
        return "zarr"
    if suffix in WHOLE_FILE_SUFFIXES:  # the copy's own reader judges the content
        return "file"
    fs, where = _filesystem(url)
    base = where.rstrip("/")
    if any(_call(url, lambda m=m: fs.exists(f"{base}/{m}")) for m in ZARR_MARKERS):
        return "zarr"
    if url.lower().startswith(("s3://", "gs://", "az://")) and \
            _call(url, lambda: fs.isdir(base)):  # (http has no listing: a store or a file)
        return "series"
    head = _call(url, lambda: fs.cat_file(base, start=0, end=_HEAD))
    if head[128:132] == b"DICM" or head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")) \
            or head[:2] == b"BM":
        return "file"
    return "gdal"


def zarr_store(path: str | Path, *, writable: bool = False) -> Any:
    """A read-only ``FsspecStore`` on the store at ``path`` (a URL or GDAL name);
    ``writable``: one that writes too (a run folder's working store)."""
    from zarr.storage import FsspecStore

    url = fsspec_url(path)
    if url is None:
        raise InputNotFoundError(f"{path}: a Zarr store by URL needs s3://, gs://, az:// or "
                                 "http(s)://")
    fs, where = _filesystem(url)
    if not any(_call(url, lambda m=m: fs.exists(f"{where.rstrip('/')}/{m}"))
               for m in ZARR_MARKERS):
        _call(url, lambda: fs.info(where))  # a missing bucket or denied access says so
        raise InputNotFoundError(f"{url}: no such Zarr store (no zarr.json under it)")
    return _call(url, lambda: FsspecStore.from_url(url.rstrip("/"), read_only=not writable,
                                                   storage_options=_options(url)))


def _series_objects(fs: Any, url: str, where: str) -> list[dict[str, Any]]:
    """The DICOM objects directly under the prefix (hidden names and DICOMDIR left out)."""
    entries = _call(url, lambda: fs.ls(where.rstrip("/"), detail=True))
    files = sorted((e for e in entries if e.get("type") == "file"), key=lambda e: e["name"])
    keep = [e for e in files if not PurePosixPath(e["name"]).name.startswith(".")
            and PurePosixPath(e["name"]).name.upper() != "DICOMDIR"
            and _suffix(e["name"]) in ("", ".dcm", ".dicom", ".ima")]
    if not keep:
        raise InputNotFoundError(f"{url}: no DICOM object directly under this prefix (and "
                                 "no zarr.json: not a Zarr store either)")
    return keep


def _copy(fs: Any, url: str, name: str, size: int, target: Path) -> dict[str, Any] | None:
    """Copy ``name`` (``size`` bytes announced) into the new file ``target``; the details
    the backend's file read against (s3fs: its HEAD, whose ETag its GETs are ``If-Match``
    on), where it has them."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    got = 0
    with os.fdopen(fd, "wb") as out:
        with _call(url, lambda: fs.open(name, "rb", block_size=4 * 1024 * 1024)) as src:
            details = getattr(src, "details", None)
            while True:
                chunk = _call(url, lambda: src.read(4 * 1024 * 1024))
                if not chunk:
                    break
                got += len(chunk)
                if got > size:
                    raise InputNotFoundError(f"{url}: the object vanished or changed while "
                                             "it was read")
                out.write(chunk)
    if got != size:
        raise InputNotFoundError(f"{url}: the object vanished or changed while it was read")
    return details if isinstance(details, dict) else None


def _check_room(url: str, total: int, limit: int, folder: Path, max_pixels: int) -> None:
    if total > limit:
        raise InvalidDataError(
            f"{url}: {total} bytes to read whole, more than the {limit} bytes an input of "
            f"--max-pixels {max_pixels:.3g} may take ({BYTES_PER_PIXEL} bytes a pixel); raise "
            "--max-pixels if the image is real, or convert it to a COG (read by windows)")
    free = shutil.disk_usage(folder).free
    if total > free:
        raise InvalidDataError(f"{url}: {total} bytes to copy, but the temporary folder "
                               f"{folder.parent} has {free} bytes free; set TMPDIR to a "
                               "larger disk")


class _Changed(InputNotFoundError):
    """The object read was not the version the identity names (replaced meanwhile); caught
    by :func:`open_remote`, which reads it again through a private copy."""


# ------------------------------------------------------------------------ the reader


def _discard(folder: str, release: Callable[[], None] | None) -> None:
    try:
        shutil.rmtree(folder, ignore_errors=True)
    finally:
        if release is not None:
            release()


class FetchedReader:
    """A reader on a private local copy of a remote input; ``meta.path`` is the URL's GDAL
    name (as for a GeoTIFF by URL) and DICOM ``sources`` name the objects; closing it (or
    collecting it) removes the copy (and releases its fetch-cache entry)."""

    def __init__(self, inner: Reader, folder: Path, path: Path, urls: tuple[str, ...],
                 reopen: dict[str, Any], release: Callable[[], None] | None = None) -> None:
        self.inner, self.path, self._folder, self._reopen = inner, path, folder, reopen
        self._cleanup = weakref.finalize(self, _discard, str(folder), release)
        meta: Metadata = inner.meta
        if meta.medical is not None and meta.medical.sources:
            by_name = {PurePosixPath(urlsplit(u).path).name: u for u in urls}
            meta = replace(meta, medical=replace(meta.medical, sources=tuple(
                by_name.get(Path(s).name, s) for s in meta.medical.sources)))
        self.meta = replace(meta, path=path)

    def read(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.read(*args, **kwargs)

    def read_masks(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.read_masks(*args, **kwargs)

    def read_mask(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.read_mask(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # anything else a format's reader offers
        if name.startswith("__") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self._cleanup()

    def __enter__(self) -> FetchedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:  # a Dask worker fetches its own copy (or its cache's)
        return {"path": self.path, **self._reopen}

    def __setstate__(self, state: dict) -> None:
        fresh = open_remote(**state)
        self.__dict__.update(fresh.__dict__)
        _, _, (folder, release), _ = fresh._cleanup.detach()
        self._cleanup = weakref.finalize(self, _discard, folder, release)


def open_remote(path: Path, *, kind: str, bands: list[int] | None, max_pixels: int,
                open_local: Callable[[Path, list[int] | None], Reader]) -> Reader:
    """Copy the object (``kind="file"``) or the series (``"series"``) at ``path`` into a
    private temporary folder, through the process's fetch cache, and open it with
    ``open_local`` (module doc)."""
    url = fsspec_url(path)
    if url is None:
        raise InputNotFoundError(f"{path}: not a URL fsspec can read")
    fs, where = _filesystem(url)
    if kind == "series":
        objects = _series_objects(fs, url, where)
    else:
        info = _call(url, lambda: fs.info(where))
        if info.get("type") != "file":
            raise InputNotFoundError(f"{url}: no such object")
        objects = [{**info, "name": where}]
    total = sum(int(o.get("size") or 0) for o in objects)
    limit = cache_limit()
    identity = listing_identity(objects) if limit > 0 else None
    folder = Path(tempfile.mkdtemp(prefix="zssr-fetch-"))
    release: Callable[[], None] | None = None
    try:
        _check_room(url, total, fetch_limit(max_pixels), folder, max_pixels)
        urls = [url.rstrip("/") + "/" + (PurePosixPath(o["name"]).name or "object")
                if kind == "series" else url for o in objects]
        local = None
        if identity is not None:
            cache = fetch_cache()

            def fetch(into: Path) -> str:
                _check_room(url, total, fetch_limit(max_pixels), cache.root(), max_pixels)
                return _fetch(fs, url, kind, objects, into, verify=True)

            try:
                entry = cache.acquire((url.rstrip("/"), kind, identity), total, limit, fetch)
            except _Changed:  # replaced while it was read: not kept, read again privately
                entry = None
            if entry is not None:
                release = functools.partial(cache.release, entry)
                local = link_entry(entry, folder)
        if local is None:
            local = folder / _fetch(fs, url, kind, objects, folder, verify=False)
        log.debug("%s: %d bytes for a whole-file read (%s)", url, total,
                  "fetch cache" if release is not None else "private copy")
        try:
            inner = open_local(local, bands)
        except IOAdapterError as exc:  # name the URL, not the private copy
            raise type(exc)(str(exc).replace(str(local), url)) from None
        except OSError as exc:
            raise CorruptFileError(f"{url}: cannot be read: {exc}") from None
        return FetchedReader(inner, folder, Path(path), tuple(urls), {
            "kind": kind, "bands": bands, "max_pixels": max_pixels, "open_local": open_local},
            release)
    except BaseException:
        _discard(str(folder), release)
        raise


def _fetch(fs: Any, url: str, kind: str, objects: list[dict[str, Any]], folder: Path, *,
           verify: bool) -> str:
    """Copy ``objects`` into ``folder`` (a series into ``folder/series``); the path to open,
    relative to ``folder``.  ``verify``: raise :class:`_Changed` unless what was read is
    the version ``objects`` name (the backend's ETag, else a second ``info``)."""
    local = None
    if kind == "series":
        local = folder / "series"
        local.mkdir(mode=0o700)
    for obj in objects:
        name = PurePosixPath(obj["name"]).name or "object"
        target = (local or folder) / name
        size = int(obj.get("size") or 0)
        details = _copy(fs, url, obj["name"], size, target)
        if verify and not (info_etag(obj) and info_etag(details) == info_etag(obj)):
            fs.invalidate_cache(obj["name"])
            again = _call(url, lambda o=obj: fs.info(o["name"]))
            if int(again.get("size") or 0) != size or info_version(again) != info_version(obj):
                raise _Changed(f"{url}: the object changed while it was read")
        if local is None:
            local = target
    return str(local.relative_to(folder))
