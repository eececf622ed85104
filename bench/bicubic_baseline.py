"""Bicubic baseline on Set5/Set14 by the benchmark protocol of :mod:`zssr.protocol`.

Prints one row per (dataset, scale): mean PSNR-Y, mean SSIM-Y, and the lowest PSNR
of our LR (:func:`zssr.protocol.make_lr`) against the SelfExSR LR files (inf when
bit-identical). Optionally writes the table and per-image values as JSON.

    .venv/bin/python bench/bicubic_baseline.py --json /tmp/bicubic.json

Published bicubic PSNR-Y for comparison: Set5 x2/x3/x4 33.68 / 30.41 / 28.43,
Set14 x2 30.24 dB.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from zssr.protocol import bicubic_baseline, make_lr, score

# File index -> name of the SelfExSR LR files (see shared/data/README.md).
DATASETS: dict[str, list[str]] = {
    "Set5": ["baby", "bird", "butterfly", "head", "woman"],
    "Set14": ["baboon", "barbara", "bridge", "coastguard", "comic", "face", "flowers",
              "foreman", "lenna", "man", "monarch", "pepper", "ppt3", "zebra"],
}
PUBLISHED = {("Set5", 2): 33.68, ("Set5", 3): 30.41, ("Set5", 4): 28.43, ("Set14", 2): 30.24}


def _read_chw(path: Path) -> np.ndarray:
    a = np.asarray(Image.open(path))
    return a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))


def evaluate(root: Path, dataset: str, scale: int) -> dict:
    rows = []
    for index, name in enumerate(DATASETS[dataset], start=1):
        hr = _read_chw(root / dataset / "HR" / f"{name}.png")
        sr = bicubic_baseline(hr, scale)
        p, s = score(sr, hr, scale)
        ref_path = (root / dataset / "LR_bicubic_SelfExSR" / f"image_SRF_{scale}"
                    / f"img_{index:03d}_SRF_{scale}_LR.png")
        lr_db = math.nan
        if ref_path.exists():
            ref = _read_chw(ref_path)
            lr = make_lr(hr, scale)
            lr_db = (math.inf if np.array_equal(lr, ref)
                     else float(peak_signal_noise_ratio(ref, lr, data_range=255)))
        rows.append({"image": name, "psnr_y": p, "ssim_y": s, "lr_vs_selfexsr_db": lr_db,
                     "lr_bit_identical": lr_db == math.inf})
    return {
        "dataset": dataset,
        "scale": scale,
        "mean_psnr_y": float(np.mean([r["psnr_y"] for r in rows])),
        "mean_ssim_y": float(np.mean([r["ssim_y"] for r in rows])),
        "min_lr_vs_selfexsr_db": float(min(r["lr_vs_selfexsr_db"] for r in rows)),
        "published_psnr_y": PUBLISHED.get((dataset, scale)),
        "images": rows,
    }


def _json_safe(value: object) -> object:
    """Non-finite floats become None (strict JSON); inf LR PSNR means bit-identical."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/sr_benchmarks"),
                        help="folder holding Set5/ and Set14/ (HR/ and LR_bicubic_SelfExSR/)")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if not (args.data / "Set5" / "HR").is_dir():
        parser.error(f"no Set5/HR under --data {args.data}; pass the sr_benchmarks folder")

    results = [evaluate(args.data, ds, k) for ds in args.datasets for k in args.scales]
    print(f"{'dataset':<8} {'scale':>5} {'PSNR-Y':>9} {'SSIM-Y':>8} {'published':>9} "
          f"{'min LR dB':>9}")
    for r in results:
        pub = "" if r["published_psnr_y"] is None else f"{r['published_psnr_y']:.2f}"
        print(f"{r['dataset']:<8} {r['scale']:>5} {r['mean_psnr_y']:>9.4f} "
              f"{r['mean_ssim_y']:>8.4f} {pub:>9} {r['min_lr_vs_selfexsr_db']:>9.2f}")
    if args.json is not None:
        doc = {"protocol": "zssr.protocol", "results": results}
        args.json.write_text(json.dumps(_json_safe(doc), indent=2, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
