"""FLOP/s of one fp32 3x3 64->64 conv (channels_last) vs the size of its output.

Shows why ``zssr.inference`` runs the network over blocks: above glibc's mmap threshold
(adaptive, at most 32 MB) each output tensor is fresh memory that the kernel zero-fills
page by page, and the convolution slows down.  Run it twice to see the allocator's part:

    OMP_NUM_THREADS=1 python bench/conv_shapes.py --json bench/results/conv_shapes.json
    OMP_NUM_THREADS=1 GLIBC_TUNABLES=glibc.malloc.mmap_max=0 python bench/conv_shapes.py \
        --json bench/results/conv_shapes_no_mmap.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

SHAPES = [(1, 600, 64), (1, 600, 128), (1, 600, 192), (1, 600, 256), (1, 600, 400),
          (1, 600, 600), (1, 288, 288), (4, 288, 288)]  # (batch, rows, cols)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    w = torch.randn(64, 64, 3, 3)
    xs = {s: torch.randn(s[0], 64, s[1], s[2]).contiguous(memory_format=torch.channels_last)
          for s in SHAPES}
    times: dict[tuple[int, int, int], list[float]] = {s: [] for s in SHAPES}
    work = 600 * 600
    for _ in range(args.reps):  # interleaved: every shape sees the same load
        for s, x in xs.items():
            n = max(1, work // (s[0] * s[1] * s[2]))
            t0 = time.perf_counter()
            for _ in range(n):
                F.conv2d(x, w, padding=1)
            times[s].append((time.perf_counter() - t0) / n)
    rows = []
    print(f"{'batch x rows x cols':>20} {'output MB':>10} {'GFLOP/s':>8}")
    for s in SHAPES:
        px = s[0] * s[1] * s[2]
        gflops = 2 * 64 * 64 * 9 * px / statistics.median(times[s]) / 1e9
        rows.append({"shape": list(s), "output_mb": px * 64 * 4 / 2 ** 20, "gflops": gflops})
        print(f"{' x '.join(map(str, s)):>20} {px * 256 / 2 ** 20:10.1f} {gflops:8.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "threads": torch.get_num_threads(), "rows": rows, "torch": torch.__version__,
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
            "machine": platform.machine()}, indent=2))


if __name__ == "__main__":
    main()
