"""Throughput of training and inference against the machine's own conv ceiling.

In one process: (1) the ceiling: FLOP/s of an fp32 3x3 conv 64->64, channels_last,
on this CPU/GPU; (2) training seconds/iteration of ``zssr.train`` on a real image
(Set5 bird LR) at the given crop size; (3) inference output megapixels/second of
``zssr.predict`` with the 8-way ensemble and 10 back-projections, on the Set5 bird
LR (144^2 -> 288^2) and on one pipeline-sized tile (a 300^2 crop of the real 4-band
Landsat 8 stack -> 600^2).  Each is reported against the ideal implied by the
ceiling (FLOPs counted from the network: training = 3x forward).
``--compare-unblocked`` also times inference with the network on whole images
(``zssr.inference.BLOCK_BYTES = 0``), interleaved with the default blocks.  The
process fixes glibc's malloc thresholds as the ``zssr`` command does
(``pipeline.runs.allocator``; ``ZSSR_SYSTEM_MALLOC=1`` keeps the defaults).

    python bench/throughput.py --json bench/results/throughput.json [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.runs.allocator import keep_freed_memory
from zssr import inference
from zssr.config import InferConfig, NetConfig, TrainConfig
from zssr.inference import predict
from zssr.model import build_model, count_flops
from zssr.sampling import ArrayCropSource
from zssr.train import train


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def conv_ceiling(device: torch.device, *, size: int = 192, reps: int = 15,
                 dtype: torch.dtype = torch.float32) -> float:
    """Median FLOP/s of one 3x3 64->64 conv, channels_last, no grad."""
    x = torch.randn(1, 64, size, size, device=device, dtype=dtype).contiguous(
        memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).to(device=device, dtype=dtype)
    conv = conv.to(memory_format=torch.channels_last)
    flops = 2 * 64 * 64 * 9 * size * size
    times = []
    with torch.inference_mode():
        for _ in range(3):
            conv(x)
        for _ in range(reps):
            _sync(device)
            t0 = time.perf_counter()
            conv(x)
            _sync(device)
            times.append(time.perf_counter() - t0)
    return flops / statistics.median(times)


def copy_bandwidth(device: torch.device, *, mbytes: int = 1024, reps: int = 10) -> float:
    """Device-to-device copy, bytes read + written per second (median)."""
    a = torch.empty(mbytes * 2 ** 20 // 4, device=device)
    b = torch.empty_like(a)
    times = []
    for i in range(reps + 2):
        _sync(device)
        t0 = time.perf_counter()
        b.copy_(a)
        _sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return 2 * a.numel() * 4 / statistics.median(times)


def load_image() -> np.ndarray:
    here = Path(__file__).resolve().parents[1] / "tests/data/sr"
    from PIL import Image

    files = sorted(here.glob("*bird*LR*.png")) or sorted(here.glob("*.png"))
    img = np.asarray(Image.open(files[0]).convert("RGB"))
    return np.moveaxis(img, -1, 0).astype(np.float32) / 255


def train_speed(img: np.ndarray, device: torch.device, crop: int, iters: int,
                repeats: int = 3) -> tuple[float, float]:
    """Median seconds/iteration of ``repeats`` runs of ``iters`` iterations (after a
    warm-up run), and minor page faults per iteration (memory the kernel had to zero-fill
    anew).  Each run starts a fresh ``train`` call, whose setup (the policy's evaluation
    crops) and one evaluation at iteration 0 are spread over the ``iters`` steps."""
    net = build_model(3, NetConfig(), seed=0, device=device)
    src = ArrayCropSource(img)
    times, faults = [], 0
    for run in range(repeats + 1):
        cfg = TrainConfig(max_iters=iters if run else 10, crop_size=crop,
                          run_test_every=10 ** 6, min_iters=10 ** 6)
        _sync(device)
        f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        train(net, src, scale=2, cfg=cfg, seed=run)
        _sync(device)
        if run:
            times.append((time.perf_counter() - t0) / iters)
            faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    return statistics.median(times), faults / (iters * repeats)


def load_tile(lr_size: int) -> np.ndarray:
    """A ``lr_size``^2 crop of the real 4-band uint16 Landsat 8 stack, in [0, 1]."""
    stack = np.load(Path(__file__).with_name("landsat8_stack_386x379.npz"))["stack"]
    return stack[:, :lr_size, :lr_size].astype(np.float32) / 65535


def infer_speed(img: np.ndarray, device: torch.device, reps: int) -> tuple[float, int]:
    net = build_model(img.shape[0], NetConfig(), seed=0, device=device)
    lr = torch.from_numpy(img)
    infer = InferConfig(ensemble=True, back_projection_iters=10)
    predict(net, lr, scale=2, infer=infer)
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        out = predict(net, lr, scale=2, infer=infer)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), int(out.shape[-1] * out.shape[-2])


def _blocked_vs_whole(img: np.ndarray, device: torch.device, reps: int
                      ) -> tuple[float, int, float]:
    """Median seconds with blocks (the default) and on whole images, interleaved."""
    default, blocked, whole = inference.BLOCK_BYTES, [], []
    try:
        for _ in range(reps):
            inference.BLOCK_BYTES = default
            sec, px = infer_speed(img, device, 1)
            blocked.append(sec)
            inference.BLOCK_BYTES = 0
            whole.append(infer_speed(img, device, 1)[0])
    finally:
        inference.BLOCK_BYTES = default
    return statistics.median(blocked), px, statistics.median(whole)


def _infer_row(name: str, lr: np.ndarray, device: torch.device, reps: int, ceiling: float,
               net_cfg: NetConfig, compare: bool) -> dict:
    """Output MP/s of ``predict`` (8-way ensemble, 10 back-projections) against the ideal."""
    row: dict = {"image": name, "lr_shape": list(lr.shape)}
    if compare:
        sec, px, whole = _blocked_vs_whole(lr, device, reps)
        row["whole_images_mp_per_s"] = px / whole / 1e6
        row["blocks_speedup"] = whole / sec
    else:
        sec, px = infer_speed(lr, device, reps)
    mps = px / sec / 1e6
    ideal_mps = ceiling / (8 * count_flops(lr.shape[0], net_cfg, 1)) / 1e6
    row.update(output_px=px, seconds=sec, mp_per_s=mps, ideal_mp_per_s=ideal_mps,
               fraction_of_ceiling=mps / ideal_mps)
    print(f"inference, {name}: {mps:.3f} MP/s output, ideal {ideal_mps:.3f} MP/s -> "
          f"{100 * mps / ideal_mps:.0f}% of the conv ceiling")
    if compare:
        print(f"  network on whole images: {row['whole_images_mp_per_s']:.3f} MP/s; "
              f"blocks {row['blocks_speedup']:.2f}x faster")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--crop", type=int, nargs="+", default=[128, 64])
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--tile-lr", type=int, default=300,
                    help="LR side of the tile-sized inference (tile 256 + halo 22 = 300)")
    ap.add_argument("--compare-unblocked", action="store_true",
                    help="also time inference with the network on whole images "
                         "(zssr.inference.BLOCK_BYTES = 0), interleaved with the default")
    args = ap.parse_args()
    device = torch.device(args.device)
    kept = keep_freed_memory()  # as the zssr command does (ZSSR_SYSTEM_MALLOC=1: not)
    img = load_image()
    ceiling = conv_ceiling(device)
    net_cfg = NetConfig()
    rows = {"ceiling_gflops": ceiling / 1e9, "threads": torch.get_num_threads(), "train": [],
            "malloc_thresholds_fixed": kept,
            "device": str(device), "image": list(img.shape)}
    print(f"conv ceiling (fp32 3x3 64->64 channels_last): {ceiling / 1e9:.1f} GFLOP/s, "
          f"{torch.get_num_threads()} threads")
    if device.type == "cuda":
        bf16 = conv_ceiling(device, size=512, dtype=torch.bfloat16)
        bw = copy_bandwidth(device)
        rows.update(ceiling_bf16_gflops=bf16 / 1e9, copy_gbytes_per_s=bw / 1e9)
        print(f"conv ceiling bf16: {bf16 / 1e9:.1f} GFLOP/s; device copy {bw / 1e9:.0f} GB/s")
    print(f"{'crop':>5} {'s/it':>8} {'ideal s/it':>11} {'ratio':>6} {'faults/it':>10}")
    for crop in args.crop:
        s_it, faults = train_speed(img, device, crop, args.iters)
        ideal = 3 * count_flops(3, net_cfg, crop * crop) / ceiling
        rows["train"].append({"crop": crop, "s_per_it": s_it, "ideal_s_per_it": ideal,
                              "ratio_to_ideal": s_it / ideal, "page_faults_per_it": faults})
        print(f"{crop:>5} {s_it:8.4f} {ideal:11.4f} {s_it / ideal:6.2f} {faults:10.0f}")
    images = {"infer": ("Set5 bird LR", img),
              "infer_tile": (f"Landsat 8 crop {args.tile_lr}^2 x 4 bands (one pipeline tile)",
                             load_tile(args.tile_lr))}
    for key, (name, lr) in images.items():
        rows[key] = _infer_row(name, lr, device, args.reps, ceiling, net_cfg,
                               args.compare_unblocked)
    if args.json:
        rows["machine"] = f"{platform.machine()} {platform.processor()}".strip()
        rows["torch"] = torch.__version__
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
