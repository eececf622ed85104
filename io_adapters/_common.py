"""Helpers shared by the format adapters (private: no format logic here).

Windows and band selection are validated once here so every adapter raises the
same errors (scales and output sizes come from :mod:`geometry`); the writers share
dtype casting, the valid-pixel rule and atomic temporary paths.

Band indexes are **0-based** everywhere in this package (``bands=[0, 2]`` picks
the first and third band), like the array axis they index.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.windows import Window

from geometry import ScaleLike, as_scale, output_shape

from . import output_safety
from .base import Metadata
from .errors import InvalidDataError, WriteError
from .output_safety import check_replaceable, remove_tree, replace_onto, temp_name

log = logging.getLogger(__name__)


def as_window(window: Window | None, *, rows: int, cols: int) -> Window:
    """Return ``window`` (the whole raster when None) after checking it is integral."""
    if window is None:
        return Window(0, 0, cols, rows)
    values = (window.col_off, window.row_off, window.width, window.height)
    if any(float(v) != int(v) for v in values):
        raise ValueError(f"window {window} must have integer offsets and sizes")
    return Window(*(int(v) for v in values))


def inner_part(window: Window, *, rows: int,
               cols: int) -> tuple[Window | None, tuple[slice, slice]]:
    """The part of ``window`` inside a ``rows x cols`` raster and where it lands in the window.

    Returns ``(inner, (row_slice, col_slice))``; ``inner`` is None when the
    window lies entirely outside the raster.
    """
    r0, c0 = int(window.row_off), int(window.col_off)
    r1, c1 = r0 + int(window.height), c0 + int(window.width)
    ir0, ic0, ir1, ic1 = max(r0, 0), max(c0, 0), min(r1, rows), min(c1, cols)
    if ir0 >= ir1 or ic0 >= ic1:
        return None, (slice(0, 0), slice(0, 0))
    inner = Window(ic0, ir0, ic1 - ic0, ir1 - ir0)
    return inner, (slice(ir0 - r0, ir1 - r0), slice(ic0 - c0, ic1 - c0))


def boundless_read(read_inner: Callable[[Window], np.ndarray], window: Window, *,
                   rows: int, cols: int, bands: int, dtype: np.dtype,
                   fill: float) -> np.ndarray:
    """Read ``window`` through ``read_inner`` (in-bounds windows only), padding with ``fill``."""
    inner, (rs, cs) = inner_part(window, rows=rows, cols=cols)
    shape = (bands, int(window.height), int(window.width))
    if inner is not None and (rs.stop - rs.start, cs.stop - cs.start) == shape[1:]:
        return read_inner(inner)
    out = np.full(shape, fill, dtype=dtype)
    if inner is not None:
        out[:, rs, cs] = read_inner(inner)
    return out


def inside_mask(window: Window, *, rows: int, cols: int) -> np.ndarray:
    """``(h, w)`` bool: True where ``window`` overlaps the ``rows x cols`` raster."""
    out = np.zeros((int(window.height), int(window.width)), dtype=bool)
    inner, (rs, cs) = inner_part(window, rows=rows, cols=cols)
    if inner is not None:
        out[rs, cs] = True
    return out


def select_bands(requested: Sequence[int] | None, total: int, *, path: Path) -> tuple[int, ...]:
    """Validate 0-based band indexes against a file with ``total`` bands."""
    if requested is None:
        return tuple(range(total))
    chosen = tuple(int(b) for b in requested)
    if not chosen:
        raise InvalidDataError(f"{path}: empty band selection; give at least one band index")
    bad = [b for b in chosen if not 0 <= b < total]
    if bad:
        raise InvalidDataError(
            f"{path}: band index {bad[0]} out of range; the file has {total} bands, "
            f"use 0-based indexes 0..{total - 1}")
    return chosen


def check_frame(frame: int, frames: int, *, path: Path) -> int:
    if not 0 <= int(frame) < frames:
        raise ValueError(f"{path}: frame {frame} out of range; the image has {frames} frame(s)")
    return int(frame)


class NoNodataMasks:
    """``read_mask``/``read_masks`` of a format with no nodata (DICOM, NIfTI): every pixel
    inside the raster is valid, outside it none (a reader with ``meta`` and ``path``)."""

    def read_mask(self, window: Window | None = None, *, frame: int = 0) -> np.ndarray:
        """True inside the image, False outside."""
        check_frame(frame, self.meta.frames, path=self.path)
        window = as_window(window, rows=self.meta.rows, cols=self.meta.cols)
        return inside_mask(window, rows=self.meta.rows, cols=self.meta.cols)

    def read_masks(self, window: Window | None = None, *, frame: int = 0) -> np.ndarray:
        """Per-band validity ``(bands, rows, cols)``: :meth:`read_mask` for every band."""
        mask = self.read_mask(window, frame=frame)
        return np.broadcast_to(mask, (self.meta.bands, *mask.shape)).copy()


def check_pixel_dtype(dtype: np.dtype | str, *, path: Path) -> np.dtype:
    """Refuse pixel types that cannot be super-resolved (complex, bool, strings)."""
    dt = np.dtype(dtype)
    if dt.kind not in "uif":
        raise InvalidDataError(
            f"{path}: pixel type {dt} cannot be super-resolved; "
            "convert it to an integer or float type first")
    return dt


def scale_common(meta: Metadata, scale: ScaleLike) -> Metadata:
    """New size (:func:`geometry.output_shape`), geotransform ``T * scale(1/s)`` (origin
    kept) and pixel spacing ``/ s``."""
    sc = as_scale(scale)
    sy, sx = sc.floats
    rows, cols = output_shape((meta.rows, meta.cols), sc)
    geo = meta.geo
    if geo is not None:
        transform = Affine(*geo.transform) @ Affine.scale(1.0 / sx, 1.0 / sy)
        geo = replace(geo, transform=tuple(transform)[:6])
    medical = meta.medical
    if medical is not None and medical.pixel_spacing is not None:
        spacing = (medical.pixel_spacing[0] / sy, medical.pixel_spacing[1] / sx)
        medical = replace(medical, pixel_spacing=spacing)
    return replace(meta, rows=rows, cols=cols, geo=geo, medical=medical)


def cast_to_dtype(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Convert writer input to the output dtype: round and clip into integer ranges.

    NaN becomes 0 for integer outputs (the valid mask, when given, decides
    what becomes nodata afterwards).
    """
    dt = np.dtype(dtype)
    arr = np.asarray(array)
    if arr.dtype == dt:
        return arr
    if dt.kind in "ui":
        info = np.iinfo(dt)
        if arr.dtype.kind == "f":
            arr = np.nan_to_num(np.rint(arr), nan=0.0, posinf=info.max, neginf=info.min)
        return np.clip(arr, info.min, info.max).astype(dt)
    return arr.astype(dt)


def nudged_value(nodata: float, dtype: np.dtype) -> float:
    """The value a *valid* pixel equal to nodata is moved to (one unit away)."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        up = np.nextafter(dt.type(nodata), dt.type(np.inf))
        return float(up if np.isfinite(up) else np.nextafter(dt.type(nodata), dt.type(-np.inf)))
    return float(nodata + 1 if nodata < np.iinfo(dt).max else nodata - 1)


def apply_valid_mask(array: np.ndarray, mask: np.ndarray | None, *, nodata: float | None,
                     alpha_band: int | None = None) -> np.ndarray:
    """Make invalid pixels nodata and keep valid ones off nodata.

    ``mask`` is ``(rows, cols)`` or ``(bands, rows, cols)`` bool, True = valid.
    Where it is False a pixel gets ``nodata`` (or alpha 0 when there is no
    nodata but an alpha band); a *valid* pixel that happens to equal nodata is
    nudged one unit (:func:`nudged_value`) so it never reads back as missing.
    Without a mask the array is returned unchanged.
    """
    if mask is None:
        return array
    mask = np.asarray(mask, dtype=bool)
    if mask.shape not in (array.shape, array.shape[1:]):
        raise ValueError(f"mask shape {mask.shape} does not match array shape {array.shape}")
    out = array.copy()
    if nodata is None:
        if alpha_band is not None:
            invalid = ~mask if mask.ndim == 2 else ~mask.all(axis=0)
            out[alpha_band][invalid] = 0
        return out
    full = np.broadcast_to(mask, out.shape)
    if not np.isnan(nodata):
        out[full & (out == nodata)] = nudged_value(nodata, out.dtype)
    out[~full] = nodata
    return out


def check_region(array: np.ndarray, window: Window, *, meta: Metadata,
                 path: Path) -> tuple[Window, np.ndarray]:
    """Check that ``array`` is ``(bands, h, w)`` (or ``(h, w)`` for one band) for an
    in-bounds ``window``; returns the integral window and the 3-D array."""
    window = as_window(window, rows=meta.rows, cols=meta.cols)
    expected = (meta.bands, int(window.height), int(window.width))
    array = np.asarray(array)
    if array.ndim == 2 and meta.bands == 1:
        array = array[None]
    if array.shape != expected:
        raise ValueError(f"{path}: array shape {np.shape(array)} does not fit window "
                         f"{window}; expected (bands, rows, cols) = {expected}")
    inner, _ = inner_part(window, rows=meta.rows, cols=meta.cols)
    if inner is None or (inner.width, inner.height) != (window.width, window.height):
        raise ValueError(f"{path}: window {window} is not inside the "
                         f"{meta.rows} x {meta.cols} output; writes must be in bounds")
    return window, array


def temp_sibling(final: Path, tag: str) -> Path:
    """A hidden, unique temporary name in the same folder (same filesystem for os.replace).

    Only a name: create it with :func:`new_temp_dir` (a private folder the writer's
    library then writes into), never by opening the name itself (that follows a link).
    """
    return temp_name(final, tag)


def new_temp_dir(final: Path, tag: str) -> Path:
    """A fresh private folder named like :func:`temp_sibling` (``mkdir``: never a link)."""
    return output_safety.new_temp_dir(final, tag)


def stale_temps(final: Path) -> list[Path]:
    """The temporaries (:func:`temp_sibling`) an interrupted writer of ``final`` left behind.

    Only safe to delete when no other writer of ``final`` can be running (``zssr run``
    holds the run directory's lock).
    """
    pattern = re.compile(re.escape(f".{final.name}.") + r"[a-z]+-[0-9a-f]{8}(\.aux\.xml)?")
    prefix = f".{final.name}."
    try:
        names = [p for p in final.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return []
    return sorted(p for p in names if pattern.fullmatch(p.name))


DISK_FULL_BYTES = 1 << 20  # a write failure with less free space than this: a full disk


@contextmanager
def aborting(writer: Any, doing: str) -> Iterator[None]:
    """Run a writer's step; on a failure abort the writer and raise :func:`write_failure`'s
    one line for ``doing``; on a signal abort and re-raise: nothing partial stays."""
    try:
        yield
    except Exception as exc:
        error = write_failure(writer.path, doing, exc)  # before the temporaries go
        writer.abort()
        raise error from exc
    except BaseException:
        writer.abort()
        raise


def write_failure(path: Path, doing: str, exc: BaseException) -> WriteError:
    """``WriteError("<path>: cannot <doing>: <reason>")`` with the first line of ``exc``.

    GDAL and libpng report a full disk as a bare I/O error; it is named as such when
    an ``ENOSPC``/``EDQUOT`` is in the exception chain or the output's file system is
    (nearly) full.  Call it before deleting the temporaries (they hold the space).
    """
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    if _disk_full(path.parent, exc):
        return WriteError(f"{path}: cannot {doing}: no space left on device ({reason}); "
                          "free some space and run the command again")
    return WriteError(f"{path}: cannot {doing}: {reason}")


def _disk_full(folder: Path, exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):  # the exception chain
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < DISK_FULL_BYTES


def remove_path(path: Path) -> None:
    """Delete a file, a link (only the link) or a folder tree; missing is fine."""
    try:
        remove_tree(path)
    except OSError:
        log.debug("cannot remove %s", path, exc_info=True)


def replace_into(src: Path, final: Path) -> Path:
    """Move ``src`` to ``final`` atomically, also when both are folders; a link at
    ``final`` is refused (:func:`io_adapters.output_safety.replace_onto`)."""
    return replace_onto(src, final)


def check_overwrite(final: Path, *, overwrite: bool) -> None:
    """An existing ``final`` needs ``overwrite`` and must be an output zssr wrote."""
    if os.path.lexists(final):
        if not overwrite:
            raise WriteError(f"{final}: output already exists; delete it or pass overwrite=True")
        check_replaceable(final)
