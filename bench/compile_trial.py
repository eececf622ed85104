"""Does ``torch.compile`` pay for scene inference on this CPU? (issue 19, a candidate)

The engine's tile inference (``zssr.inference.predict``) runs the per-image network over
blocks of about 16 MB of activations, plus bicubic upsampling, back-projection and the
median in fp32.  This bench times ``predict`` on one scene tile with the network as it is
(eager) and the same network through ``torch.compile`` (inductor, ``dynamic=False``: a
scene's tiles share their shapes, so each block shape compiles once), for the ``fast``
and ``scene`` inference settings, and the network alone on one engine block, fp32 and
bf16.  Same weights, interleaved round by round, median of ``--reps`` rounds; the first
compiled call (compilation) is timed apart.  Outputs are compared: largest absolute
difference against eager, and PSNR of the compiled tile against the eager one.

    OMP_NUM_THREADS=1 python bench/compile_trial.py --json bench/results/compile_trial.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from configs import resolve_config
from zssr.config import InferConfig
from zssr.inference import _net, predict
from zssr.model import build_model

SETTINGS = {"fast": {}, "scene": {"ensemble_members": (0, 5), "precision": "bf16"}}


def _timed(fn) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(torch.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bands", type=int, default=4)
    ap.add_argument("--lr", type=int, default=128, help="LR tile side (HR = 2x)")
    ap.add_argument("--block", type=int, default=256, help="network block core side")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg, _ = resolve_config(preset="fast")
    net = build_model(args.bands, cfg.net, seed=0).eval()
    # weights of a trained-like scale: the init is already the official N(0, 0.1/fan_in)
    # each block shape x autocast state is one graph: room for all of them (the default
    # limit of 8 would fall back to eager silently after the eighth)
    torch._dynamo.config.recompile_limit = 256
    torch._dynamo.config.accumulated_recompile_limit = 1024
    compiled = torch.compile(net, dynamic=False)
    rng = np.random.default_rng(0)
    # a smooth, scene-like LR tile (sums of random low-frequency cosines) in [0, 1]
    yy, xx = np.mgrid[: args.lr, : args.lr] / args.lr
    lr = np.stack([0.5 + 0.1 * sum(np.cos(2 * np.pi * (rng.uniform(0, 8) * yy + rng.uniform(0, 8)
                                                          * xx) + rng.uniform(0, 6.3))
                                   for _ in range(6)) for _ in range(args.bands)])
    lr = torch.from_numpy(np.clip(lr, 0, 1).astype(np.float32))
    radius = cfg.net.receptive_radius
    block = torch.rand(1, args.bands, args.block + 2 * radius, args.block + 2 * radius)

    cases = {}
    for name, fields in SETTINGS.items():
        infer = InferConfig(**{**cfg.infer.__dict__, **fields})
        cases[f"predict {name}"] = (
            lambda m, infer=infer: predict(m, lr, scale=2, infer=infer))
    for prec in ("fp32", "bf16"):
        cases[f"net block {prec}"] = (
            lambda m, prec=prec: torch.inference_mode()(_net)(m, block, prec))

    first = {}
    with torch.inference_mode():
        for name, fn in cases.items():  # compile (and warm eager) once per case
            fn(net)
            first[name], _ = _timed(lambda fn=fn: fn(compiled))
    rows = {name: {"eager": [], "compiled": []} for name in cases}
    diffs = {}
    for _ in range(args.reps):
        for name, fn in cases.items():
            te, ye = _timed(lambda fn=fn: fn(net))
            tc, yc = _timed(lambda fn=fn: fn(compiled))
            rows[name]["eager"].append(te)
            rows[name]["compiled"].append(tc)
            diffs[name] = {"max_abs": float((ye - yc).abs().max()),
                           "psnr_vs_eager": _psnr(ye.float(), yc.float())}
    result = []
    frames = torch._dynamo.utils.counters["stats"]
    fallbacks = {k: v for k, v in torch._dynamo.utils.counters["frames"].items()}
    for name in cases:
        e, c = (statistics.median(rows[name][k]) for k in ("eager", "compiled"))
        result.append({"case": name, "eager_s": round(e, 4), "compiled_s": round(c, 4),
                       "speedup": round(e / c, 3), "first_compiled_call_s": round(first[name], 2),
                       **diffs[name], "eager_all": rows[name]["eager"],
                       "compiled_all": rows[name]["compiled"]})
        print(f"{name:<20} eager {e:8.3f} s  compiled {c:8.3f} s  x{e / c:5.2f}  "
              f"(first compiled call {first[name]:.1f} s; max |diff| "
              f"{diffs[name]['max_abs']:.2e})")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "command": "OMP_NUM_THREADS=1 python bench/compile_trial.py " + " ".join(
            f"--{k} {v}" for k, v in vars(args).items()), "commit": commit,
        "machine": f"{platform.machine()} {platform.processor()}", "torch": torch.__version__,
        "threads": torch.get_num_threads(), "lr_tile": args.lr, "bands": args.bands,
        "reps": args.reps, "dynamo_frames": fallbacks,
        "dynamo_stats": dict(frames), "rows": result}, indent=1) + "\n")


if __name__ == "__main__":
    main()
