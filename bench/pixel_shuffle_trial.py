"""A network that computes at LR resolution (pixel shuffle): does it earn a place? (issue 19)

The paper's network runs at HR resolution on the bicubic-upsampled LR image, so every
output pixel costs the whole network.  The candidate here computes at LR resolution: the
upsampled input is folded by ``pixel_unshuffle`` (s x s HR pixels -> s^2 channels of one
LR pixel), the same body of ``depth`` 3x3 convolutions of ``width`` channels runs on that
LR grid, and ``pixel_shuffle`` unfolds its ``C * s^2`` output channels back to the HR
residual (``output = input + shuffle(body(unshuffle(input)))``).  Per output pixel the
body costs about 1/s^2 of the paper's; the interface (bicubic-upsampled in, HR out) is
the paper's, so the engine's training loop and ``predict`` run it unchanged.

Wald's protocol on the same real crops as ``bench/scene_frontier.py`` (its helpers: the
Landsat 8 stack and RGB.byte.tif, degraded x2 by a Gaussian PSF of sigma 1 HR px): each
crop trains both networks with the ``fast`` schedule (same seed, same fathers), then each
runs the ``fast`` inference settings (8 members, fp32) and the ``scene`` ones (2 members,
bf16), interleaved round by round, median of ``--reps``.  PSNR on reflectance over valid
pixels; gain over bicubic of the same LR.

    OMP_NUM_THREADS=1 python bench/pixel_shuffle_trial.py --json bench/results/pixel_shuffle_trial.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scene_frontier import (  # noqa: E402
    SCALE,
    SIGMA,
    best_windows,
    erode,
    psnr,
    run_setting,
    scenes,
    wald_crop,
)

from configs import resolve_config  # noqa: E402
from zssr.kernels import gaussian_kernel, prepare_kernel  # noqa: E402
from zssr.model import build_model  # noqa: E402
from zssr.resize import imresize  # noqa: E402
from zssr.sampling import ArrayCropSource  # noqa: E402
from zssr.train import train  # noqa: E402

INFER = {"fast": {}, "scene": {"ensemble_members": (0, 5), "precision": "bf16"}}


class PixelShuffleNet(nn.Module):
    """The paper's body (no biases, ReLU, official init) on the LR grid, folded by s."""

    def __init__(self, channels: int, depth: int, width: int, s: int,
                 init_variance: float) -> None:
        super().__init__()
        self.s = s
        c = channels * s * s
        widths = [c] + [width] * (depth - 1) + [c]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            conv = nn.Conv2d(a, b, 3, padding=1, bias=False)
            nn.init.normal_(conv.weight, 0.0, math.sqrt(init_variance / (9 * a)))
            layers.append(conv)
            if i < depth - 1:
                layers.append(nn.ReLU(inplace=True))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % self.s, -w % self.s
        y = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
        y = F.pixel_shuffle(self.body(F.pixel_unshuffle(y, self.s)), self.s)
        return x + y[..., :h, :w]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crop", type=int, default=192, help="HR crop side")
    ap.add_argument("--crops", type=int, default=1, help="crops per scene")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg, _ = resolve_config(preset="fast", overrides=["norm.policy=percentile", *args.set])
    kernel = prepare_kernel(gaussian_kernel(SIGMA), SCALE)
    rows = []
    for scene, refl, valid in scenes():
        for r, c in best_windows(valid, args.crop, args.crops):
            hr = refl[:, r:r + args.crop, c:c + args.crop]
            hv = valid[r:r + args.crop, c:c + args.crop]
            lr, lr_valid, norm, work, clip = wald_crop(hr, hv, cfg, kernel)
            nets, train_s, iters = {}, {}, {}
            for name in ("paper-net", "pixel-shuffle"):
                if name == "paper-net":
                    net = build_model(lr.shape[0], cfg.net, seed=cfg.seed)
                else:
                    torch.manual_seed(cfg.seed)
                    net = PixelShuffleNet(lr.shape[0], cfg.net.depth, cfg.net.width, SCALE,
                                          cfg.net.init_variance)
                t0 = time.perf_counter()
                hist = train(net, ArrayCropSource(work, lr_valid), scale=SCALE, cfg=cfg.train,
                             kernel=kernel, clip_range=clip, seed=cfg.seed)
                train_s[name], iters[name], nets[name] = (time.perf_counter() - t0,
                                                          hist.iterations, net)
            score = erode(hv, 8) & erode(np.ones_like(hv), 4)
            bic = imresize(torch.from_numpy(lr), scale=SCALE, output_shape=hr.shape[1:]).numpy()
            p_bic = psnr(bic, hr, score)
            combos = [(n, s) for n in nets for s in INFER]
            times: dict[tuple[str, str], list[float]] = {k: [] for k in combos}
            outs = {}
            for _ in range(args.reps):
                for n, s in combos:
                    infer = dataclasses.replace(cfg.infer, **INFER[s])
                    outs[n, s], t = run_setting(nets[n], work, norm, clip, kernel, infer)
                    times[n, s].append(t)
            mp = hr.shape[1] * hr.shape[2] / 1e6
            row = {"scene": scene, "window": [r, c, args.crop], "bicubic_psnr": p_bic,
                   "output_mp": mp, "train_s": train_s, "train_iters": iters, "rows": {}}
            for n, s in combos:
                p = psnr(outs[n, s], hr, score)
                row["rows"][f"{n} / {s}"] = {"psnr": p, "gain": p - p_bic,
                                             "seconds": float(np.median(times[n, s])),
                                             "s_per_mp": float(np.median(times[n, s])) / mp,
                                             "times": times[n, s]}
            rows.append(row)
            print(f"{scene} {r},{c}: bicubic {p_bic:.2f} dB; train "
                  + ", ".join(f"{n} {train_s[n]:.0f} s/{iters[n]} it" for n in nets) + "; "
                  + ", ".join(f"{k} {v['gain']:+.3f} dB {v['s_per_mp']:.1f} s/MP"
                              for k, v in row["rows"].items()), flush=True)
    keys = list(rows[0]["rows"])
    ref = "paper-net / fast"
    summary = {k: {
        "gain_db": float(np.median([r["rows"][k]["gain"] for r in rows])),
        "s_per_mp": float(np.median([r["rows"][k]["s_per_mp"] for r in rows])),
        "speedup_vs_fast": float(np.median([r["rows"][ref]["seconds"] / r["rows"][k]["seconds"]
                                            for r in rows])),
        "loss_vs_fast_db": [r["rows"][ref]["gain"] - r["rows"][k]["gain"] for r in rows],
    } for k in keys}
    print("| network / inference | gain (dB, median) | s / output MP | speed-up vs fast | "
          "loss vs fast per crop (dB) |")
    print("|---|---|---|---|---|")
    for k, s in summary.items():
        print(f"| {k} | {s['gain_db']:+.3f} | {s['s_per_mp']:.1f} | {s['speedup_vs_fast']:.1f} × "
              f"| {', '.join(f'{x:.3f}' for x in s['loss_vs_fast_db'])} |")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "command": "OMP_NUM_THREADS=1 python bench/pixel_shuffle_trial.py " + " ".join(
            f"--{k} {v}" for k, v in vars(args).items()), "commit": commit,
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "summary": summary, "crops": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
