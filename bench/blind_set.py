"""A DIV2KRK-style blind-SR set at x2 or x4, built from ``../shared/data`` by a seeded recipe.

Each item is an 8-bit HR crop, its own random kernel and the LR made with it:

* **HR**: Set14 HR images, the two T91 images present (t4, t5) and the Landsat 8
  stack's bands (B4 red, B5 NIR; percentile-stretched to 8 bits over a fully valid
  window), each cropped to at most ``crop x crop`` (default 256) at a seeded position.
* **Kernel** (issue 16): an anisotropic Gaussian, 11x11 HR px at x2, whose *covariance*
  eigenvalues are ``U(0.6, 5)`` HR px^2 (the issue's definition; DIV2KRK's lambdas are
  standard-deviation-like, so its kernels are somewhat wider), angle ``U(0, pi)``, each
  tap multiplied by ``U(0.75, 1.25)``, then normalised to sum 1.
* **LR**: official ZSSR's numeric-kernel resize (:func:`zssr.resize.imresize` with
  :func:`zssr.kernels.prepare_kernel`): the kernel is shifted by ``kernel_shift``, the HR
  correlated with it (half-sample symmetric boundary, scipy 'reflect') and every 2nd
  pixel kept; then rounded to ``uint8`` like DIV2KRK's PNGs.

**x4** (``scale=4``, issue 16): 31x31 kernels, covariance eigenvalues ``U(2.4, 20)`` HR
px^2 (the x2 range times 4), the same angle and tap noise; the LR keeps every 4th pixel.
The HR crop is ``2 * crop`` (default 512) so that the LR holds several 64x64 windows
(the estimator's); items whose LR would have a side under 64 (T91's t4/t5, comic, and the
386x379 Landsat stack) are left out, so the x4 set is Set14 only.

``python bench/blind_set.py OUT_DIR [--scale 4]`` writes ``NAME_hr.png``, ``NAME_lr.png`` and
``NAME_kernel.npy`` per item plus ``set.json`` (the recipe and each kernel's draw).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from zssr.kernels import prepare_kernel
from zssr.resize import imresize

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SET14 = ["baboon", "barbara", "bridge", "coastguard", "comic", "face", "flowers", "foreman",
         "lenna", "man", "monarch", "pepper", "ppt3", "zebra"]
T91 = ["t4", "t5"]
LANDSAT_BANDS = {"landsat_b4": 2, "landsat_b5": 3}  # band index in the B2..B5 stack
LANDSAT_NPZ = Path(__file__).resolve().parent / "landsat8_stack_386x379.npz"
KERNEL_SIZE = 11
EIG_RANGE = (0.6, 5.0)
KERNEL_SIZES = {2: 11, 4: 31}
EIG_RANGES = {2: EIG_RANGE, 4: (4 * EIG_RANGE[0], 4 * EIG_RANGE[1])}
NOISE_RANGE = (0.75, 1.25)


@dataclass(frozen=True)
class BlindItem:
    name: str
    hr: np.ndarray  # (C, H, W) uint8, H and W multiples of the scale
    lr: np.ndarray  # (C, H/s, W/s) uint8
    kernel: np.ndarray  # (11, 11) at x2, (31, 31) at x4; float64, sums to 1
    draw: dict  # eigenvalues, angle, crop origin


def random_kernel(rng: np.random.Generator, *, size: int = KERNEL_SIZE,
                  eig_range: tuple[float, float] = EIG_RANGE) -> tuple[np.ndarray, dict]:
    """An issue-16 kernel: anisotropic Gaussian with noisy taps, normalised; and its draw."""
    lam = rng.uniform(*eig_range, size=2)
    theta = float(rng.uniform(0.0, math.pi))
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    cov = rot @ np.diag(lam) @ rot.T
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    pts = np.stack([yy, xx], -1)  # (size, size, 2): (row, col) offsets
    k = np.exp(-0.5 * np.einsum("...i,ij,...j->...", pts, np.linalg.inv(cov), pts))
    k *= rng.uniform(*NOISE_RANGE, size=k.shape)
    return k / k.sum(), {"eigenvalues": lam.tolist(), "angle": theta, "cov": cov.tolist()}


def degrade(hr: np.ndarray, kernel: np.ndarray, scale: int = 2) -> np.ndarray:
    """LR of an 8-bit HR ``(C, H, W)`` by ZSSR's numeric-kernel resize, rounded to uint8."""
    x = torch.from_numpy(hr.astype(np.float64))
    lr = imresize(x, scale=1.0 / scale, kernel=prepare_kernel(kernel, float(scale)).double())
    return np.clip(np.floor(lr.numpy() + 0.5), 0, 255).astype(np.uint8)


def _load(name: str) -> np.ndarray:
    if name in LANDSAT_BANDS:
        stack = np.load(LANDSAT_NPZ)["stack"]
        band = stack[LANDSAT_BANDS[name]].astype(np.float64)
        valid = band[band > 0]
        lo, hi = np.percentile(valid, [1, 99])
        return np.clip(np.round((band - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)[None]
    folder = DATA / ("plain_images/T91" if name in T91 else "sr_benchmarks/Set14/HR")
    path = folder / (f"{name}.bmp" if name in T91 else f"{name}.png")
    img = np.asarray(Image.open(path).convert("RGB" if name != "bridge" else "L"))
    return img[None] if img.ndim == 2 else np.moveaxis(img, -1, 0)


def _valid_origin(name: str, shape: tuple[int, int], crop: int,
                  rng: np.random.Generator) -> tuple[int, int]:
    """A seeded crop origin; for Landsat one whose window holds no nodata (0)."""
    h, w = shape
    for _ in range(200):
        origin = (int(rng.integers(0, h - min(crop, h) + 1)),
                  int(rng.integers(0, w - min(crop, w) + 1)))
        if name not in LANDSAT_BANDS:
            return origin
        stack = np.load(LANDSAT_NPZ)["stack"][LANDSAT_BANDS[name]]
        win = stack[origin[0]:origin[0] + crop, origin[1]:origin[1] + crop]
        if np.all(win > 0):
            return origin
    raise RuntimeError(f"{name}: no fully valid {crop}x{crop} window found")


def names(scale: int = 2) -> list[str]:
    """Item order: interleaved so that the first few items mix sources. At x4 only the
    Set14 images whose 512-px crop gives an LR of at least 64 px a side (no comic)."""
    if scale == 4:
        return ["baboon", "lenna", "zebra", "barbara", "bridge", "man", "monarch", "pepper",
                "ppt3", "flowers", "coastguard", "foreman", "face"]
    return ["baboon", "t4", "landsat_b4", "comic", "lenna", "zebra", "barbara", "t5",
            "landsat_b5", "bridge", "coastguard", "face", "flowers", "foreman", "man",
            "monarch", "pepper", "ppt3"]


def build_set(*, count: int | None = None, seed: int = 16, crop: int = 256,
              scale: int = 2) -> list[BlindItem]:
    """The first ``count`` items (all by default); item ``i`` uses ``seed + i``. At
    ``scale=4`` the HR crop is ``2 * crop`` (LR ``crop / 2``), kernels as :data:`KERNEL_SIZES`
    and :data:`EIG_RANGES` say."""
    if scale not in KERNEL_SIZES:
        raise ValueError(f"scale must be 2 or 4, got {scale}")
    items = []
    landsat_crop = min(crop, 128)  # the 386x379 stack has no larger fully valid window
    if scale == 4:
        crop = 2 * crop
    for i, name in enumerate(names(scale)[:count]):
        rng = np.random.default_rng(seed + i)
        img = _load(name)
        c = landsat_crop if name in LANDSAT_BANDS else crop
        y0, x0 = _valid_origin(name, img.shape[1:], c, rng)
        hr = img[:, y0:y0 + c, x0:x0 + c]
        hr = hr[:, : hr.shape[1] // scale * scale, : hr.shape[2] // scale * scale]
        k, draw = random_kernel(rng, size=KERNEL_SIZES[scale], eig_range=EIG_RANGES[scale])
        draw["crop_origin"] = [y0, x0]
        items.append(BlindItem(name, np.ascontiguousarray(hr), degrade(hr, k, scale), k, draw))
    return items


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--count", type=int, default=None)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--scale", type=int, default=2, choices=sorted(KERNEL_SIZES))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"seed": args.seed, "crop": args.crop, "scale": args.scale,
            "kernel_size": KERNEL_SIZES[args.scale],
            "eigenvalues_hr_px2": EIG_RANGES[args.scale], "noise": NOISE_RANGE, "items": []}
    for item in build_set(count=args.count, seed=args.seed, crop=args.crop, scale=args.scale):
        for tag, arr in (("hr", item.hr), ("lr", item.lr)):
            img = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
            Image.fromarray(img).save(args.out / f"{item.name}_{tag}.png")
        np.save(args.out / f"{item.name}_kernel.npy", item.kernel)
        meta["items"].append({"name": item.name, "hr_shape": list(item.hr.shape), **item.draw})
    (args.out / "set.json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {len(meta['items'])} items to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
