"""``zssr run`` INPUTs by URL: objects, and prefixes and patterns on ``s3://``.

* ``s3://bucket/key.tif``, ``gs://…``, ``az://…``, ``https://…`` or a GDAL ``/vsi…`` name is
  one image, read by windows through GDAL (:mod:`io_adapters.vsi`); whether it exists
  is learnt when the run plans it (a missing object or bucket fails that image only).
  DICOM, PNG, JPEG and BMP objects are copied whole and Zarr stores read where they are
  (:mod:`io_adapters.fetch`).
* ``s3://bucket/prefix/`` (a trailing ``/``) is a folder: a Zarr store (``zarr.json``
  directly under it) or a DICOM series (every image object directly under it DICOM; a
  local folder is one series as soon as it holds a DICOM file) is **one** image; otherwise the objects directly under it whose names end in
  :data:`REMOTE_SUFFIXES`, the Zarr stores (``<name>.zarr/``) and the DICOM series
  (sub-prefixes of DICOM objects) directly under it, sorted; others are skipped.
* ``s3://bucket/scenes/*.tif`` is a pattern with :mod:`glob`'s rules on the key (``*`` and
  ``?`` stop at ``/``, ``**/`` crosses folders, ``[...]`` sets), matched against the keys
  listed under its fixed part, and against the Zarr stores among them (``*.zarr``).

Listing is S3's (``ListObjectsV2``, boto3: :func:`io_adapters.objstore.list_keys`);
``gs://``/``az://`` prefixes and patterns are refused with a usage line.

>>> remote_pattern("scenes/**/L?_[!x]*.tif").pattern
'scenes/(?:[^/]*/)*L[^/]_[^x][^/]*\\\\.tif'
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from io_adapters.errors import InputNotFoundError
from io_adapters.fetch import ZARR_MARKERS
from io_adapters.objstore import list_keys
from io_adapters.vsi import gdal_path, is_vsi
from pipeline.errors import UsageError

__all__ = ["REMOTE_SUFFIXES", "is_url", "expand_url", "remote_pattern"]

#: Objects a prefix lists as images: rasters GDAL reads by range requests (GeoTIFF/COG),
#: and the whole-file formats fsspec copies (DICOM, plain images).
REMOTE_SUFFIXES = frozenset({".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".dcm",
                             ".dicom", ".ima"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".ima"})
_WILD = re.compile(r"(\*\*/|\*\*|\*|\?|\[!?[^\]]+\])")


def is_url(spec: str) -> bool:
    """An INPUT read through GDAL's virtual file systems (a URL or a ``/vsi…`` name)."""
    return is_vsi(spec) or gdal_path(spec) != spec


def remote_pattern(key_glob: str) -> re.Pattern[str]:
    """A key pattern (glob's rules, ``/`` as the separator) as a regular expression."""
    out = []
    for part in _WILD.split(key_glob):
        if part == "**/":
            out.append("(?:[^/]*/)*")
        elif part == "**":
            out.append(".*")
        elif part == "*":
            out.append("[^/]*")
        elif part == "?":
            out.append("[^/]")
        elif _WILD.fullmatch(part):  # a [set] or [!set]
            body = part[2:-1] if part.startswith("[!") else part[1:-1]
            out.append(("[^" if part.startswith("[!") else "[") + body.replace("\\", "\\\\")
                       + "]")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))


def expand_url(spec: str) -> list[str]:
    """The URLs ``spec`` stands for (see the module doc), in order.

    Raises :class:`~io_adapters.errors.InputNotFoundError` (a missing bucket, denied
    access, an unreachable endpoint, nothing matching) or
    :class:`~pipeline.errors.UsageError`, each one line naming ``spec``.
    """
    scheme, sep, rest = spec.partition("://")
    if not sep or scheme.lower() not in ("s3", "gs", "az"):  # https://…?query, /vsi… names
        return [spec]
    if not (spec.endswith("/") or _WILD.search(rest)):
        return [spec]
    if scheme.lower() != "s3":
        raise UsageError(f"{spec}: prefixes and patterns are listed on s3:// only; name "
                         "the objects one by one")
    bucket, _, key = spec[len("s3://"):].partition("/")
    if not bucket:
        raise UsageError(f"{spec}: expected s3://bucket/prefix/ or s3://bucket/pattern")
    if spec.endswith("/"):
        keys = _folder(key, list_keys(spec, bucket, key))
        what = "no image object, Zarr store or DICOM series directly under it"
    else:
        fixed = _WILD.split(key, maxsplit=1)[0]
        pattern = remote_pattern(key)
        listed = list_keys(spec, bucket, fixed)
        roots = {k.rpartition("/")[0] for k in listed if k.rpartition("/")[2] in ZARR_MARKERS}
        stores = sorted(r for r in roots if not any(r.startswith(o + "/") for o in roots))
        keys = sorted({k for k in listed if pattern.fullmatch(k) and not any(
            k.startswith(s + "/") for s in stores)} | {s for s in stores
                                                      if pattern.fullmatch(s)})
        what = "pattern matches no object"
    if not keys:
        raise InputNotFoundError(f"{spec}: {what}")
    return [f"s3://{bucket}/{k}" for k in keys]


def _folder(prefix: str, keys: list[str]) -> list[str]:
    """What the prefix (a folder, ``…/``) stands for, from every key under it: itself when
    it is a Zarr store or a DICOM series, else its images, stores and series."""
    children: dict[str, list[str]] = {}  # immediate sub-prefix -> its keys' rest
    direct = []
    for k in keys:
        rest = k[len(prefix):]
        sub, slash, tail = rest.partition("/")
        if slash:
            children.setdefault(sub, []).append(tail)
        else:
            direct.append(rest)
    if any(n in ZARR_MARKERS for n in direct):
        return [prefix.rstrip("/")]
    images = [n for n in direct if PurePosixPath(n).suffix.lower() in REMOTE_SUFFIXES]
    if images and all(_is_dicom(n) for n in images):
        return [prefix.rstrip("/")]  # a DICOM series, as a local folder of slices
    out = [prefix + n for n in images]
    for sub, rest in children.items():
        if any(r in ZARR_MARKERS for r in rest):
            out.append(prefix + sub)
        else:
            slices = [r for r in rest if "/" not in r
                      and PurePosixPath(r).suffix.lower() in REMOTE_SUFFIXES]
            if slices and all(_is_dicom(r) for r in slices):
                out.append(prefix + sub)
    return sorted(out)


def _is_dicom(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in DICOM_SUFFIXES
