"""Wald's protocol for through-plane SR on the MNI ICBM152 2009a T1 template (issue 18).

The 1 mm isotropic template (../shared/data/volumes, provenance in its README) is the
reference.  Thick slices are made from it along the axial axis (NIfTI k): a Gaussian
slice profile of FWHM ``f`` mm, one slice kept every ``f`` mm (``f`` = 4, and 2.5 for a
non-integer factor; at 2.5 the kept slices fall between voxels and take the profile's
weights there), stored back as uint8 like the template.  Both are super-resolved back
to 1 mm with :func:`zssr.through_plane.super_resolve_through_plane` and with cubic
interpolation along the slice axis (Keys, a = -0.5, the same sample positions), and
scored against the original slices they land on: PSNR and SSIM (3-D, skimage, data
range 255) over the whole volume.

    OMP_NUM_THREADS=2 .venv/bin/python bench/through_plane.py [--factors 4 2.5]
        [--preset fast] [--set train.max_iters=800] [--json bench/results/through_plane.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from configs import resolve_config
from zssr.config import config_to_dict
from zssr.through_plane import (
    degrade_rows,
    output_slices,
    super_resolve_through_plane,
    upsample_rows,
)

MNI = Path(__file__).resolve().parents[2] / "shared/data/volumes/mni_icbm152_t1_2009a_1mm.nii.gz"


def thick_slices(hr: np.ndarray, factor: float) -> np.ndarray:
    """``(z, y, x)`` uint8: the Gaussian slice profile (FWHM ``factor`` px), every
    ``factor``-th slice, rounded back to uint8."""
    lr = degrade_rows(torch.from_numpy(hr.astype(np.float32)).permute(1, 0, 2), factor,
                      factor).permute(1, 0, 2).numpy()
    return np.clip(np.rint(lr), 0, 255).astype(np.uint8)


def cubic(lr: np.ndarray, factor: float, n: int) -> np.ndarray:
    up = upsample_rows(torch.from_numpy(lr.astype(np.float32)).permute(1, 0, 2), factor, n)
    return np.clip(np.rint(up.permute(1, 0, 2).numpy()), 0, 255).astype(np.uint8)


def scores(est: np.ndarray, ref: np.ndarray) -> dict:
    return {"psnr": float(peak_signal_noise_ratio(ref, est, data_range=255)),
            "ssim": float(structural_similarity(ref, est, data_range=255))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volume", type=Path, default=MNI)
    ap.add_argument("--factors", type=float, nargs="+", default=[4.0, 2.5])
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    cfg, _ = resolve_config(preset=args.preset, overrides=args.overrides)
    img = nib.load(args.volume)
    hr = np.asarray(img.dataobj).transpose(2, 1, 0)  # (z, y, x): axial slices first
    rows = []
    for f in args.factors:
        lr = thick_slices(hr, f)
        n = output_slices(lr.shape[0], f)
        ref = hr[:n]
        base = scores(cubic(lr, f, n), ref)
        t0, c0 = time.perf_counter(), time.process_time()
        sr, hist = super_resolve_through_plane(lr, factor=f, config=cfg, seed=args.seed)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        got = scores(sr, ref)
        row = {"factor": f, "lr_shape": list(lr.shape), "sr_shape": list(sr.shape),
               "cubic": base, "zssr": got, "gain_db": got["psnr"] - base["psnr"],
               "wall_s": wall, "cpu_s": cpu, "load_avg_1min_after": os.getloadavg()[0],
               "train_s": hist.train_seconds, "infer_s": hist.infer_seconds,
               "iterations": hist.iterations}
        rows.append(row)
        print(f"x{f:g}: LR {lr.shape} -> {sr.shape}; cubic {base['psnr']:.2f} dB / "
              f"{base['ssim']:.4f}; zssr {got['psnr']:.2f} dB / {got['ssim']:.4f} "
              f"({row['gain_db']:+.2f} dB); {wall:.0f} s, {cpu:.0f} CPU-s (train {hist.train_seconds:.0f} s, "
              f"{hist.iterations} it; infer {hist.infer_seconds:.0f} s)", flush=True)
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        doc = {"command": "bench/through_plane.py " + " ".join(
            [f"--factors {' '.join(f'{f:g}' for f in args.factors)}", f"--preset {args.preset}",
             *(f"--set {o}" for o in args.overrides)]),
               "commit": commit, "machine": f"{platform.machine()}, {os.cpu_count()} cores "
               f"(shared with other jobs during the run), torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads", "volume": str(args.volume.name),
               "config": config_to_dict(cfg), "results": rows}
        args.json.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
