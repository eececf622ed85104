"""OME-Zarr 0.5 (NGFF) image metadata of a medical Zarr output: axes, pyramid, display window.

Layout written by :class:`io_adapters.zarr_store.ZarrWriter` for medical data::

    band_data        (c, y, x) one slice, (c, z, y, x) a stack; full resolution
    pyramid/1, /2... the same, y and x halved each level (ceil), while the last
                     level's smaller side is >= ``min_side`` (256); mean of the
                     valid pixels of each 2 x 2 block, nodata where none is valid

``ome.multiscales[0]``: axes ``c`` (channel), ``z``/``y``/``x`` (space, millimetre when
the pixel spacing is known); each level's ``scale`` is the pixel spacing (slice gap for
``z``) times ``2**k`` in y/x and its ``translation`` the centre of its first pixel: the
first DICOM pixel's position along the slice normal, column and row directions, plus
``(2**k - 1) / 2`` level-0 pixels in y/x.  Axis names equal the arrays' ``dimension_names``.

``ome.omero``: one channel per band; ``window.min``/``max`` is the data range,
``start``/``end`` the DICOM WindowCenter/Width when the source has one, else the data
range.  Values are the *stored* DICOM values (lossless, what :class:`ZarrReader` reads
back), so the DICOM window (in rescaled units, HU for CT) is converted with
``(v - intercept) / slope``; the rescale itself is written as CF ``scale_factor`` /
``add_offset`` (``units: HU`` for CT) on ``band_data``, where xarray decodes it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from .base import MedicalInfo, Metadata
from .zarr_reader import DATA

__all__ = ["MIN_SIDE", "PYRAMID", "ome_dims", "level_shapes", "halve", "finish_ome",
           "rescale_attrs"]

MIN_SIDE = 256  # halve y/x while the smaller side of the last level is at least this
PYRAMID = "pyramid"  # the subgroup of the downsampled levels (xarray opens the root alone)


def ome_dims(frames: int) -> tuple[str, ...]:
    """NGFF axis names (= ``dimension_names``): channel first, then space."""
    return ("c", "z", "y", "x") if frames > 1 else ("c", "y", "x")


def level_shapes(shape: tuple[int, ...], min_side: int | None) -> list[tuple[int, ...]]:
    """Shapes of the pyramid levels: level 0 then y/x halved (ceil) while the last level's
    smaller side is >= ``min_side``; ``None``: level 0 alone."""
    shapes = [tuple(shape)]
    while min_side is not None and min(shapes[-1][-2:]) >= min_side:
        *lead, h, w = shapes[-1]
        shapes.append((*lead, -(-h // 2), -(-w // 2)))
    return shapes


def _image_origin(meta: Metadata) -> tuple[float, float, float]:
    """(z, y, x) of the first pixel along the slice normal, column and row directions."""
    med = meta.medical
    if med is None or not med.orientation or not med.positions:
        return (0.0, 0.0, 0.0)
    row_dir = np.asarray(med.orientation[:3], dtype=float)  # along a row: +x
    col_dir = np.asarray(med.orientation[3:6], dtype=float)  # down a column: +y
    p0 = np.asarray(med.positions[0], dtype=float)
    normal = np.cross(row_dir, col_dir)
    return float(p0 @ normal), float(p0 @ col_dir), float(p0 @ row_dir)


def _multiscale(meta: Metadata, med: MedicalInfo, dims: tuple[str, ...], name: str,
                levels: int) -> dict:
    dy, dx = med.pixel_spacing or (1.0, 1.0)
    z0, y0, x0 = _image_origin(meta)
    dz = med.slice_thickness or 1.0
    if len(med.positions) > 1:
        dz = float(np.linalg.norm(np.subtract(med.positions[1], med.positions[0]))) or dz
    unit = {"unit": "millimeter"} if med.pixel_spacing else {}
    by_dim = {"c": ({"name": "c", "type": "channel"}, 1.0, 0.0),
              "z": ({"name": "z", "type": "space", **unit}, dz, z0),
              "y": ({"name": "y", "type": "space", **unit}, dy, y0),
              "x": ({"name": "x", "type": "space", **unit}, dx, x0)}
    axes, scale, translation = zip(*(by_dim[d] for d in dims), strict=True)
    datasets = []
    for k in range(levels):
        f = 2 ** k
        s = [*scale[:-2], scale[-2] * f, scale[-1] * f]
        t = [*translation[:-2], translation[-2] + (f - 1) / 2 * scale[-2],
             translation[-1] + (f - 1) / 2 * scale[-1]]
        datasets.append({"path": DATA if k == 0 else f"{PYRAMID}/{k}",
                         "coordinateTransformations": [{"type": "scale", "scale": s},
                                                       {"type": "translation",
                                                        "translation": t}]})
    return {"name": name, "axes": list(axes), "datasets": datasets, "type": "local_mean",
            "metadata": {"description": "each level: mean of the valid pixels of each "
                                        "2 x 2 block of the one above (zssr)"}}


def _as_float(block: np.ndarray, nodata: float | None) -> np.ndarray:
    """``block`` as float64 with NaN at invalid pixels (NaN or nodata)."""
    work = block.astype(np.float64)
    if nodata is not None and not np.isnan(nodata):
        work[work == nodata] = np.nan
    return work


def halve(work: np.ndarray, dtype: np.dtype, nodata: float | None) -> np.ndarray:
    """Mean of each 2 x 2 block of the last two axes of ``work`` (float, NaN = invalid),
    over its valid pixels; an odd last row/column averages what it has.  A block with no
    valid pixel becomes nodata (0 for integers without one).  Integers are rounded."""
    h, w = work.shape[-2:]
    pad = [(0, 0)] * (work.ndim - 2) + [(0, h % 2), (0, w % 2)]
    work = np.pad(work, pad, constant_values=np.nan)
    blocks = work.reshape(*work.shape[:-2], (h + 1) // 2, 2, (w + 1) // 2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice": no valid
        mean = np.nanmean(blocks, axis=(-3, -1))
    if dtype.kind == "f":
        return np.where(np.isnan(mean), np.nan if nodata is None else nodata, mean
                        ).astype(dtype)
    info = np.iinfo(dtype)
    mean = np.clip(np.rint(mean), info.min, info.max)
    return np.where(np.isnan(mean), 0 if nodata is None else nodata, mean).astype(dtype)


def _level_pass(src: Any, dst: Any | None, nodata: float | None) -> np.ndarray:
    """Fill ``dst`` with ``src`` halved, strip by strip; returns ``src``'s valid range per
    band, ``(bands, 2)`` (NaN for a band with no valid pixel)."""
    bands, rows = src.shape[0], 2 * src.chunks[-2]
    lo, hi = np.full(bands, np.inf), np.full(bands, -np.inf)
    for f in range(src.shape[1]) if src.ndim == 4 else [None]:
        for r0 in range(0, src.shape[-2], rows):
            lead = (slice(None),) if f is None else (slice(None), f)
            work = _as_float(np.asarray(src[(*lead, slice(r0, r0 + rows))]), nodata)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN strip of a band
                lo = np.fmin(lo, np.nanmin(work.reshape(bands, -1), axis=1, initial=np.inf))
                hi = np.fmax(hi, np.nanmax(work.reshape(bands, -1), axis=1, initial=-np.inf))
            if dst is not None:
                dst[(*lead, slice(r0 // 2, (r0 + rows) // 2))] = halve(work, dst.dtype, nodata)
    return np.where((np.isfinite(lo) & np.isfinite(hi))[:, None], np.stack([lo, hi], axis=1),
                    np.nan)


def _number(value: Any) -> float | None:
    """The first value of a DICOM (multi-)value as a finite float, else None."""
    if value is not None and not isinstance(value, (str, bytes)) and hasattr(value, "__iter__"):
        value = next(iter(value), None)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def dicom_window(meta: Metadata, med: MedicalInfo) -> tuple[float, float] | None:
    """The source's WindowCenter/Width as (start, end) in stored values, else None."""
    ds = meta.extra.get("dataset")
    voi = ds
    try:
        if ds is not None and getattr(ds, "WindowCenter", None) is None:
            voi = ds.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
    except (AttributeError, IndexError, TypeError):
        return None
    center = _number(getattr(voi, "WindowCenter", None))
    width = _number(getattr(voi, "WindowWidth", None))
    slope, intercept = med.rescale_slope or 1.0, med.rescale_intercept or 0.0
    if center is None or width is None or width <= 0:
        return None
    a, b = ((center - width / 2) - intercept) / slope, ((center + width / 2) - intercept) / slope
    return min(a, b), max(a, b)


def _omero(meta: Metadata, med: MedicalInfo, ranges: np.ndarray) -> dict:
    rgb = meta.bands == 3 and med.photometric.upper().startswith(("RGB", "YBR"))
    colors = ("FF0000", "00FF00", "0000FF") if rgb else ("FFFFFF",) * meta.bands
    dtype = np.dtype(meta.dtype)
    full = (np.iinfo(dtype).min, np.iinfo(dtype).max) if dtype.kind in "iu" else (0.0, 1.0)
    window = dicom_window(meta, med)
    channels = []
    for i in range(meta.bands):
        lo, hi = full if np.isnan(ranges[i]).any() else ranges[i]
        start, end = window or (lo, hi)
        channels.append({"label": meta.band_names[i] if i < len(meta.band_names) else str(i),
                         "color": colors[i], "active": True, "coefficient": 1.0,
                         "family": "linear", "inverted": med.photometric == "MONOCHROME1",
                         "window": {"min": float(lo), "max": float(hi),
                                    "start": float(start), "end": float(end)}})
    return {"channels": channels, "rdefs": {"model": "color" if rgb else "greyscale"}}


def finish_ome(group: Any, meta: Metadata, med: MedicalInfo, dims: tuple[str, ...], *,
               name: str, min_side: int | None) -> None:
    """Build the pyramid of ``group[DATA]`` and write the group's ``ome`` attributes.

    A store with no chunk written yet (a pipeline work store, committed before its
    workers fill it) gets level 0 alone and a window from the DICOM one or the dtype.
    """
    base = group[DATA]
    written = base.nchunks_initialized > 0
    shapes = level_shapes(base.shape, min_side if written else None)
    ranges = np.full((meta.bands, 2), np.nan)
    src = base
    for k, shape in enumerate(shapes[1:], start=1):
        dst = group.require_group(PYRAMID).create_array(
            str(k), shape=shape, chunks=base.chunks, dtype=base.dtype,
            fill_value=base.fill_value, compressors=base.compressors, dimension_names=dims)
        got = _level_pass(src, dst, meta.nodata)
        ranges, src = (got if k == 1 else ranges), dst
    if written and len(shapes) == 1:
        ranges = _level_pass(base, None, meta.nodata)
    ome = {"version": "0.5", "multiscales": [_multiscale(meta, med, dims, name, len(shapes))],
           "omero": _omero(meta, med, ranges)}
    group.update_attributes({"ome": ome})


def rescale_attrs(med: MedicalInfo) -> dict[str, Any]:
    """CF ``scale_factor``/``add_offset`` (and ``units: HU`` for CT) of the stored values."""
    slope, intercept = med.rescale_slope or 1.0, med.rescale_intercept or 0.0
    if (slope, intercept) == (1.0, 0.0):
        return {}
    units = {"units": "HU"} if med.modality.upper() == "CT" else {}
    return {"scale_factor": float(slope), "add_offset": float(intercept), **units}
