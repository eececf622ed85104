"""``zssr run`` INPUTs by URL: objects, and prefixes and patterns on ``s3://``.

* ``s3://bucket/key.tif``, ``gs://…``, ``az://…``, ``https://…`` or a GDAL ``/vsi…`` name is
  one image, read by windows through GDAL (:mod:`io_adapters.vsi`); whether it exists
  is learnt when the run plans it (a missing object or bucket fails that image only).
* ``s3://bucket/prefix/`` (a trailing ``/``) is a folder: the objects directly under it
  whose names end in :data:`REMOTE_SUFFIXES`, sorted; others are skipped.
* ``s3://bucket/scenes/*.tif`` is a pattern with :mod:`glob`'s rules on the key (``*`` and
  ``?`` stop at ``/``, ``**/`` crosses folders, ``[...]`` sets), matched against the keys
  listed under its fixed part.

Listing is S3's (``ListObjectsV2``, boto3: :func:`io_adapters.objstore.list_keys`);
``gs://``/``az://`` prefixes and patterns are refused with a usage line.

>>> remote_pattern("scenes/**/L?_[!x]*.tif").pattern
'scenes/(?:[^/]*/)*L[^/]_[^x][^/]*\\\\.tif'
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from io_adapters.errors import InputNotFoundError
from io_adapters.objstore import list_keys
from io_adapters.vsi import gdal_path, is_vsi
from pipeline.errors import UsageError

__all__ = ["REMOTE_SUFFIXES", "is_url", "expand_url", "remote_pattern"]

#: What a URL input may be: rasters GDAL reads by range requests (GeoTIFF/COG).
REMOTE_SUFFIXES = frozenset({".tif", ".tiff"})
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
        keys = [k for k in list_keys(spec, bucket, key, direct=True)
                if PurePosixPath(k).suffix.lower() in REMOTE_SUFFIXES]
        what = f"no {'/'.join(sorted(REMOTE_SUFFIXES))} object directly under it"
    else:
        fixed = _WILD.split(key, maxsplit=1)[0]
        pattern = remote_pattern(key)
        keys = [k for k in list_keys(spec, bucket, fixed) if pattern.fullmatch(k)]
        what = "pattern matches no object"
    if not keys:
        raise InputNotFoundError(f"{spec}: {what}")
    return [f"s3://{bucket}/{k}" for k in keys]
