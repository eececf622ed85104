"""End to end on one device: a 10 980 x 10 980 4-band uint16 scene x2, training included.

The scene is the real Landsat 8 stack (``bench/landsat8_stack_386x379.npz``, a
lossless copy of ``../shared/data/geotiff/..._SR_B2-B5_stack.tif``, nodata 0)
mosaicked with mirrored copies to the size of a Sentinel-2 tile.  It runs the
engine only (no file formats: the device machine lacks GDAL), the way the
pipeline does: normaliser fitted on windows, training from a crop source,
tiled ``predict`` with the dependency-radius halo, tiles written into a
preallocated uint16 output.  Prints the time split and writes JSON.

    python bench/gpu_scene.py --device cuda --preset fast --json OUT.json [--size 10980]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from configs import resolve_config
from geometry import TileGrid
from pipeline.image.halo import dependency_radius
from zssr.inference import predict
from zssr.model import build_model
from zssr.normalize import Normalizer
from zssr.sampling import ArrayCropSource
from zssr.train import train

HERE = Path(__file__).resolve().parent


def mosaic(size: int) -> np.ndarray:
    base = np.load(HERE / "landsat8_stack_386x379.npz")["stack"]
    period = np.concatenate([np.concatenate([base, base[:, :, ::-1]], 2),
                             np.concatenate([base[:, ::-1], base[:, ::-1, ::-1]], 2)], 1)
    reps = (1, -(-size // period.shape[1]), -(-size // period.shape[2]))
    return np.tile(period, reps)[:, :size, :size].copy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, default=10980)
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    cfg, _ = resolve_config(preset=args.preset, overrides=args.set)
    t0 = time.perf_counter()
    scene = mosaic(args.size)
    valid = (scene != 0).all(axis=0)
    t_load = time.perf_counter() - t0
    # normaliser from a bounded sample, as the pipeline does
    sample = scene[:, ::16, ::16]
    norm = Normalizer.fit(sample, policy=cfg.norm.policy, mask=valid[::16, ::16])
    lo, hi = (torch.from_numpy(v) for v in norm.clip_range)

    class SceneSource(ArrayCropSource):  # windows normalised on demand: no float copy
        def __init__(self):
            self.channels, self.shape = scene.shape[0], scene.shape[1:]

        def __call__(self, window, scale=1.0):
            r0, c0 = max(window.row_off, 0), max(window.col_off, 0)
            r1 = min(window.row_off + window.height, self.shape[0])
            c1 = min(window.col_off + window.width, self.shape[1])
            tile = ArrayCropSource(norm.forward(scene[:, r0:r1, c0:c1]), valid[r0:r1, c0:c1])
            shifted = type(window)(window.row_off - r0, window.col_off - c0, window.height,
                                   window.width)
            return tile(shifted, scale)

    model = build_model(4, cfg.net, seed=cfg.seed, device=device)
    t0 = time.perf_counter()
    hist = train(model, SceneSource(), scale=2, cfg=cfg.train, clip_range=(lo, hi),
                 seed=cfg.seed)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t_train = time.perf_counter() - t0
    halo = dependency_radius(cfg, 2)
    grid = TileGrid(shape=scene.shape[1:], tile=args.tile, halo=halo, scale=2)
    out = np.zeros((4, *grid.hr_shape), np.uint16)
    t0 = time.perf_counter()
    for tile in grid:
        rs, cs = tile.read.slices
        lr = torch.from_numpy(norm.forward(scene[:, rs, cs])).to(device)
        sr = predict(model, lr, scale=2, infer=cfg.infer, clip_range=(lo, hi))
        crs, ccs = tile.crop
        out[:, tile.hr_core.slices[0], tile.hr_core.slices[1]] = norm.inverse(
            sr[:, crs, ccs].cpu().numpy())
    t_infer = time.perf_counter() - t0
    total = t_train + t_infer
    row = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "size": args.size, "preset": args.preset, "overrides": args.set,
           "tile": args.tile, "halo": halo, "tiles": len(grid), "iterations": hist.iterations,
           "mosaic_s": t_load, "train_s": t_train, "infer_s": t_infer, "total_s": total,
           "output_mpix": out.shape[1] * out.shape[2] / 1e6}
    print(json.dumps(row, indent=1))
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
