"""From a reader to the engine: value normalisation and windowed crop sources.

Nothing here loads a whole scene: the normaliser is fitted on a bounded
sample of windows, and the crop source serves the engine's father sampler
and its reconstruction-error windows by windowed reads of the file itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window as RioWindow

from io_adapters.base import Reader
from io_adapters.errors import InvalidDataError
from zssr.config import NormConfig
from zssr.normalize import NormalizationError, Normalizer
from zssr.sampling import Window, mirror_window, rescale_window

__all__ = ["SampleStats", "sample_stats", "ReaderCropSource", "sr_bands", "declared_range"]

log = logging.getLogger(__name__)

SAMPLE_WINDOWS = 16  # windows per frame for the normaliser fit
SAMPLE_SIZE = 256  # side of each sample window (pixels)


def sr_bands(meta) -> list[int]:
    """Band indexes that go through ZSSR (an alpha band is upsampled separately)."""
    alpha = meta.alpha_band
    return [b for b in range(meta.bands) if b != alpha]


def declared_range(meta) -> tuple[float, float] | None:
    """The value range a format declares beyond its dtype (DICOM BitsStored)."""
    med = meta.medical
    if med is not None and med.bits_stored and meta.dtype.kind in "ui":
        bits = int(med.bits_stored)
        if meta.dtype.kind == "u":
            return (0.0, float(2 ** bits - 1))
        return (float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1))
    return None


def _sample_windows(rows: int, cols: int, n: int, size: int) -> list[RioWindow]:
    if rows * cols <= n * size * size:
        return [RioWindow(0, 0, cols, rows)]
    k = int(np.ceil(np.sqrt(n)))
    h, w = min(size, rows), min(size, cols)
    out = []
    for i in range(k):
        for j in range(k):
            r = int(round(i * (rows - h) / max(k - 1, 1)))
            c = int(round(j * (cols - w) / max(k - 1, 1)))
            out.append(RioWindow(c, r, w, h))
    return out


@dataclass(frozen=True)
class SampleStats:
    normalizer: Normalizer
    fill: tuple[float, ...]  # per band, working units: replaces invalid pixels
    valid_fraction: float


def sample_stats(reader: Reader, bands: list[int], norm: NormConfig) -> SampleStats:
    """Fit the normaliser on a bounded grid of windows of every frame."""
    meta = reader.meta
    pix, masks = [], []
    frames = range(meta.frames) if meta.frames <= 8 else np.linspace(0, meta.frames - 1, 8,
                                                                      dtype=int)
    for f in frames:
        for win in _sample_windows(meta.rows, meta.cols, SAMPLE_WINDOWS, SAMPLE_SIZE):
            a = reader.read(win, frame=int(f))[bands]
            pix.append(a.reshape(len(bands), -1))
            masks.append(reader.read_mask(win, frame=int(f)).reshape(-1))
    sample = np.concatenate(pix, axis=1)[:, None, :]
    mask = np.concatenate(masks)[None, :]
    if sample.dtype.kind == "f":
        mask = mask & np.isfinite(sample).all(axis=0)
    if not mask.any():
        raise InvalidDataError(
            f"{meta.path}: no valid pixels in the sampled windows (every pixel is nodata, "
            "masked, NaN or infinite); nothing to super-resolve")
    try:
        normalizer = Normalizer.fit(sample, policy=norm.policy, percentiles=norm.percentiles,
                                    mask=mask, value_range=declared_range(meta))
    except NormalizationError as exc:
        raise InvalidDataError(f"{meta.path}: {exc}") from exc
    work = normalizer.forward(np.where(mask, sample, 0).astype(sample.dtype))
    fill = tuple(float(work[b][mask].mean()) for b in range(len(bands)))
    return SampleStats(normalizer, fill, float(mask.mean()))


class ReaderCropSource:
    """A :class:`zssr.sampling.CropSource` over a reader: windowed reads in working units.

    For a stack (several frames) each call draws the frame from its own seeded
    generator, so fathers come from every slice of a series.
    """

    def __init__(self, reader: Reader, bands: list[int], stats: SampleStats, *,
                 frames: list[int] | None = None, seed: int = 0) -> None:
        self.reader = reader
        self.bands = bands
        self.stats = stats
        self.frames = frames if frames is not None else list(range(reader.meta.frames))
        self.channels = len(bands)
        self.shape = (reader.meta.rows, reader.meta.cols)
        self._rng = np.random.default_rng(seed)
        self._fill = np.asarray(stats.fill, np.float32)[:, None, None]

    def read_working(self, window: RioWindow, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """``(pixels (C, h, w) float32 working units, valid (h, w))`` of one frame."""
        return self.working(self.reader.read(window, frame=frame),
                            self.reader.read_mask(window, frame=frame))

    def working(self, pixels: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`read_working` of pixels already read (every band of the reader) and their
        all-bands validity (``read_mask``, or ``read_masks(...).all(axis=0)``)."""
        raw = pixels[self.bands]
        if raw.dtype.kind == "f":
            valid = valid & np.isfinite(raw).all(axis=0)
            raw = np.where(np.isfinite(raw), raw, 0)
        work = self.stats.normalizer.forward(raw)
        if not valid.all():
            work = np.where(valid[None], work, self._fill)
        return work.astype(np.float32, copy=False), valid

    def __call__(self, window: Window, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        frame = self.frames[int(self._rng.integers(len(self.frames)))] if len(self.frames) > 1 \
            else self.frames[0]
        # read the part of the image the mirror-extended window draws on, then gather
        r, c = mirror_window(window, self.shape)
        r0, c0 = int(r.min()), int(c.min())
        win = RioWindow(c0, r0, int(c.max()) + 1 - c0, int(r.max()) + 1 - r0)
        pix, valid = self.read_working(win, frame)
        rr, cc = (r - r0)[:, None], (c - c0)[None, :]
        return rescale_window(pix[:, rr, cc], valid[rr, cc], window, scale)
