"""PSNR-Y vs wall time on a benchmark set: the curve users choose a preset or budget from.

Each configuration (a preset plus optional overrides, e.g. a training time budget
``train.max_seconds``) runs ``pipeline.image.evaluate`` on the HR folder with the
benchmark protocol; the table gives mean PSNR-Y, mean seconds per image and the
gain over bicubic, side by side in one process.

    python bench/quality_time.py --hr ../shared/data/sr_benchmarks/Set5/HR \
        --config fast --config fast:train.max_seconds=15 --config fast:train.max_seconds=30 \
        --json bench/results/quality_time_set5.json
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from configs import resolve_config
from pipeline.image.evaluate import evaluate, summarize


def parse(spec: str) -> tuple[str, list[str]]:
    preset, _, rest = spec.partition(":")
    return preset, [s for s in rest.split(",") if s]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hr", type=Path, required=True)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--config", action="append", required=True,
                    help="PRESET[:key=value,key=value] (repeatable)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    base = summarize(evaluate(args.hr, scale=args.scale, method="bicubic", limit=args.limit))
    bic = base["mean"]["psnr_y"]
    rows = []
    print(f"{'configuration':<40} {'PSNR-Y':>8} {'gain dB':>8} {'s/image':>8} {'iters':>6}")
    print(f"{'bicubic':<40} {bic:8.3f} {0:8.2f} {0:8.1f} {0:6d}")
    for spec in args.config:
        preset, overrides = parse(spec)
        cfg, _ = resolve_config(preset=preset, overrides=overrides)
        s = summarize(evaluate(args.hr, scale=args.scale, method="zssr", config=cfg,
                               limit=args.limit))
        m = s["mean"]
        rows.append({"config": spec, "mean": m, "gain_db": m["psnr_y"] - bic,
                     "images": s["images"]})
        print(f"{spec:<40} {m['psnr_y']:8.3f} {m['psnr_y'] - bic:8.2f} {m['seconds']:8.1f} "
              f"{m['iterations']:6.0f}", flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({
                "hr": str(args.hr), "scale": args.scale, "bicubic_psnr_y": bic, "rows": rows,
                "threads": torch.get_num_threads(),
                "machine": f"{platform.machine()} {platform.processor()}".strip()}, indent=2))


if __name__ == "__main__":
    main()
