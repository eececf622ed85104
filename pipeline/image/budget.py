"""The work one image job declares, checked and announced before any pixel is read.

:func:`check_budget` takes the input's *header* (its :class:`Metadata`) and
the job's settings and

* refuses a declared size over ``max_pixels`` (``--max-pixels``; the rule is
  :func:`io_adapters.detect.check_declared_size`, one place for every caller);
* refuses more than :data:`MAX_TILES` tiles (a tiny ``--tile`` on a large
  scene), naming ``--tile``;
* logs, for a job of :data:`LARGE_JOB_TILES` tiles or more, the tile count and a
  time estimate scaled from the measured throughput in BENCHMARKS.md section 8
  (a warning, shown by default, past one hour), so nobody learns after an hour
  that the run will take days.

The estimate is a planning figure, not a promise: one CPU thread at the
measured rate, divided by the torch threads; on a GPU it is an upper bound.
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass

import torch

from io_adapters.base import Metadata
from io_adapters.detect import DEFAULT_MAX_PIXELS, check_declared_size
from io_adapters.errors import InvalidDataError
from zssr.config import NetConfig, ZSSRConfig

__all__ = ["MAX_TILES", "LARGE_JOB_TILES", "JobEstimate", "estimate_job", "check_budget",
           "parse_max_pixels"]

log = logging.getLogger(__name__)

MAX_TILES = 250_000  # 4e8 px at the default 256 px tile is ~6 100 tiles
LARGE_JOB_TILES = 64  # announce the estimate from this many tiles on
# BENCHMARKS.md section 8 (one CPU thread, paper net: depth 8, width 64, 3x3 kernel,
# 8-way ensemble, 10 back-projections): inference 0.053 HR megapixels/s on a 4-band
# tile, training 0.105 s per iteration at crop 128.
_REF_INFER_HR_PX_PER_S = 0.053e6
_REF_TRAIN_S_PER_IT = 0.105
_REF_NET, _REF_BANDS, _REF_CROP = NetConfig(), 4, 128


def _macs_per_pixel(net: NetConfig, bands: int) -> float:
    """Multiply-adds of one forward pass per output pixel."""
    k2 = net.kernel_size ** 2
    return k2 * (2 * bands * net.width + (net.depth - 2) * net.width ** 2)


@dataclass(frozen=True)
class JobEstimate:
    tiles: int
    hr_pixels: int
    train_seconds: float
    infer_seconds: float

    @property
    def seconds(self) -> float:
        return self.train_seconds + self.infer_seconds


def estimate_job(meta: Metadata, *, config: ZSSRConfig, scale: float, tile: int,
                 bands: int, threads: int = 1) -> JobEstimate:
    """Tiles and a time estimate for super-resolving ``meta`` (see the module docstring)."""
    tiles = meta.frames * math.ceil(meta.rows / tile) * math.ceil(meta.cols / tile)
    hr_pixels = int(meta.frames * meta.rows * meta.cols * scale * scale)
    cost = _macs_per_pixel(config.net, bands) / _macs_per_pixel(_REF_NET, _REF_BANDS)
    ensemble = 1.0 if config.infer.ensemble else 1.0 / 8
    infer = hr_pixels * cost * ensemble / _REF_INFER_HR_PX_PER_S
    crop = (config.train.crop_size / _REF_CROP) ** 2
    train = config.train.max_iters * _REF_TRAIN_S_PER_IT * cost * crop
    threads = max(1, threads)
    return JobEstimate(tiles=tiles, hr_pixels=hr_pixels, train_seconds=train / threads,
                       infer_seconds=infer / threads)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def check_budget(meta: Metadata, *, config: ZSSRConfig, scale: float, tile: int, bands: int,
                 max_pixels: int = DEFAULT_MAX_PIXELS, device: str = "cpu") -> JobEstimate:
    """Refuse a job over the pixel or tile limits; log the estimate of a large one."""
    check_declared_size(meta, max_pixels=max_pixels)
    est = estimate_job(meta, config=config, scale=scale, tile=tile, bands=bands,
                       threads=torch.get_num_threads())
    if est.tiles > MAX_TILES:
        raise InvalidDataError(
            f"{meta.path}: {est.tiles} tiles of {tile} px, more than the limit of {MAX_TILES}; "
            f"use a larger --tile (e.g. --tile {min(8192, tile * 4)})")
    if est.tiles >= LARGE_JOB_TILES:
        where = "on this CPU" if device == "cpu" else f"on the CPU (an upper bound for {device})"
        # shown without -v when the estimate passes an hour: a surprise worth a warning
        level = logging.WARNING if est.seconds > 3600 else logging.INFO
        log.log(level, "%s: %d x %d px x%g -> %d tiles of %d px, %.3g HR pixels; estimated "
                "%s (train %s, infer %s) %s at the measured rate of BENCHMARKS.md section 8",
                meta.path, meta.rows, meta.cols, scale, est.tiles, tile, est.hr_pixels,
                _duration(est.seconds), _duration(est.train_seconds),
                _duration(est.infer_seconds), where)
    return est


def parse_max_pixels(text: str) -> int:
    """``--max-pixels`` value: an integer or a number like ``1e10``, at least 4."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--max-pixels {text!r}: expected a number of pixels, "
                                         "e.g. 1e9") \
            from None
    if not math.isfinite(value) or value < 4 or value != int(value):
        raise argparse.ArgumentTypeError(f"--max-pixels {text!r}: expected a whole number of "
                                         "pixels >= 4")
    return int(value)
