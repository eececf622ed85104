"""Exactly invertible value normalisation: raw data <-> float32 working range.

The network works on float32 values roughly in [0, 1].  A :class:`Normalizer`
maps each band with ``y = (x - offset) / span`` and back with
``x = y * span + offset`` (rounded and clipped for integer dtypes), so 16-bit
and float data come back in their own units and dtype:

>>> import numpy as np
>>> x = np.array([[[0, 1000, 65535]]], dtype=np.uint16)
>>> n = Normalizer.fit(x, policy="dtype")
>>> bool((n.inverse(n.forward(x)) == x).all())
True

Policies
--------
``dtype``       the declared range maps to [0, 1]: ``value_range`` when given (e.g. a
                DICOM's BitsStored range), else the dtype's range for integers, else
                the data's min/max.
``percentile``  per band, the ``percentiles`` of the valid pixels map to [0, 1].
``minmax``      per band, min and max of the valid pixels map to [0, 1].
``none``        identity (float data already in a working range).

``clip_range`` is the band's representable range in working units: the dtype's
limits for integers, the observed valid min/max for floats.  Outputs are
clipped to it, so they stay in the data's value range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import NormPolicy
from .errors import NormalizationError

__all__ = ["Normalizer", "NormalizationError"]


def _check_dtype(dtype: np.dtype) -> None:
    if dtype.kind not in "uif":
        raise NormalizationError(
            f"unsupported dtype {dtype}; expected an integer or real floating dtype")


@dataclass(frozen=True)
class Normalizer:
    dtype: np.dtype
    offset: tuple[float, ...]  # per band
    span: tuple[float, ...]  # per band, > 0
    lo: tuple[float, ...]  # per band, clip range in raw units
    hi: tuple[float, ...]

    @classmethod
    def fit(cls, image: np.ndarray, *, policy: NormPolicy = "dtype",
            percentiles: tuple[float, float] = (0.5, 99.5),
            mask: np.ndarray | None = None,
            value_range: tuple[float, float] | None = None) -> Normalizer:
        """Fit per-band parameters to ``image`` ``(C, H, W)``; ``mask`` (H, W) marks valid pixels.

        ``value_range`` declares the data's range (raw units) for every band, e.g. ``(0, 1)``
        or a 12-bit ``(0, 4095)``: it is the clip range, and policy ``dtype`` maps it to [0, 1].
        """
        image = np.asarray(image)
        if image.ndim != 3:
            raise NormalizationError(f"expected a (bands, rows, cols) array, got shape {image.shape}")
        dtype = image.dtype
        _check_dtype(dtype)
        bands = image.shape[0]
        valid = np.ones(image.shape[1:], bool) if mask is None else np.asarray(mask, bool)
        offsets, spans, los, his = [], [], [], []
        for b in range(bands):
            values = image[b][valid]
            if dtype.kind == "f":
                values = values[np.isfinite(values)]
            if values.size == 0:
                raise NormalizationError(f"band {b + 1} has no valid pixels")
            vmin, vmax = float(values.min()), float(values.max())
            if value_range is not None:
                lo, hi = float(value_range[0]), float(value_range[1])
            elif dtype.kind in "ui":
                lo, hi = float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)
            else:
                lo, hi = vmin, vmax
            if policy == "dtype":  # the declared range: value_range, else the dtype's, else data's
                off, top = lo, hi
            elif policy == "minmax":
                off, top = vmin, vmax
            elif policy == "percentile":
                p = np.percentile(values.astype(np.float64), percentiles)
                off, top = float(p[0]), float(p[1])
            elif policy == "none":
                off, top = 0.0, 1.0
            else:
                raise NormalizationError(f"unknown normalisation policy {policy!r}; allowed: "
                                         "dtype, percentile, minmax, none")
            span = top - off
            if not span > 0:
                span = 1.0  # constant band: shift only
            offsets.append(off)
            spans.append(span)
            los.append(lo)
            his.append(hi)
        return cls(np.dtype(dtype), tuple(offsets), tuple(spans), tuple(los), tuple(his))

    def _params(self, bands: int) -> tuple[np.ndarray, np.ndarray]:
        if bands != len(self.offset):
            raise NormalizationError(f"normaliser fitted for {len(self.offset)} bands, got {bands}")
        off = np.asarray(self.offset, np.float64)[:, None, None]
        span = np.asarray(self.span, np.float64)[:, None, None]
        return off, span

    def forward(self, image: np.ndarray) -> np.ndarray:
        """Raw ``(C, H, W)`` -> float32 working units."""
        off, span = self._params(image.shape[0])
        return ((np.asarray(image, np.float64) - off) / span).astype(np.float32)

    def inverse(self, work: np.ndarray) -> np.ndarray:
        """Working units ``(C, H, W)`` -> raw units in the original dtype (rounded, clipped)."""
        off, span = self._params(work.shape[0])
        raw = np.asarray(work, np.float64) * span + off
        lo = np.asarray(self.lo)[:, None, None]
        hi = np.asarray(self.hi)[:, None, None]
        raw = np.clip(raw, lo, hi)
        if self.dtype.kind in "ui":
            raw = np.rint(raw)
        return raw.astype(self.dtype)

    @property
    def clip_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-band ``(lo, hi)`` of the data's value range in working units, shape (C,)."""
        off = np.asarray(self.offset)
        span = np.asarray(self.span)
        return ((np.asarray(self.lo) - off) / span).astype(np.float32), \
            ((np.asarray(self.hi) - off) / span).astype(np.float32)
