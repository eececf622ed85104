"""Peak RSS of ``zssr upscale`` vs scene size, on a mosaic of the real Landsat 8 stack.

The 386 x 379 4-band uint16 Landsat stack (../shared/data/geotiff) is tiled
(mirrored alternately, so seams are continuous) into square GeoTIFFs of each
size, written once to ``--work`` (tiled 512, DEFLATE + predictor, keeping CRS,
a transform with the source origin and pixel size, nodata 0).  Each size is
super-resolved x2 in a fresh process under ``/usr/bin/time -v``; peak RSS
(maximum resident set size) and wall time are recorded.

    python bench/memory.py --sizes 2000 4000 8000 16000 --json bench/results/memory.json \
        [--set infer.ensemble=false ...]

Outputs are deleted after each run (a 16 000^2 x2 output is 8 GB).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

STACK = "geotiff/landsat8_LC08_L2SP_001062_20201031_SR_B2-B5_stack.tif"


def build_mosaic(src_path: Path, size: int, out: Path) -> Path:
    """A ``size`` x ``size`` mosaic of the source, written block by block (bounded memory)."""
    if out.exists():
        return out
    with rasterio.open(src_path) as src:
        data = src.read()
        profile = src.profile
    h, w = data.shape[1:]
    # one mirrored 2x2 period makes the mosaic continuous across seams
    period = np.concatenate([np.concatenate([data, data[:, :, ::-1]], 2),
                             np.concatenate([data[:, ::-1], data[:, ::-1, ::-1]], 2)], 1)
    ph, pw = period.shape[1:]
    profile.update(width=size, height=size, tiled=True, blockxsize=512, blockysize=512,
                   compress="deflate", predictor=2, bigtiff="if_safer")
    tmp = out.with_suffix(".partial.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for r0 in range(0, size, 512):
            for c0 in range(0, size, 512):
                hh, ww = min(512, size - r0), min(512, size - c0)
                rows = (np.arange(r0, r0 + hh) % ph)
                cols = (np.arange(c0, c0 + ww) % pw)
                dst.write(period[:, rows[:, None], cols[None, :]], window=Window(c0, r0, ww, hh))
    tmp.replace(out)
    del h, w
    return out


def run_one(path: Path, out: Path, args: argparse.Namespace) -> dict:
    cmd = ["/usr/bin/time", "-v", str(Path(sys.executable).parent / "zssr"), "upscale",
           str(path), str(out), "--scale", "2", "--preset", args.preset, "-q",
           "--tile", str(args.tile)]
    for s in args.set:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return {"size": None, "peak_rss_mb": rss_kb / 1024, "wall_s": wall, "command": " ".join(cmd)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/zssr-memory-bench"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 4000, 8000, 16000])
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'size':>6} {'peak RSS MB':>12} {'wall s':>8}")
    for size in args.sizes:
        src = build_mosaic(args.data / STACK, size, args.work / f"landsat_mosaic_{size}.tif")
        out = args.work / f"out_{size}_x2.tif"
        row = run_one(src, out, args)
        row["size"] = size
        out.unlink(missing_ok=True)
        shutil.rmtree(args.work / f"out_{size}_x2.tif.partial", ignore_errors=True)
        rows.append(row)
        print(f"{size:>6} {row['peak_rss_mb']:>12.0f} {row['wall_s']:>8.0f}", flush=True)
        if args.json:
            _write(args, rows)
    rss = [r["peak_rss_mb"] for r in rows]
    print(f"max/min peak RSS: {max(rss) / min(rss):.3f}")


def _write(args: argparse.Namespace, rows: list[dict]) -> None:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "rows": rows, "preset": args.preset, "overrides": args.set, "tile": args.tile,
        "machine": f"{platform.machine()} {platform.processor()}".strip()}, indent=2))


if __name__ == "__main__":
    main()
