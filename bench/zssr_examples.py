"""ZSSR's own examples: ``kernel_example`` (given .mat kernel) and ``real_example`` (charlie).

For images without ground truth we report LR-consistency: PSNR of the SR output
downscaled back to the input grid (with the same kernel) against the input.

    python bench/zssr_examples.py --data ../shared/data/sr_benchmarks/ZSSR \
        --json bench/results/zssr_examples.json [--set train.max_iters=...]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from configs import resolve_config
from io_adapters.plain import PlainReader
from pipeline.image.kernel_io import load_kernel
from zssr import super_resolve
from zssr.kernels import prepare_kernel
from zssr.metrics import lr_consistency

CASES = [
    # name, image, kernel, preset (the official configuration for each example)
    ("kernel_example", "kernel_example/BSD100_100_lr_rand_ker_c_X2.png",
     "kernel_example/BSD100_100_lr_rand_ker_c_X2_0.mat", "kernel"),
    ("real_example", "real_example/charlie.png", "real_example/charlie_0.mat", "real"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/sr_benchmarks/ZSSR"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", type=Path, default=None, help="folder for the SR PNGs")
    args = ap.parse_args()
    rows = []
    print(f"{'example':<16} {'preset':<7} {'size in':>10} {'iters':>6} {'seconds':>8} "
          f"{'LR-cons. ZSSR':>14} {'LR-cons. bicubic':>17}")
    for name, image, kernel_file, preset in CASES:
        cfg, _ = resolve_config(preset=preset, overrides=args.set)
        with PlainReader(args.data / image) as r:
            lr = r.read()
        kernel = load_kernel(args.data / kernel_file)
        lrf = lr.astype(np.float32) / 255
        t0 = time.perf_counter()
        sr, hist = super_resolve(lrf, scale=2, config=cfg, kernel=kernel, value_range=(0, 1))
        seconds = time.perf_counter() - t0
        k = prepare_kernel(kernel, 2.0)
        cons = lr_consistency(sr, lrf, scale=2, kernel=k, data_range=1.0)
        from zssr.resize import imresize
        bic = np.clip(imresize(torch.from_numpy(lrf), scale=2.0).numpy(), 0, 1)
        cons_bic = lr_consistency(bic, lrf, scale=2, kernel=k, data_range=1.0)
        if args.out:
            from PIL import Image
            args.out.mkdir(parents=True, exist_ok=True)
            Image.fromarray((np.moveaxis(sr, 0, -1) * 255 + 0.5).astype(np.uint8)).save(
                args.out / f"{name}_zssr_x2.png")
        rows.append({"example": name, "preset": preset, "shape_in": list(lr.shape),
                     "iterations": hist.iterations, "seconds": seconds,
                     "stop_reason": hist.stop_reason, "lr_consistency_db": cons,
                     "lr_consistency_bicubic_db": cons_bic})
        print(f"{name:<16} {preset:<7} {lr.shape[1]:>4}x{lr.shape[2]:<5} {hist.iterations:>6} "
              f"{seconds:>8.1f} {cons:>14.2f} {cons_bic:>17.2f}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "overrides": args.set,
                                         "machine": platform.processor() or platform.machine()},
                                        indent=2))


if __name__ == "__main__":
    main()
