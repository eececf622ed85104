"""Issue 3 acceptance on the real GeoTIFFs: COG validity, CRS, transform, dtype, nodata, Zarr.

For each GeoTIFF in ../shared/data/geotiff (the Landsat 8 4-band uint16 stack and
RGB.byte.tif), ``zssr upscale`` x2 to a COG and to Zarr, then checks:
``rio cogeo validate``; ``rio info`` (GDAL) reads it; CRS identical; pixel size
halved and origin unchanged; dtype and nodata preserved; nodata fraction within
1 % of the input's; the Zarr opened by xarray + rioxarray has the same CRS and
transform as the COG.

    python bench/geotiff_acceptance.py --json bench/results/geotiff_acceptance.json \
        [--preset fast] [--set train.max_iters=...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

FILES = ["geotiff/landsat8_LC08_L2SP_001062_20201031_SR_B2-B5_stack.tif", "geotiff/RGB.byte.tif"]


def nodata_fraction(ds) -> float:
    data = ds.read()
    return float((data == ds.nodata).all(axis=0).mean()) if ds.nodata is not None else 0.0


def check(src: Path, work: Path, args: argparse.Namespace) -> dict:
    bindir = Path(sys.executable).parent
    cog, zarr = work / f"{src.stem}_x2.tif", work / f"{src.stem}_x2.zarr"
    for out in (cog, zarr):
        cmd = [str(bindir / "zssr"), "upscale", str(src), str(out), "--scale", "2",
               "--preset", args.preset, "-q"] + [x for s in args.set for x in ("--set", s)]
        subprocess.run(cmd, check=True)
    valid = subprocess.run([str(bindir / "rio"), "cogeo", "validate", str(cog)],
                           capture_output=True, text=True)
    info = subprocess.run([str(bindir / "rio"), "info", str(cog)], capture_output=True,
                          text=True)
    import rioxarray  # noqa: F401
    import xarray as xr

    with rasterio.open(src) as a, rasterio.open(cog) as b:
        ds = xr.open_zarr(zarr)
        var = ds["band_data"]
        row = {
            "file": src.name, "shape_in": [a.count, a.height, a.width],
            "shape_out": [b.count, b.height, b.width],
            "cog_valid": valid.returncode == 0 and "is a valid cloud optimized" in valid.stdout,
            "gdal_reads": info.returncode == 0,
            "crs_identical": a.crs == b.crs,
            "pixel_size_in": [a.transform.a, a.transform.e],
            "pixel_size_out": [b.transform.a, b.transform.e],
            "origin_unchanged": (a.transform.c, a.transform.f) == (b.transform.c, b.transform.f),
            "dtype_kept": a.dtypes == b.dtypes, "nodata_kept": a.nodata == b.nodata,
            "nodata_fraction_in": nodata_fraction(a), "nodata_fraction_out": nodata_fraction(b),
            "overviews": b.overviews(1),
            "zarr_crs_equal": var.rio.crs == b.crs,
            "zarr_transform_equal": np.allclose(tuple(var.rio.transform())[:6],
                                                tuple(b.transform)[:6]),
        }
    row["nodata_fraction_ok"] = abs(row["nodata_fraction_out"] - row["nodata_fraction_in"]) <= 0.01
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in FILES:
            row = check(args.data / name, Path(tmp), args)
            rows.append(row)
            print(json.dumps(row))
    ok = all(r[k] for r in rows for k in ("cog_valid", "gdal_reads", "crs_identical",
                                           "origin_unchanged", "dtype_kept", "nodata_kept",
                                           "nodata_fraction_ok", "zarr_crs_equal",
                                           "zarr_transform_equal"))
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "all_ok": ok, "preset": args.preset,
                                         "overrides": args.set}, indent=2, default=str))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
