"""Quality against inference cost on real scenes (issue 19): Wald's protocol, x2.

Each HR crop of a real scene (the Landsat 8 stack, ``bench/landsat8_stack_386x379.npz``,
a lossless copy of ``../shared/data/geotiff/..._SR_B2-B5_stack.tif``, reflectance
``DN * 2.75e-5 - 0.2``; and ``../shared/data/geotiff/RGB.byte.tif``, reflectance taken
as ``DN / 255``; nodata 0 in both) is degraded by 2 with a Gaussian PSF (sigma 1 HR px,
the engine's own ``Degradation``), and super-resolved back.  One network is trained per
crop (the ``fast`` schedule, percentile stretch as the ``landsat`` preset, the known PSF);
then every inference setting runs on the **same weights**, interleaved round by round,
so the times are side by side.  PSNR on reflectance (peak 1.0) over valid HR pixels
(8 px from any nodata, 4 px from the border); the gain is over bicubic of the same LR.

    OMP_NUM_THREADS=1 python bench/scene_frontier.py --json bench/results/scene_frontier.json \
        [--plot bench/results/scene_frontier.png] [--reps 3] [--crop 256] [--paper-crops 0]

``--paper-crops N`` also trains the ``paper`` preset on the first N crops (minutes each).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from configs import resolve_config
from zssr.api import fill_invalid
from zssr.config import InferConfig, ZSSRConfig
from zssr.inference import predict
from zssr.kernels import gaussian_kernel, prepare_kernel
from zssr.model import build_model
from zssr.normalize import Normalizer
from zssr.resize import imresize
from zssr.sampling import ArrayCropSource
from zssr.train import Degradation, train

HERE = Path(__file__).resolve().parent
GEOTIFF = HERE.parent.parent / "shared" / "data" / "geotiff"
SCALE = 2
SIGMA = 1.0  # Gaussian PSF, HR px (the landsat/sentinel2 presets' kernel_sigma)

# name -> InferConfig fields over the fast preset's (8 members, 10 back-projections, fp32)
SETTINGS: dict[str, dict] = {
    "fast": {},
    "bf16": {"precision": "bf16"},
    "m4": {"ensemble_members": (0, 2, 5, 7)},
    "m2": {"ensemble_members": (0, 5)},
    "m2-bf16": {"ensemble_members": (0, 5), "precision": "bf16"},
    "m8-bf16-bp2": {"precision": "bf16", "back_projection_iters": 2},
    "m4-bf16-bp2": {"ensemble_members": (0, 2, 5, 7), "precision": "bf16",
                    "back_projection_iters": 2},
    "m2-bf16-bp2": {"ensemble_members": (0, 5), "precision": "bf16",
                    "back_projection_iters": 2},
    "m2r-bf16-bp2": {"ensemble_members": (0, 2), "precision": "bf16",
                     "back_projection_iters": 2},
    "m2-bf16-bp5": {"ensemble_members": (0, 5), "precision": "bf16",
                    "back_projection_iters": 5},
    "m1": {"ensemble_members": (0,)},
    "m1-bf16": {"ensemble_members": (0,), "precision": "bf16"},
    "m1-bf16-bp5": {"ensemble_members": (0,), "precision": "bf16", "back_projection_iters": 5},
    "m1-bf16-bp2": {"ensemble_members": (0,), "precision": "bf16", "back_projection_iters": 2},
    "m1-bf16-bp0": {"ensemble_members": (0,), "precision": "bf16", "back_projection_iters": 0},
    "m1-bp2": {"ensemble_members": (0,), "back_projection_iters": 2},
    # int8 (bench only, not an engine option): the trained net quantised with torch.ao
    # (FX, onednn: per-channel weights, histogram-calibrated activations), calibrated on
    # the crop's own upsampled LR ("own") or on fixed seeded noise ("synthetic": the
    # same for every tile, as tiled == whole would need)
    "m2-int8": {"ensemble_members": (0, 5), "int8": "own"},
    "m2-int8syn": {"ensemble_members": (0, 5), "int8": "synthetic"},
    "m1-int8": {"ensemble_members": (0,), "int8": "own"},
    "m1-int8-bp5": {"ensemble_members": (0,), "int8": "own", "back_projection_iters": 5},
}


class _Quantized(torch.nn.Module):
    """A quantised GraphModule behind the interface ``predict`` expects."""

    def __init__(self, q: torch.nn.Module) -> None:
        super().__init__()
        self.q = q
        self.anchor = torch.nn.Parameter(torch.zeros(0))  # predict reads the device from it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q(x.contiguous())


def quantize_int8(model: torch.nn.Module, calibration: torch.Tensor) -> torch.nn.Module:
    import copy
    import warnings

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "onednn"
    m = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(m, get_default_qconfig_mapping("onednn"),
                              example_inputs=(calibration[:1],))
        with torch.inference_mode():
            prepared(calibration)
        return _Quantized(convert_fx(prepared))


def calibration_input(work: np.ndarray, clip, kind: str) -> torch.Tensor:
    """What the network sees: bicubic-upsampled LR (two orientations), or seeded noise."""
    w = torch.from_numpy(work)
    if kind == "own":
        return torch.stack([imresize(torch.rot90(w, k, (1, 2)), scale=float(SCALE))
                            for k in (0, 1)])
    lo, hi = (torch.as_tensor(v, dtype=torch.float32).reshape(-1, 1, 1) for v in clip)
    g = torch.Generator().manual_seed(0)
    noise = lo + (hi - lo) * torch.rand(w.shape[0], 64, 64, generator=g)
    return imresize(noise, scale=float(SCALE))[None]


def scenes() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, reflectance (C, H, W) float32, valid (H, W))`` of each real scene."""
    import rasterio

    stack = np.load(HERE / "landsat8_stack_386x379.npz")["stack"]
    out = [("landsat8", stack.astype(np.float32) * 2.75e-5 - 0.2, (stack != 0).all(0))]
    with rasterio.open(GEOTIFF / "RGB.byte.tif") as src:
        rgb = src.read()
    out.append(("rgb_byte", rgb.astype(np.float32) / 255, (rgb != 0).all(0)))
    return out


def best_windows(valid: np.ndarray, side: int, count: int) -> list[tuple[int, int]]:
    """Top-left corners of up to ``count`` non-overlapping ``side``-square windows with
    the most valid pixels (a 16 px search grid)."""
    h, w = valid.shape
    cand = [(valid[r:r + side, c:c + side].mean(), r, c)
            for r in range(0, h - side + 1, 16) for c in range(0, w - side + 1, 16)]
    cand.sort(reverse=True)
    picked: list[tuple[int, int]] = []
    for frac, r, c in cand:
        if frac < 0.9 or len(picked) == count:
            break
        if all(abs(r - r2) >= side or abs(c - c2) >= side for r2, c2 in picked):
            picked.append((r, c))
    return picked


def erode(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    for axis in (0, 1):
        for d in range(1, r + 1):
            out &= np.roll(mask, d, axis) & np.roll(mask, -d, axis)
    out[:r] = out[-r:] = False
    out[:, :r] = out[:, -r:] = False
    return out


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    mse = float(np.mean((a[:, where].astype(np.float64) - b[:, where]) ** 2))
    return 10 * np.log10(1.0 / mse)


def wald_crop(hr: np.ndarray, valid: np.ndarray, cfg: ZSSRConfig, kernel: torch.Tensor):
    """LR by Wald's protocol: ``(lr, lr_valid, norm, work, (lo, hi))``, what training and
    ``predict`` need."""
    deg = Degradation(SCALE, kernel)
    lr = deg.down(torch.from_numpy(fill_invalid(hr, valid))).numpy()
    lr_valid = erode(valid, 3)[::SCALE, ::SCALE]  # the PSF's +-3 px footprint all valid
    norm = Normalizer.fit(lr, policy=cfg.norm.policy, percentiles=cfg.norm.percentiles,
                          mask=lr_valid)
    work = fill_invalid(norm.forward(lr), lr_valid)
    lo, hi = (torch.from_numpy(v) for v in norm.clip_range)
    return lr, lr_valid, norm, work, (lo, hi)


def train_crop(hr: np.ndarray, valid: np.ndarray, cfg: ZSSRConfig, kernel: torch.Tensor):
    """LR by Wald's protocol, then one trained network; returns what ``predict`` needs."""
    lr, lr_valid, norm, work, (lo, hi) = wald_crop(hr, valid, cfg, kernel)
    model = build_model(lr.shape[0], cfg.net, seed=cfg.seed)
    t0 = time.perf_counter()
    hist = train(model, ArrayCropSource(work, lr_valid), scale=SCALE, cfg=cfg.train,
                 kernel=kernel, clip_range=(lo, hi), seed=cfg.seed)
    seconds = time.perf_counter() - t0
    return lr, lr_valid, norm, work, (lo, hi), model, seconds, hist.iterations


def run_setting(model, work, norm, clip, kernel, infer: InferConfig) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    sr = predict(model, torch.from_numpy(work), scale=SCALE, infer=infer, down_kernel=kernel,
                 clip_range=clip)
    seconds = time.perf_counter() - t0
    return norm.inverse(sr.numpy()), seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crop", type=int, default=256, help="HR crop side")
    ap.add_argument("--crops", type=int, default=2, help="crops per scene")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--paper-crops", type=int, default=0)
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--set", action="append", default=[], help="override of the training "
                    "config (e.g. train.max_iters=50, for a quick look)")
    ap.add_argument("--replot", action="store_true", help="only redraw --plot from --json")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args()
    if args.replot:
        plot(json.loads(args.json.read_text())["summary"], args.plot)
        return
    torch.set_num_threads(args.threads)
    names = args.settings.split(",")
    base, _ = resolve_config(preset="fast", overrides=["norm.policy=percentile", *args.set])
    paper, _ = resolve_config(preset="paper", overrides=["norm.policy=percentile"])
    kernel = prepare_kernel(gaussian_kernel(SIGMA), SCALE)
    rows = []
    for scene, refl, valid in scenes():
        for r, c in best_windows(valid, args.crop, args.crops):
            hr = refl[:, r:r + args.crop, c:c + args.crop]
            hv = valid[r:r + args.crop, c:c + args.crop]
            lr, lr_valid, norm, work, clip, model, t_train, iters = train_crop(hr, hv, base,
                                                                               kernel)
            score = erode(hv, 8) & erode(np.ones_like(hv), 4)
            bic = imresize(torch.from_numpy(lr), scale=SCALE, output_shape=hr.shape[1:]).numpy()
            p_bic = psnr(bic, hr, score)
            times: dict[str, list[float]] = {n: [] for n in names}
            outs: dict[str, np.ndarray] = {}
            nets, quantize_s = {}, {}
            for n in names:
                kind = SETTINGS[n].get("int8")
                t0 = time.perf_counter()
                nets[n] = model if kind is None else quantize_int8(
                    model, calibration_input(work, clip, kind))
                quantize_s[n] = time.perf_counter() - t0
            for _ in range(args.reps):  # round by round: every setting side by side
                for n in names:
                    fields = {k: v for k, v in SETTINGS[n].items() if k != "int8"}
                    infer = dataclasses.replace(base.infer, **fields)
                    outs[n], t = run_setting(nets[n], work, norm, clip, kernel, infer)
                    times[n].append(t)
            row = {"scene": scene, "window": [r, c, args.crop], "valid": float(hv.mean()),
                   "train_s": t_train, "train_iters": iters, "bicubic_psnr": p_bic,
                   "output_mp": hr.shape[1] * hr.shape[2] / 1e6, "settings": {}}
            for n in names:
                p = psnr(outs[n], hr, score)
                ref = outs["fast"] if "fast" in outs else outs[n]
                row["settings"][n] = {
                    "psnr": p, "gain": p - p_bic, "seconds": float(np.median(times[n])),
                    "times": times[n], "quantize_s": quantize_s[n],
                    "max_abs_vs_fast": float(np.abs(outs[n] - ref)[:, score].max())}
            if len(rows) < args.paper_crops:
                *_, pmodel, pt, piters = train_crop(hr, hv, paper, kernel)
                sr, t = run_setting(pmodel, work, norm, clip, kernel, paper.infer)
                row["paper"] = {"psnr": psnr(sr, hr, score), "gain": psnr(sr, hr, score) - p_bic,
                                "seconds": t, "train_s": pt, "train_iters": piters}
            rows.append(row)
            print(f"{scene} {r},{c}: bicubic {p_bic:.2f} dB, train {t_train:.0f} s; "
                  + ", ".join(f"{n} {row['settings'][n]['gain']:+.2f} dB "
                              f"{row['settings'][n]['seconds']:.2f} s" for n in names),
                  flush=True)
    summary = summarize(rows, names)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE).stdout.strip()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "command": "python bench/scene_frontier.py", "args": {k: str(v) for k, v in
                                                              vars(args).items()},
        "commit": commit, "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "threads": args.threads, "settings": {
            n: {k: list(v) if isinstance(v, tuple) else v for k, v in SETTINGS[n].items()}
            for n in names}, "summary": summary, "crops": rows}, indent=1))
    print_table(summary)
    if args.plot:
        plot(summary, args.plot)


def summarize(rows: list[dict], names: list[str]) -> dict[str, dict]:
    """Medians over crops: gain, s per output MP, speed-up over ``fast`` (per crop, side
    by side) and gain lost against ``fast`` (per crop, same weights)."""
    out = {}
    for n in names:
        s = [r["settings"][n] for r in rows]
        f = [r["settings"].get("fast", r["settings"][n]) for r in rows]
        out[n] = {
            "gain_db": float(np.median([x["gain"] for x in s])),
            "s_per_mp": float(np.median([x["seconds"] / r["output_mp"]
                                         for x, r in zip(s, rows, strict=True)])),
            "speedup_vs_fast": float(np.median([y["seconds"] / x["seconds"]
                                                for x, y in zip(s, f, strict=True)])),
            "loss_vs_fast_db": float(np.median([y["gain"] - x["gain"]
                                                for x, y in zip(s, f, strict=True)])),
            "worst_loss_vs_fast_db": float(max(y["gain"] - x["gain"]
                                               for x, y in zip(s, f, strict=True))),
        }
    papers = [r["paper"] for r in rows if "paper" in r]
    if papers:
        out["paper"] = {"gain_db": float(np.median([p["gain"] for p in papers])),
                        "crops": len(papers),
                        "train_s": float(np.median([p["train_s"] for p in papers]))}
    return out


def print_table(summary: dict[str, dict]) -> None:
    print("| setting | gain over bicubic (dB) | s per output MP | speed-up vs fast | "
          "loss vs fast (dB, median / worst) |")
    print("|---|---|---|---|---|")
    for n, s in summary.items():
        if n == "paper":
            print(f"| paper ({s['crops']} crops) | {s['gain_db']:+.3f} | | | |")
            continue
        print(f"| {n} | {s['gain_db']:+.3f} | {s['s_per_mp']:.2f} | "
              f"{s['speedup_vs_fast']:.1f} × | {s['loss_vs_fast_db']:.3f} / "
              f"{s['worst_loss_vs_fast_db']:.3f} |")


def plot(summary: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n, s in summary.items():
        if n == "paper":
            continue
        preset = {"fast": "fast", "m2-bf16": "scene", "m1-bf16": "scene-fast"}.get(n)
        ax.scatter(s["s_per_mp"], s["gain_db"], marker="x" if "int8" in n else "o",
                   color="C3" if preset else ("C7" if "int8" in n else "C0"))
        n = f"{n} = {preset}" if preset and preset != n else n
        ax.annotate(n, (s["s_per_mp"], s["gain_db"]), fontsize=8, xytext=(4, 2),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("inference seconds per output megapixel (1 thread, log)")
    ax.set_ylabel("PSNR gain over bicubic (dB, median of crops)")
    ax.set_title("ZSSR x2 on real scenes (Wald's protocol): quality vs inference cost\n"
                 "red: presets; x: int8 (bench only)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
