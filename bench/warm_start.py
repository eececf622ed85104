"""Warm start across a batch: cold vs warm quality and iterations, image by image.

Images of one batch that share a sensor or a series start from the previous
image's weights with the shorter ``train.warm_*`` schedule.  For each image
(after the first) this runs ZSSR cold and warm (from the previous image's
*cold* weights, as a batch would have them) and reports PSNR against ground
truth and iterations.  Sets: Set14 (HR -> benchmark LR, PSNR-Y) and the
frames of an enhanced MR series (each frame downscaled x2 by MATLAB bicubic
as its LR; PSNR on the stored values).

    python bench/warm_start.py --set14 ../shared/data/sr_benchmarks/Set14/HR --limit 6 \
        --dicom ../shared/data/dicom/emri_small.dcm --preset fast \
        --json bench/results/warm_start.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from configs import resolve_config
from pipeline.image.evaluate import _read_hr, hr_images
from zssr import super_resolve
from zssr.metrics import psnr
from zssr.protocol import make_lr, score
from zssr.resize import imresize


def set14_pairs(folder: Path, limit: int | None):
    for path in hr_images(folder, limit):
        hr = _read_hr(path)
        yield path.stem, make_lr(hr, 2).astype(np.float32) / 255, hr


def dicom_pairs(path: Path):
    from io_adapters.detect import open_reader

    with open_reader(path) as r:
        for f in range(r.meta.frames):
            hr = r.read(frame=f).astype(np.float32)
            hr = hr[:, : hr.shape[1] // 2 * 2, : hr.shape[2] // 2 * 2]
            lr = imresize(torch.from_numpy(hr), scale=0.5).numpy()
            yield f"{path.stem}[{f}]", lr, hr


def run(name, pairs, cfg, value_range, scorer) -> list[dict]:
    rows, prev_by_bands = [], {}
    for key, lr, hr in pairs:
        prev = prev_by_bands.get(lr.shape[0])  # warm only from an image with as many bands
        state: dict = {}
        sr, cold = super_resolve(lr, scale=2, config=cfg, value_range=value_range,
                                 state_out=state)
        row = {"set": name, "image": key, "cold_psnr": scorer(sr, hr),
               "cold_iters": cold.iterations, "cold_s": cold.seconds}
        if prev is not None:
            srw, warm = super_resolve(lr, scale=2, config=cfg, value_range=value_range,
                                      init_state=prev)
            row.update(warm_psnr=scorer(srw, hr), warm_iters=warm.iterations,
                       warm_s=warm.seconds)
            row["delta_db"] = row["warm_psnr"] - row["cold_psnr"]
            row["iter_ratio"] = row["warm_iters"] / row["cold_iters"]
            print(f"{key:<22} cold {row['cold_psnr']:7.3f} dB {row['cold_iters']:5d} it | "
                  f"warm {row['warm_psnr']:7.3f} dB {row['warm_iters']:5d} it | "
                  f"delta {row['delta_db']:+.3f} dB, iterations x{row['iter_ratio']:.2f}",
                  flush=True)
        prev_by_bands[lr.shape[0]] = state
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set14", type=Path, default=None)
    ap.add_argument("--dicom", type=Path, default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    cfg, _ = resolve_config(preset=args.preset, overrides=args.set)
    rows = []
    if args.set14:
        rows += run("Set14", set14_pairs(args.set14, args.limit), cfg, (0.0, 1.0),
                    lambda sr, hr: score(sr.astype(np.float64) * 255, hr, 2)[0])
    if args.dicom:
        rows += run("dicom", dicom_pairs(args.dicom), cfg, None,
                    lambda sr, hr: psnr(sr, hr, scale=2, data_range=float(hr.max() - hr.min()),
                                        y_channel=False))
    warm = [r for r in rows if "warm_psnr" in r]
    if warm:
        print(f"mean delta {np.mean([r['delta_db'] for r in warm]):+.3f} dB, mean iteration "
              f"ratio {np.mean([r['iter_ratio'] for r in warm]):.2f} over {len(warm)} images")
    if args.json:
        args.json.write_text(json.dumps({"preset": args.preset, "overrides": args.set,
                                         "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
