"""Benchmark evaluation: HR folder -> benchmark LR -> SR -> PSNR-Y / SSIM-Y.

The protocol is :mod:`zssr.protocol` (crop to a multiple of the scale, MATLAB
bicubic LR bit-identical to the SelfExSR files, scores on Y with the border
shaved).  ``method="bicubic"`` reproduces the published bicubic baselines;
``method="zssr"`` trains ZSSR on each LR image and scores its output.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from io_adapters.plain import PlainReader
from pipeline.errors import InputError, UsageError
from zssr import super_resolve
from zssr.config import ZSSRConfig
from zssr.protocol import bicubic_baseline, make_lr, score

__all__ = ["EvalRow", "evaluate", "hr_images", "summarize"]

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff"}


@dataclass(frozen=True)
class EvalRow:
    image: str
    psnr_y: float
    ssim_y: float
    seconds: float
    iterations: int


def hr_images(hr_dir: Path, limit: int | None = None) -> list[Path]:
    hr_dir = Path(hr_dir)
    if not hr_dir.is_dir():
        raise InputError(f"{hr_dir}: HR folder not found")
    files = sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{hr_dir}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    return files[:limit] if limit else files


def _read_hr(path: Path) -> np.ndarray:
    with PlainReader(path) as reader:
        hr = reader.read()
        names = reader.meta.band_names
    if "A" in names:
        hr = hr[[i for i, n in enumerate(names) if n != "A"]]
    if hr.dtype != np.uint8:
        raise UsageError(f"{path}: the benchmark protocol needs 8-bit images, got {hr.dtype}")
    return hr


def evaluate(hr_dir: Path, *, scale: int, method: Literal["bicubic", "zssr"],
             config: ZSSRConfig | None = None, limit: int | None = None, device: str = "cpu",
             on_row: Callable[[EvalRow], None] | None = None,
             shard: tuple[int, int] | None = None) -> list[EvalRow]:
    if scale != int(scale) or scale < 2:
        raise UsageError(f"--scale {scale}: the benchmark protocol needs an integer scale >= 2")
    scale = int(scale)
    rows = []
    paths = hr_images(hr_dir, limit)
    if shard is not None:
        paths = [p for i, p in enumerate(paths) if i % shard[1] == shard[0]]
    for path in paths:
        hr = _read_hr(path)
        t0 = time.perf_counter()
        if method == "bicubic":
            sr, iters = bicubic_baseline(hr, scale), 0
        else:
            lr = make_lr(hr, scale).astype(np.float32) / 255.0
            out, hist = super_resolve(lr, scale=scale, config=config, device=device,
                                      value_range=(0.0, 1.0))
            sr, iters = out.astype(np.float64) * 255.0, hist.iterations
        seconds = time.perf_counter() - t0
        p, s = score(sr, hr, scale)
        row = EvalRow(path.stem, p, s, seconds, iters)
        log.info("%s: PSNR-Y %.3f SSIM-Y %.4f %.1fs %d it", path.stem, p, s, seconds, iters)
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def summarize(rows: list[EvalRow]) -> dict:
    return {
        "images": [asdict(r) for r in rows],
        "mean": {
            "psnr_y": float(np.mean([r.psnr_y for r in rows])),
            "ssim_y": float(np.mean([r.ssim_y for r in rows])),
            "seconds": float(np.mean([r.seconds for r in rows])),
            "iterations": float(np.mean([r.iterations for r in rows])),
        },
    }
