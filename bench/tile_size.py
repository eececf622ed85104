"""Larger tiles against the halo's overhead (issue 19, a candidate): seconds per output MP.

``zssr run`` infers each LR tile of ``--tile`` px with the auto halo around it (the
network's and back-projection's dependency radius, 22 LR px at x2 for ``fast`` and
``scene``), and keeps only the core: a 256 px tile computes (256 + 44)^2 / 256^2 = 1.37x
its core.  This bench times the engine's ``predict`` on one read window (tile + 2 halo)
per tile size with the ``scene`` (or ``--preset``) inference settings, same weights,
interleaved round by round, median of ``--reps``, and reports seconds per *core* output
MP (what a scene pays) and the peak RSS growth of the process.

    OMP_NUM_THREADS=1 python bench/tile_size.py --json bench/results/tile_size.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from configs import resolve_config
from pipeline.image.halo import resolve_halo
from zssr.inference import predict
from zssr.model import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="scene")
    ap.add_argument("--tiles", default="256,384,512,768")
    ap.add_argument("--bands", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg, _ = resolve_config(preset=args.preset)
    halo = resolve_halo("auto", config=cfg, scale=2)
    net = build_model(args.bands, cfg.net, seed=0).eval()
    rng = np.random.default_rng(0)
    sides = [int(t) for t in args.tiles.split(",")]
    windows = {t: torch.from_numpy(rng.random((args.bands, t + 2 * halo, t + 2 * halo),
                                              dtype=np.float32)) for t in sides}
    times: dict[int, list[float]] = {t: [] for t in sides}
    rss: dict[int, float] = {}
    for t in sides:  # warm-up, in growing order: the RSS high-water mark after each size
        predict(net, windows[t], scale=2, infer=cfg.infer)
        rss[t] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for _ in range(args.reps):
        for t in sides:
            t0 = time.perf_counter()
            predict(net, windows[t], scale=2, infer=cfg.infer)
            times[t].append(time.perf_counter() - t0)
    rows = []
    base = None
    for t in sides:
        med = statistics.median(times[t])
        core_mp = (2 * t) ** 2 / 1e6
        s_mp = med / core_mp
        base = base or s_mp
        rows.append({"tile": t, "halo": halo, "read_side": t + 2 * halo,
                     "compute_over_core": round((t + 2 * halo) ** 2 / t ** 2, 3),
                     "seconds": round(med, 3), "s_per_core_mp": round(s_mp, 2),
                     "speedup_vs_first": round(base / s_mp, 3), "peak_rss_mb": round(rss[t]),
                     "all": times[t]})
        print(f"tile {t:4d} (+2x{halo}): {med:7.2f} s, {s_mp:6.2f} s per core MP, "
              f"x{base / s_mp:.2f} vs {sides[0]}, peak RSS {rss[t]:.0f} MB")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "command": "OMP_NUM_THREADS=1 python bench/tile_size.py " + " ".join(
            f"--{k} {v}" for k, v in vars(args).items()), "commit": commit,
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "preset": args.preset, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
