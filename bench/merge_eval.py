"""Merge ``zssr eval --json`` files of shards (or single images) into one table.

Long evaluations (the paper presets on Set14: about 20 min per image per core) run as
shards, possibly over several sessions; this joins them, checks that they ran the same
preset and configuration on the same folder, and reports which images are still missing.

    python bench/merge_eval.py bench/results/paper_gradual_set14/*.json \
        --hr ../shared/data/sr_benchmarks/Set14/HR --json bench/results/paper_gradual_set14_x2.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pipeline.image.evaluate import hr_images


def merge(paths: list[Path]) -> tuple[dict, list[dict]]:
    """The shared settings of ``paths`` and their rows (one per image, sorted by name)."""
    keys = ("hr", "scale", "method", "preset", "overrides", "config")
    settings: dict | None = None
    rows: dict[str, dict] = {}
    for path in paths:
        data = json.loads(path.read_text())
        mine = {k: data.get(k) for k in keys}
        if settings is None:
            settings = mine
        elif mine != settings:
            diff = [k for k in keys if mine[k] != settings[k]]
            raise SystemExit(f"{path}: ran with other settings ({', '.join(diff)}) than "
                             f"{paths[0]}")
        for row in data["images"]:
            if row["image"] in rows:
                raise SystemExit(f"{path}: image {row['image']} appears twice")
            rows[row["image"]] = row
    return settings or {}, [rows[k] for k in sorted(rows)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--hr", type=Path, default=None,
                    help="the HR folder, to list images not evaluated yet")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    settings, rows = merge(args.files)
    print(f"{'image':<14} {'PSNR-Y':>8} {'SSIM-Y':>8} {'seconds':>9} {'iters':>6}")
    for r in rows:
        print(f"{r['image']:<14} {r['psnr_y']:8.3f} {r['ssim_y']:8.4f} {r['seconds']:9.1f} "
              f"{r['iterations']:6d}")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in
            ("psnr_y", "ssim_y", "seconds", "iterations")}
    print(f"{'mean':<14} {mean['psnr_y']:8.3f} {mean['ssim_y']:8.4f} {mean['seconds']:9.1f} "
          f"{mean['iterations']:6.0f}   ({len(rows)} images)")
    missing = []
    if args.hr:
        missing = [p.stem for p in hr_images(args.hr) if p.stem not in {r["image"] for r in rows}]
        if missing:
            print(f"missing {len(missing)}: {', '.join(missing)}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({**settings, "images": rows, "mean": mean,
                                         "complete": not missing, "missing": missing},
                                        indent=1))


if __name__ == "__main__":
    main()
