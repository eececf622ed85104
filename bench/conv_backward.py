"""Where a training step's conv time goes: forward, backward, and two hand-made backwards.

For one 3x3 64->64 conv (channels_last, fp32, the training crop's size) this
times, side by side in one process (median of interleaved repeats):

- ``forward``: ``F.conv2d`` alone (no autograd);
- ``forward+backward``: what a training step pays per layer (oneDNN);
- ``grad_input as a forward conv``: ``conv2d(dy, flip(W)^T)``, the input
  gradient written as a plain forward conv (what a custom backward would use);
- ``grad_weight as one GEMM``: ``dy (64 x HW) @ im2col(x) (HW x 576)``, the
  weight gradient as one BLAS product, plus the im2col copy it needs.

If the two hand-made parts together are not faster than oneDNN's backward, a
custom autograd function for the conv is no lever for the training target.

    OMP_NUM_THREADS=1 python bench/conv_backward.py --sizes 64 128 --json bench/results/conv_backward.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def _time(fn, reps: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def measure(size: int, repeats: int) -> dict:
    cl = torch.channels_last
    x = torch.randn(1, 64, size, size).contiguous(memory_format=cl).requires_grad_()
    w = (torch.randn(64, 64, 3, 3) * 0.05).contiguous(memory_format=cl).requires_grad_()
    dy = torch.randn(1, 64, size, size).contiguous(memory_format=cl)
    w_t = w.detach().flip(2, 3).transpose(0, 1).contiguous(memory_format=cl)
    dy_mat = dy.reshape(64, -1)
    xd = x.detach()

    def forward():
        with torch.no_grad():
            F.conv2d(xd, w, padding=1)

    def forward_backward():
        F.conv2d(x, w, padding=1).backward(dy)

    def grad_input():
        with torch.no_grad():
            F.conv2d(dy, w_t, padding=1)

    def grad_weight():
        xp = F.pad(xd, (1, 1, 1, 1))
        cols = torch.cat([xp[:, :, i:i + size, j:j + size] for i in range(3) for j in range(3)], 1)
        return dy_mat @ cols.reshape(576, -1).T

    fns = {"forward": forward, "forward+backward": forward_backward,
           "grad_input as a forward conv": grad_input, "grad_weight as one GEMM": grad_weight}
    reps = max(1, int(3e5 // (size * size)))
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            times[k].append(_time(f, reps) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    for size in args.sizes:
        m = measure(size, args.repeats)
        bwd = m["forward+backward"] - m["forward"]
        custom = m["grad_input as a forward conv"] + m["grad_weight as one GEMM"]
        rows.append({"size": size, "ms": m, "backward_ms": bwd, "custom_backward_ms": custom})
        print(f"crop {size}, threads {torch.get_num_threads()} (ms, median of {args.repeats})")
        for k, v in m.items():
            print(f"  {k:<30} {v:8.2f}")
        print(f"  {'oneDNN backward (fb - f)':<30} {bwd:8.2f}  ({bwd / m['forward']:.2f}x forward)")
        print(f"  {'hand-made backward':<30} {custom:8.2f}  ({custom / bwd:.2f}x oneDNN's)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "threads": torch.get_num_threads(),
                                         "torch": torch.__version__,
                                         "machine": platform.machine()}, indent=2))


if __name__ == "__main__":
    main()
