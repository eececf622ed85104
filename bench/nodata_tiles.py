"""How many tiles of a scene are skipped as all-nodata (no network run), per preset.

A tile is skipped when its whole read window (core + halo) holds no valid pixel in
any band; its output is nodata either way.  This counts them from the masks and the
tile plan only (no training, no inference), so it is cheap and exact.

    python bench/nodata_tiles.py ../shared/data/geotiff/*.tif --preset fast \
        --json bench/results/nodata_tiles.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from configs import resolve_config
from io_adapters.detect import open_reader
from pipeline.image.job import ImageJob, plan_step


def count(path: Path, preset: str, tile: int) -> dict:
    cfg, _ = resolve_config(preset=preset)
    with open_reader(path) as reader:
        meta = reader.meta
        plan = plan_step(meta, ImageJob(input=path, output=path, scale=2.0, config=cfg,
                                        tile=tile), 2.0)
        skipped = 0
        for i in range(len(plan.grid)):
            t = plan.grid.tile(i)
            masks = reader.read_masks(t.read_window)
            skipped += not masks.any()
        valid_px = float(reader.read_masks().any(axis=0).mean())
    n = len(plan.grid)
    return {"file": path.name, "shape": [meta.bands, meta.rows, meta.cols], "preset": preset,
            "tile": tile, "halo": int(plan.grid.halo[0]), "tiles": n, "skipped": skipped,
            "skipped_fraction": skipped / n, "valid_pixel_fraction": valid_px}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--tile", type=int, action="append", default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    for path in args.files:
        for tile in args.tile or [128, 256, 512]:
            r = count(path, args.preset, tile)
            rows.append(r)
            print(f"{r['file']:<60} tile {tile:4d} halo {r['halo']:3d}: {r['skipped']:4d} of "
                  f"{r['tiles']:4d} tiles skipped ({100 * r['skipped_fraction']:5.1f} %), "
                  f"valid pixels {100 * r['valid_pixel_fraction']:5.1f} %", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
