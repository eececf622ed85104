"""The built-in preprocessing steps (see :mod:`pipeline.steps.base` for the contract).

Each class is a frozen dataclass of its parameters; its docstring's first
line is what ``zssr steps`` shows.  Steps with an exact inverse bring the
super-resolved values back to the input's units and dtype (rounding to the
source dtype, clipping to its range); the others (band selection, clipping,
denoising) are left as they are in the output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from io_adapters.base import Metadata
from io_adapters.errors import InvalidDataError

from .base import Sample, Step, check, param, restore_values
from .dicom import InvertMonochrome1, ModalityLut

__all__ = ["BUILTIN_STEPS", "subset_bands", "restore_values"]

_F32 = np.dtype("float32")


def _pick(values: tuple, idx: tuple[int, ...], total: int) -> tuple:
    return tuple(values[i] for i in idx) if len(values) == total else values


def subset_bands(meta: Metadata, idx: tuple[int, ...]) -> Metadata:
    """Metadata of the bands ``idx`` (0-based) of ``meta``: per-band fields follow."""
    geo = meta.geo
    if geo is not None:
        geo = replace(geo, colorinterp=_pick(geo.colorinterp, idx, meta.bands),
                      scales=_pick(geo.scales, idx, meta.bands),
                      offsets=_pick(geo.offsets, idx, meta.bands),
                      units=_pick(geo.units, idx, meta.bands),
                      band_tags=_pick(geo.band_tags, idx, meta.bands))
    extra = dict(meta.extra)
    alpha = meta.alpha_band
    alpha_band = idx.index(alpha) if alpha is not None and alpha in idx else None
    if isinstance(extra.get("colorinterp"), tuple):
        extra["colorinterp"] = _pick(extra["colorinterp"], idx, meta.bands)
    return replace(meta, bands=len(idx), band_names=_pick(meta.band_names, idx, meta.bands),
                   geo=geo, extra=extra, alpha_band=alpha_band)


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip to an integer dtype's range, or cast to a float dtype."""
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(np.nan_to_num(values)), info.min, info.max).astype(dtype)
    return np.asarray(values).astype(dtype)


def _valid_values(samples: list[Sample], band: int) -> np.ndarray:
    vals = [a[band][m[band]] for a, m, _ in samples]
    out = np.concatenate(vals).astype(np.float64) if vals else np.zeros(0)
    return out[np.isfinite(out)]


@dataclass(frozen=True)
class SelectBands(Step):
    """Keep the given bands (1-based, like GDAL and --bands), in that order."""

    name = "select_bands"
    bands: tuple[int, ...] = param((), "1-based band numbers to keep, e.g. [2, 3, 4, 8]")

    def validate(self) -> None:
        check(len(self.bands) > 0 and all(b >= 1 for b in self.bands), self.name, "bands",
              list(self.bands), "a non-empty list of band numbers >= 1")

    def _idx(self, meta: Metadata) -> tuple[int, ...]:
        if max(self.bands) > meta.bands:
            raise InvalidDataError(f"{meta.path}: select_bands {list(self.bands)}: the image has "
                                   f"{meta.bands} band(s); choose numbers 1..{meta.bands}")
        return tuple(b - 1 for b in self.bands)

    def out_meta(self, meta):
        return subset_bands(meta, self._idx(meta))

    def forward(self, array, masks, meta, frame):
        idx = list(self._idx(meta))
        return array[idx], masks[idx]


@dataclass(frozen=True)
class MaskNodata(Step):
    """Mark pixels equal to a nodata value (and NaN) invalid; the output keeps that nodata."""

    name = "mask_nodata"
    value: float | None = param(None, "nodata value in the input's units (null: the file's own)")
    exact_inverse = True

    def _value(self, meta: Metadata) -> float | None:
        return self.value if self.value is not None else meta.nodata

    def out_meta(self, meta):
        value = self._value(meta)
        return meta if value is None else replace(meta, nodata=value, has_mask=True)

    def forward(self, array, masks, meta, frame):
        value = self._value(meta)
        masks = masks.copy()
        if value is not None and not math.isnan(value):
            masks &= array != value
        if array.dtype.kind == "f":
            masks &= np.isfinite(array)
        return array, masks


@dataclass(frozen=True)
class FillNodata(Step):
    """Replace invalid pixels by a value (optionally treating them as valid data)."""

    name = "fill_nodata"
    value: float = param(0.0, "value given to invalid pixels (input's units)")
    mark_valid: bool = param(False, "true: filled pixels count as valid data for SR")

    def out_meta(self, meta):
        return replace(meta, nodata=None, has_mask=False) if self.mark_valid else meta

    def forward(self, array, masks, meta, frame):
        out = np.where(masks, array, np.asarray(self.value).astype(array.dtype))
        return out, (np.ones_like(masks) if self.mark_valid else masks)


@dataclass(frozen=True)
class Reflectance(Step):
    """Digital numbers to reflectance, ``DN * scale + offset`` (float32); exact inverse.

    Sentinel-2 L1C/L2A of processing baseline >= 04.00: ``(DN - 1000) / 10000``,
    i.e. ``scale: 0.0001, offset: -0.1``; Landsat Collection 2 Level-2 surface
    reflectance: ``scale: 0.0000275, offset: -0.2``.  ``from_metadata: true``
    takes per-band scales and offsets from the file (GDAL band scale/offset).
    """

    name = "reflectance"
    scale: float = param(1e-4, "multiplier of the digital numbers")
    offset: float = param(0.0, "added after scaling (Sentinel-2 >= 04.00: -0.1)")
    from_metadata: bool = param(False, "use the file's per-band scale/offset instead")
    exact_inverse = True

    def validate(self) -> None:
        check(self.scale != 0, self.name, "scale", self.scale, "a non-zero number")

    def _params(self, meta: Metadata) -> tuple[np.ndarray, np.ndarray]:
        if self.from_metadata:
            geo = meta.geo
            if geo is None or len(geo.scales) != meta.bands or not all(geo.scales):
                raise InvalidDataError(f"{meta.path}: reflectance from_metadata: the file has "
                                       "no per-band scale/offset; give scale and offset")
            s, o = np.asarray(geo.scales, np.float64), np.asarray(geo.offsets, np.float64)
        else:
            s = np.full(meta.bands, self.scale)
            o = np.full(meta.bands, self.offset)
        return s[:, None, None], o[:, None, None]

    def out_meta(self, meta):
        s, o = self._params(meta)
        nodata = None if meta.nodata is None else float(
            _F32.type(meta.nodata * s.flat[0] + o.flat[0]))
        geo = meta.geo
        if geo is not None and geo.scales:
            geo = replace(geo, scales=(1.0,) * len(geo.scales), offsets=(0.0,) * len(geo.scales))
        return replace(meta, dtype=_F32, nodata=nodata, geo=geo)

    def forward(self, array, masks, meta, frame):
        s, o = self._params(meta)
        return (array.astype(np.float64) * s + o).astype(_F32), masks

    def inverse(self, array, masks, meta, *, source, frame=0):
        s, o = self._params(source)
        return _to_dtype((array.astype(np.float64) - o) / s, source.dtype), masks

    def inverse_meta(self, meta, *, source):
        return restore_values(meta, source)


@dataclass(frozen=True)
class Normalize(Step):
    """Map each band to [0, 1] float32 by its dtype range, percentiles or min/max; exact inverse."""

    name = "normalize"
    method: Literal["dtype", "percentile", "minmax"] = param(
        "dtype", "dtype: the type's range (floats: min/max); percentile; minmax")
    percentiles: tuple[float, float] = param((0.5, 99.5), "low and high percentile")
    _offset: tuple[float, ...] = ()
    _span: tuple[float, ...] = ()
    exact_inverse = True

    def validate(self) -> None:
        lo, hi = self.percentiles
        check(0 <= lo < hi <= 100, self.name, "percentiles", list(self.percentiles),
              "two numbers 0 <= lo < hi <= 100")

    def fit(self, samples, meta):
        offs, spans = [], []
        for b in range(meta.bands):
            vals = _valid_values(samples, b)
            if self.method == "dtype" and meta.dtype.kind in "ui":
                info = np.iinfo(meta.dtype)
                lo, hi = float(info.min), float(info.max)
            elif vals.size == 0:
                lo, hi = 0.0, 1.0
            elif self.method == "percentile":
                lo, hi = (float(v) for v in np.percentile(vals, self.percentiles))
            else:
                lo, hi = float(vals.min()), float(vals.max())
            offs.append(lo)
            spans.append(hi - lo if hi > lo else 1.0)
        return replace(self, _offset=tuple(offs), _span=tuple(spans))

    def _params(self, bands: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self._offset) != bands:
            raise RuntimeError("normalize: not fitted for this image")  # programming error
        return (np.asarray(self._offset)[:, None, None], np.asarray(self._span)[:, None, None])

    def out_meta(self, meta):
        return replace(meta, dtype=_F32, nodata=None if meta.nodata is None else float("nan"))

    def forward(self, array, masks, meta, frame):
        off, span = self._params(array.shape[0])
        return ((array.astype(np.float64) - off) / span).astype(_F32), masks

    def inverse(self, array, masks, meta, *, source, frame=0):
        off, span = self._params(array.shape[0])
        return _to_dtype(array.astype(np.float64) * span + off, source.dtype), masks

    def inverse_meta(self, meta, *, source):
        return restore_values(meta, source)


def _clip(array: np.ndarray, lo, hi) -> np.ndarray:
    if array.dtype.kind in "ui":
        info = np.iinfo(array.dtype)
        lo = np.maximum(np.ceil(np.asarray(lo, np.float64)), info.min)
        hi = np.minimum(np.floor(np.asarray(hi, np.float64)), info.max)
    return np.clip(array, lo, hi).astype(array.dtype)


@dataclass(frozen=True)
class Clip(Step):
    """Clip values to [min, max] (e.g. CT to -1024..3071 HU)."""

    name = "clip"
    min: float | None = param(None, "lower bound (null: none)")
    max: float | None = param(None, "upper bound (null: none)")

    def validate(self) -> None:
        check(self.min is None or self.max is None or self.min < self.max, self.name, "max",
              self.max, f"a number > min ({self.min})")

    def forward(self, array, masks, meta, frame):
        lo = -np.inf if self.min is None else self.min
        hi = np.inf if self.max is None else self.max
        return _clip(array, lo, hi), masks


@dataclass(frozen=True)
class ClipToInput(Step):
    """After SR: clip each band to the input's valid range (observed min/max, or its dtype's)."""

    name = "clip_to_input"
    range: Literal["observed", "dtype"] = param(
        "observed", "observed: min/max of the input's valid pixels; dtype: the type's range")
    _lo: tuple[float, ...] = ()
    _hi: tuple[float, ...] = ()

    def fit(self, samples, meta):
        lo, hi = [], []
        for b in range(meta.bands):
            vals = _valid_values(samples, b)
            if self.range == "dtype" and meta.dtype.kind in "ui":
                info = np.iinfo(meta.dtype)
                lo.append(float(info.min))
                hi.append(float(info.max))
            else:
                lo.append(float(vals.min()) if vals.size else -np.inf)
                hi.append(float(vals.max()) if vals.size else np.inf)
        return replace(self, _lo=tuple(lo), _hi=tuple(hi))

    def forward(self, array, masks, meta, frame):
        if len(self._lo) != array.shape[0]:
            raise RuntimeError("clip_to_input: not fitted for this image")  # programming error
        lo = np.asarray(self._lo)[:, None, None]
        hi = np.asarray(self._hi)[:, None, None]
        return _clip(array, lo, hi), masks


@dataclass(frozen=True)
class Denoise(Step):
    """Denoise each band before SR with a local scikit-image filter (Gaussian or median).

    Both filters are local with a known radius, so tiles equal the whole image
    (global or data-adaptive filters such as TV or bilateral are not offered).
    The Gaussian ignores invalid pixels (normalised convolution).
    """

    name = "denoise"
    method: Literal["gaussian", "median"] = param("gaussian", "gaussian or median")
    sigma: float = param(1.0, "Gaussian std in pixels (radius = round(4 * sigma))")
    size: int = param(3, "median window side (odd; radius = size // 2)")
    pointwise = False

    def validate(self) -> None:
        check(0 < self.sigma <= 16, self.name, "sigma", self.sigma, "a number in (0, 16]")
        check(self.size >= 3 and self.size % 2 == 1 and self.size <= 33, self.name, "size",
              self.size, "an odd integer in [3, 33]")

    @property
    def radius(self) -> int:
        return int(4.0 * self.sigma + 0.5) if self.method == "gaussian" else self.size // 2

    def forward(self, array, masks, meta, frame):
        from skimage import filters

        out = np.empty(array.shape, np.float64)
        for b in range(array.shape[0]):
            band = array[b].astype(np.float64)
            if self.method == "median":
                fp = np.ones((self.size, self.size), bool)
                out[b] = filters.median(band, footprint=fp, mode="nearest")
                continue
            m = masks[b].astype(np.float64)
            num = filters.gaussian(np.where(masks[b], band, 0.0), sigma=self.sigma,
                                   mode="nearest", preserve_range=True, truncate=4.0)
            den = filters.gaussian(m, sigma=self.sigma, mode="nearest", preserve_range=True,
                                   truncate=4.0)
            out[b] = np.where(masks[b] & (den > 1e-12), num / np.maximum(den, 1e-12), band)
        return _to_dtype(out, array.dtype), masks


BUILTIN_STEPS: tuple[type[Step], ...] = (
    SelectBands, MaskNodata, FillNodata, Reflectance, Normalize, ModalityLut,
    InvertMonochrome1, Clip, ClipToInput, Denoise)
