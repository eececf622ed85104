"""``zssr.resize.imresize`` (banded products) against one dense matrix product per axis.

Until commit 85c991b each axis was resized with one product by the full ``(out, in)``
resampling matrix; most of its entries are zero (a bicubic tap reaches 4 inputs, 8
when antialiased at /2), and the wasted work grows with the axis length.  Now each run
of 64 outputs multiplies only the inputs its taps reach.  This times both on the
shapes of one back-projection round (per tile: down by 2, up by 2), interleaved, and
checks they agree.

    OMP_NUM_THREADS=1 python bench/resize_speed.py --json bench/results/resize_speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from zssr.resize import _torch_contributions, imresize

CASES = [  # (shape, scale, what)
    ((4, 600, 600), 0.5, "pipeline tile 600^2 x 4 bands, down x2"),
    ((4, 300, 300), 2.0, "pipeline tile LR 300^2, up x2"),
    ((3, 288, 288), 0.5, "Set5 bird HR 288^2, down x2"),
    ((3, 144, 144), 2.0, "Set5 bird LR 144^2, up x2"),
    ((1, 1000, 1000), 2.0, "1000^2 gray, up x2"),
]


def dense_resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    """The former algorithm: per axis (H first), one product by the dense matrix."""
    out = x
    for dim in (-2, -1):
        n_in = out.shape[dim]
        n_out = -(-n_in * scale // 1) if scale >= 1 else round(n_in * scale)
        w, i = _torch_contributions(n_in, int(n_out), scale, "cubic", True, "symmetric",
                                    x.device, x.dtype)
        m = torch.zeros(int(n_out), n_in, dtype=x.dtype)
        rows = torch.arange(int(n_out)).expand(w.shape[0], -1)
        m.index_put_((rows.reshape(-1), i.reshape(-1)), w.reshape(-1), accumulate=True)
        moved = out.transpose(dim, -1)
        out = (moved @ m.t()).transpose(dim, -1).contiguous()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    print(f"{'case':<42} {'dense ms':>9} {'banded ms':>10} {'speed-up':>9} {'max diff':>9}")
    for shape, scale, what in CASES:
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
        diff = (dense_resize(x, scale) - imresize(x, scale=scale)).abs().max().item()
        dense, banded = [], []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            dense_resize(x, scale)
            t1 = time.perf_counter()
            imresize(x, scale=scale)
            banded.append(time.perf_counter() - t1)
            dense.append(t1 - t0)
        d, b = statistics.median(dense), statistics.median(banded)
        rows.append({"case": what, "shape": list(shape), "scale": scale, "dense_ms": d * 1e3,
                     "banded_ms": b * 1e3, "speedup": d / b, "max_abs_diff": diff})
        print(f"{what:<42} {d * 1e3:9.2f} {b * 1e3:10.2f} {d / b:8.1f}x {diff:9.1e}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows,
                                         "machine": platform.machine(),
                                         "torch": torch.__version__}, indent=2))


if __name__ == "__main__":
    main()
