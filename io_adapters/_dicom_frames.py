"""Per-frame DICOM records: geometry, functional groups, series order, value range.

Private helper of :mod:`io_adapters.dicom`.  Everything here works on
header datasets (no pixel data) and plain numbers, so it is cheap to test.

Conventions (DICOM PS3.3 C.7.6.2): ``ImageOrientationPatient`` holds the
row direction (the direction in which the column index grows) followed by the
column direction; ``PixelSpacing`` is ``(row spacing, column spacing)``, i.e.
the distance between neighbouring rows, then between neighbouring columns;
``ImagePositionPatient`` is the centre of the first (top-left) pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from .base import Metadata
from .errors import InvalidDataError

__all__ = ["DicomFrame", "frames_of", "from_real_units", "order_series", "scaled_frame",
           "stored_range", "to_real_units"]

# Relative deviation of one slice gap from the median gap that we call a hole.
_GAP_TOLERANCE = 0.10
# Two slices closer than this along the normal (mm) share a position.
_DUPLICATE_MM = 1e-3


@dataclass(frozen=True)
class DicomFrame:
    """Geometry and value mapping of one frame (one 2-D image) of a reader.

    ``source`` indexes the file the frame lives in (``meta.medical.sources``),
    ``index`` is the frame number inside that file (0 for single-frame files).
    """

    source: int
    index: int
    position: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float, float, float] | None
    spacing: tuple[float, float] | None  # (row spacing, column spacing) in mm
    slice_thickness: float | None
    slope: float = 1.0
    intercept: float = 0.0


def _floats(value: object, count: int) -> tuple[float, ...] | None:
    """``count`` floats from a DICOM multi-value, or None when absent/malformed."""
    if value is None or value == "":
        return None
    try:
        values = tuple(float(v) for v in (value if isinstance(value, Sequence) and
                                          not isinstance(value, str) else [value]))
    except (TypeError, ValueError):
        return None
    if len(values) != count or not all(math.isfinite(v) for v in values):
        return None
    return values


def _float(value: object, default: float | None) -> float | None:
    got = _floats(value, 1)
    return default if got is None else got[0]


def _group_item(ds: Dataset, frame: int, keyword: str) -> Dataset | None:
    """The functional-group macro ``keyword`` for ``frame``: per-frame first, then shared."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        seq = per_frame[frame].get(keyword)
        if seq:
            return seq[0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        seq = shared[0].get(keyword)
        if seq:
            return seq[0]
    return None


def _attr(ds: Dataset, frame: int, macro: str, keyword: str) -> object:
    """``keyword`` from the frame's ``macro`` functional group, else the top level."""
    item = _group_item(ds, frame, macro)
    if item is not None and keyword in item:
        return item.get(keyword)
    return ds.get(keyword)


# Spacing attributes the writer scales (see _dicom_derive): each must be (row, col) mm.
_SPACINGS = ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing")


def _check_spacing(where: str, keyword: str, value: object) -> None:
    if value is None or value == "":
        return
    got = _floats(value, 2)
    if got is None or min(got) <= 0:
        raise InvalidDataError(
            f"{where}: {keyword} {_shown(value)} is not two positive numbers (row and column "
            "spacing in mm); fix or remove the attribute")


def _check_orientation(where: str, value: object) -> None:
    """ImageOrientationPatient: two orthogonal unit vectors (PS3.3 C.7.6.2.1.1)."""
    if value is None or value == "":
        return
    got = _floats(value, 6)
    ok = got is not None
    if got is not None:
        row, col = np.asarray(got[:3]), np.asarray(got[3:])
        ok = (abs(np.linalg.norm(row) - 1) < 1e-2 and abs(np.linalg.norm(col) - 1) < 1e-2
              and abs(float(np.dot(row, col))) < 1e-2)
    if not ok:
        raise InvalidDataError(
            f"{where}: ImageOrientationPatient {_shown(value)} is not two orthogonal unit "
            "vectors (row and column direction cosines); fix or remove the attribute")


def _shown(value: object) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return repr(value)


def frames_of(ds: Dataset, *, source: int, frames: int,
              where: str = "") -> tuple[DicomFrame, ...]:
    """One :class:`DicomFrame` per frame of a file's header ``ds``.

    Enhanced multi-frame objects keep geometry and rescale in functional
    groups (per-frame overrides shared); other objects keep them at the top
    level, which then holds for every frame.  A spacing that is present but not two
    positive numbers, or an orientation that is not two orthogonal unit vectors,
    raises :class:`InvalidDataError` naming ``where`` (the file) at once: the writer
    would fail on it only after the whole computation.
    """
    where = where or str(getattr(ds, "filename", "") or "DICOM header")
    for keyword in _SPACINGS:
        _check_spacing(where, keyword, ds.get(keyword))
    result = []
    for i in range(frames):
        _check_spacing(where, "PixelSpacing", _attr(ds, i, "PixelMeasuresSequence",
                                                    "PixelSpacing"))
        _check_orientation(where, _attr(ds, i, "PlaneOrientationSequence",
                                        "ImageOrientationPatient"))
        spacing = _floats(_attr(ds, i, "PixelMeasuresSequence", "PixelSpacing"), 2)
        if spacing is None:
            spacing = _floats(ds.get("ImagerPixelSpacing"), 2)
        result.append(DicomFrame(
            source=source,
            index=i,
            position=_floats(_attr(ds, i, "PlanePositionSequence", "ImagePositionPatient"), 3),
            orientation=_floats(
                _attr(ds, i, "PlaneOrientationSequence", "ImageOrientationPatient"), 6),
            spacing=spacing,
            slice_thickness=_float(_attr(ds, i, "PixelMeasuresSequence", "SliceThickness"), None),
            slope=_float(_attr(ds, i, "PixelValueTransformationSequence", "RescaleSlope"), 1.0),
            intercept=_float(
                _attr(ds, i, "PixelValueTransformationSequence", "RescaleIntercept"), 0.0),
        ))
    return tuple(result)  # type: ignore[arg-type]


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal of the image plane: row direction x column direction."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, col)
    norm = float(np.linalg.norm(normal))
    return normal / norm if norm > 0 else normal


def order_series(folder: Path, names: Sequence[str], headers: Sequence[Dataset],
                 frames: Sequence[DicomFrame]) -> list[int]:
    """Indices that put the slices of a folder in anatomical order.

    Slices are sorted by ``ImagePositionPatient`` projected on the common slice
    normal; when any slice lacks position or orientation, by ``InstanceNumber``.
    Raises :class:`InvalidDataError` for duplicate positions, irregular gaps
    (a missing slice) or slices that cannot be ordered.
    """
    if len(headers) == 1:
        return [0]
    if all(f.position is not None and f.orientation is not None for f in frames):
        return _order_by_position(folder, names, frames)
    numbers = [_float(h.get("InstanceNumber"), None) for h in headers]
    if any(n is None for n in numbers):
        raise InvalidDataError(
            f"{folder}: cannot order the slices: some lack ImagePositionPatient/"
            "ImageOrientationPatient and InstanceNumber")
    order = sorted(range(len(headers)), key=lambda i: numbers[i])  # type: ignore[arg-type]
    for a, b in zip(order, order[1:], strict=False):
        if numbers[a] == numbers[b]:
            raise InvalidDataError(
                f"{folder}: slices {names[a]} and {names[b]} share InstanceNumber "
                f"{numbers[a]:g} and have no position; remove the duplicate")
    return order


def _order_by_position(folder: Path, names: Sequence[str],
                       frames: Sequence[DicomFrame]) -> list[int]:
    first = frames[0].orientation
    for name, frame in zip(names, frames, strict=True):
        if not np.allclose(frame.orientation, first, atol=1e-4):  # type: ignore[arg-type]
            raise InvalidDataError(
                f"{folder}: slice {name} has ImageOrientationPatient {frame.orientation}, "
                f"others {first}; a series must share one orientation")
    normal = slice_normal(first)  # type: ignore[arg-type]
    depth = [float(np.dot(normal, f.position)) for f in frames]  # type: ignore[arg-type]
    order = sorted(range(len(frames)), key=lambda i: depth[i])
    gaps = [depth[b] - depth[a] for a, b in zip(order, order[1:], strict=False)]
    for (a, b), gap in zip(zip(order, order[1:], strict=False), gaps, strict=True):
        if gap < _DUPLICATE_MM:
            raise InvalidDataError(
                f"{folder}: slices {names[a]} and {names[b]} share the position "
                f"{depth[a]:.3f} mm along the slice normal; remove the duplicate")
    median = float(np.median(gaps))
    for (a, b), gap in zip(zip(order, order[1:], strict=False), gaps, strict=True):
        if abs(gap - median) > _GAP_TOLERANCE * median:
            raise InvalidDataError(
                f"{folder}: irregular slice spacing: {gap:.3f} mm between {names[a]} and "
                f"{names[b]}, median {median:.3f} mm (missing slice?)")
    return order


def scaled_frame(frame: DicomFrame, *, row_scale: float, col_scale: float) -> DicomFrame:
    """The frame's geometry after resampling by ``(row_scale, col_scale)``.

    Spacing is divided by the scale.  The new first pixel is the top-left
    sub-pixel of the old first pixel, so its centre moves by
    ``-(1 - 1/s) / 2`` old pixels along the row and column directions.
    """
    if frame.spacing is None:
        return frame
    row_spacing, col_spacing = frame.spacing
    spacing = (row_spacing / row_scale, col_spacing / col_scale)
    position = frame.position
    if position is not None and frame.orientation is not None:
        row_dir = np.asarray(frame.orientation[:3], float)
        col_dir = np.asarray(frame.orientation[3:], float)
        shift = (-(1.0 - 1.0 / col_scale) / 2.0 * col_spacing * row_dir
                 - (1.0 - 1.0 / row_scale) / 2.0 * row_spacing * col_dir)
        position = tuple(float(v) for v in np.asarray(position, float) + shift)  # type: ignore[assignment]
    return replace(frame, spacing=spacing, position=position)


def stored_range(meta: Metadata) -> tuple[int, int]:
    """Smallest and largest stored value allowed by ``BitsStored`` and the dtype's sign."""
    bits = (meta.medical.bits_stored if meta.medical and meta.medical.bits_stored
            else meta.dtype.itemsize * 8)
    if meta.dtype.kind == "i":
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _frame_rescale(meta: Metadata, frame: int) -> tuple[float, float]:
    frames = meta.extra.get("dicom_frames")
    if frames:
        return frames[frame].slope, frames[frame].intercept
    medical = meta.medical
    return (medical.rescale_slope, medical.rescale_intercept) if medical else (1.0, 0.0)


def to_real_units(stored: np.ndarray, meta: Metadata, *, frame: int = 0) -> np.ndarray:
    """Real-world values ``stored * RescaleSlope + RescaleIntercept`` as float32."""
    slope, intercept = _frame_rescale(meta, frame)
    return (np.asarray(stored, dtype=np.float64) * slope + intercept).astype(np.float32)


def from_real_units(values: np.ndarray, meta: Metadata, *, frame: int = 0) -> np.ndarray:
    """Stored values in ``meta.dtype``: inverse rescale, rounded, clipped to ``BitsStored``."""
    slope, intercept = _frame_rescale(meta, frame)
    if slope == 0:
        raise InvalidDataError(f"{meta.path}: frame {frame} has RescaleSlope 0; cannot invert")
    lo, hi = stored_range(meta)
    stored = np.rint((np.asarray(values, dtype=np.float64) - intercept) / slope)
    return np.clip(np.nan_to_num(stored, nan=0.0), lo, hi).astype(meta.dtype)

