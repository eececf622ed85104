"""Blind SR at x2 or x4 (issue 16): ZSSR with an estimated kernel on a DIV2KRK-style set.

Rows per image (set from :mod:`bench.blind_set`, seeded): bicubic interpolation; ZSSR
assuming bicubic (``fast`` preset); ZSSR with the kernel estimated by
:func:`zssr.kernel_estimation.estimate_kernel`; ZSSR with the true kernel. The kernel
rows use ``fast`` plus the ``kernel`` preset (no rotated fathers, no ensemble,
back-projection with the kernel), as a user's ``--kernel`` run would. When the estimate
is bicubic itself (``model == "bicubic"``) the estimated row *is* the bicubic row (same
call: ``kernel=None`` with ``fast``), so it is reused, and marked ``snapped``.

Columns: PSNR-Y and SSIM-Y by :func:`zssr.protocol.score` (2 px shaved), the kernel's
relative L2 error against the true one (both centred by their centre of mass on a
25x25 grid), seconds for estimation and for ZSSR training (one thread each, side by
side in one process). ``--set5`` adds the no-harm check on Set5's bicubic LR (SelfExSR
files): ZSSR with the estimate against ZSSR assuming bicubic.

    nice -n 5 .venv/bin/python bench/blind.py --count 6 --json bench/results/blind_x2.json

``--scale 4`` runs the x4 set (31x31 kernels, HR 512 crops, see :mod:`bench.blind_set`)
with the estimator's analytic x4 kernel (its x2 fit composed); kernel errors are then on a
41x41 grid, against MATLAB's bicubic at x4 for the bicubic column. ``--max-iters N`` caps
``train.max_iters`` of every ZSSR row alike (a CPU budget).

``--landsat`` runs the Wald-protocol row on the real Landsat 8 stack instead (see
:func:`landsat_wald`): the 4-band reflectance degraded x2 by one random kernel of the x2
generator, super-resolved back, scored on reflectance over valid pixels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blind_set import DATA, build_set  # noqa: E402

from configs import load_preset, split_sections  # noqa: E402
from zssr import super_resolve  # noqa: E402
from zssr.config import ZSSRConfig, config_from_dict, merge_dicts  # noqa: E402
from zssr.kernel_estimation import bicubic_x2_kernel, centre_kernel, estimate_kernel  # noqa: E402
from zssr.protocol import score  # noqa: E402
from zssr.resize import imresize  # noqa: E402

SCALE = 2
SET5 = ["baby", "bird", "butterfly", "head", "woman"]


def configs(max_iters: int | None = None) -> tuple[ZSSRConfig, ZSSRConfig]:
    """``(fast, fast + kernel)`` engine configs; ``max_iters`` caps both alike."""
    fast = load_preset("fast")
    if max_iters is not None:
        fast = merge_dicts(fast, {"train": {"max_iters": max_iters}})
    with_kernel = merge_dicts(fast, load_preset("kernel"))
    return (config_from_dict(split_sections(fast)[0]),
            config_from_dict(split_sections(with_kernel)[0]))


def bicubic_kernel(scale: int) -> np.ndarray:
    """MATLAB's antialiased bicubic at integer ``scale`` as a 2-D HR-px kernel."""
    if scale == 2:
        return bicubic_x2_kernel()
    x = (np.arange(4 * scale, dtype=np.float64) - (4 * scale - 1) / 2) / scale
    ax = np.abs(x)
    w = np.where(ax <= 1, 1.5 * ax ** 3 - 2.5 * ax ** 2 + 1,
                 np.where(ax < 2, -0.5 * ax ** 3 + 2.5 * ax ** 2 - 4 * ax + 2, 0.0))
    w /= w.sum()
    return np.outer(w, w)


def kernel_error(estimate: np.ndarray, truth: np.ndarray, n: int = 25) -> float:
    """``||k - k_true|| / ||k_true||`` with both centred on an ``n x n`` grid."""
    out = []
    for k in (estimate, truth):
        k = np.asarray(k, np.float64)
        pad = np.zeros((n, n))
        oy, ox = (n - k.shape[0]) // 2, (n - k.shape[1]) // 2
        pad[oy:oy + k.shape[0], ox:ox + k.shape[1]] = k
        out.append(centre_kernel(pad))
    return float(np.linalg.norm(out[0] - out[1]) / np.linalg.norm(out[1]))


def zssr_row(lr: np.ndarray, hr: np.ndarray, cfg: ZSSRConfig,
             kernel: np.ndarray | None, scale: int = SCALE) -> dict:
    t0 = time.perf_counter()
    sr, hist = super_resolve(lr.astype(np.float32), scale=scale, config=cfg, kernel=kernel,
                             value_range=(0.0, 255.0))
    p, s = score(sr.astype(np.float64), hr, scale)
    return {"psnr": p, "ssim": s, "train_s": hist.seconds, "total_s": time.perf_counter() - t0,
            "iterations": hist.iterations}


def bicubic_row(lr: np.ndarray, hr: np.ndarray, scale: int = SCALE) -> dict:
    up = imresize(torch.from_numpy(lr.astype(np.float64)), scale=float(scale)).numpy()
    p, s = score(np.clip(up, 0, 255), hr, scale)
    return {"psnr": p, "ssim": s}


def run_item(name: str, lr: np.ndarray, hr: np.ndarray, truth: np.ndarray | None,
             cfgs: tuple[ZSSRConfig, ZSSRConfig], *, only_estimated: bool = False,
             snap_bicubic: float = 1.0, scale: int = SCALE) -> dict:
    """One image's rows; ``only_estimated`` runs just the estimate and its ZSSR row (the
    others merge in from an earlier run's JSONL, see ``--merge``); ``snap_bicubic`` is
    the estimator's option (0: always the fitted Gaussian)."""
    fast, kcfg = cfgs
    est = estimate_kernel(lr, scale=scale, snap_bicubic=snap_bicubic)
    use = est.kernel if est.ok and est.model == "gaussian" else None
    rows = {} if only_estimated else {"bicubic_interp": bicubic_row(lr, hr, scale),
                                      "zssr_bicubic": zssr_row(lr, hr, fast, None, scale)}
    if use is None:
        rows["zssr_estimated"] = dict(rows.get("zssr_bicubic")
                                      or zssr_row(lr, hr, fast, None, scale), snapped=True)
    else:
        rows["zssr_estimated"] = zssr_row(lr, hr, kcfg, use, scale)
    if truth is not None and not only_estimated:
        rows["zssr_true"] = zssr_row(lr, hr, kcfg, truth, scale)
    rec = {"name": name, "lr_shape": list(lr.shape), "rows": rows,
           "estimate": {"model": est.model, "ok": est.ok, "reason": est.reason,
                        "seconds": est.seconds, "windows": est.windows,
                        "covariance": None if est.covariance is None
                        else est.covariance.tolist(), "alpha": est.alpha}}
    if truth is not None:
        bic = bicubic_kernel(scale)
        used = use if use is not None else bic
        n = 25 if scale == 2 else 41
        rec["kernel_error"] = {"estimated": kernel_error(used, truth, n),
                               "bicubic": kernel_error(bic, truth, n)}
    log_line(rec)
    return rec


def log_line(rec: dict) -> None:
    r = rec["rows"]
    train = r.get("zssr_bicubic", r["zssr_estimated"]).get("train_s", float("nan"))
    parts = [f"{k}={v['psnr']:.2f}" for k, v in r.items()]
    ke = rec.get("kernel_error", {})
    print(f"{rec['name']:11s} " + " ".join(parts)
          + (f" kerr est={ke['estimated']:.3f} bic={ke['bicubic']:.3f}" if ke else "")
          + f" est={rec['estimate']['model']} {rec['estimate']['seconds']:.3f}s"
          + f" train={train:.1f}s", flush=True)


def summarise(records: list[dict]) -> dict:
    rows = list(records[0]["rows"])
    mean = {k: {m: float(np.mean([r["rows"][k][m] for r in records])) for m in ("psnr", "ssim")}
            for k in rows}
    out: dict = {"mean": mean, "count": len(records)}
    if "zssr_true" in rows:
        gap = mean["zssr_true"]["psnr"] - mean["zssr_bicubic"]["psnr"]
        got = mean["zssr_estimated"]["psnr"] - mean["zssr_bicubic"]["psnr"]
        out["gap_recovery"] = got / gap if gap > 0 else float("nan")
        out["kernel_error_mean"] = {k: float(np.mean([r["kernel_error"][k] for r in records]))
                                    for k in ("estimated", "bicubic")}
    else:
        out["estimated_minus_bicubic_db"] = (mean["zssr_estimated"]["psnr"]
                                             - mean["zssr_bicubic"]["psnr"])
    out["median_estimation_s"] = float(np.median([r["estimate"]["seconds"] for r in records]))
    out["median_fast_train_s"] = float(np.median([r["rows"]["zssr_bicubic"]["train_s"]
                                                  for r in records]))
    return out


LANDSAT_TIF = DATA / "geotiff" / "landsat8_LC08_L2SP_001062_20201031_SR_B2-B5_stack.tif"
LANDSAT_REFLECTANCE = (0.0000275, -0.2)  # Collection 2 Level-2 SR scale and offset (USGS)


def landsat_wald(cfgs: tuple[ZSSRConfig, ZSSRConfig], *, seed: int = 16,
                 snap_bicubic: float = 1.0) -> dict:
    """Wald protocol at x2 on the Landsat 8 B2-B5 stack (uint16, nodata 0).

    HR: the stack's reflectance (DN * 2.75e-5 - 0.2), cropped to even sides; valid where
    every band is non-zero. LR: the HR (nodata filled with each band's valid mean) correlated
    with one random x2 kernel of :func:`blind_set.random_kernel` (``rng(seed)``) and
    subsampled, by the x2 set's resize, in float (no quantisation); an LR pixel is valid
    where the degraded validity indicator is 1 (no nodata under the kernel). Every ZSSR
    row and the estimator get that LR mask. Scored over HR pixels that are valid, whose
    LR pixel and its 8 neighbours are valid, 2 px shaved at the border: per-band PSNR with
    the band's valid HR range as peak (mean over bands), and RMSE in reflectance.
    """
    import rasterio
    from blind_set import random_kernel
    from scipy import ndimage

    from zssr.kernels import prepare_kernel

    with rasterio.open(LANDSAT_TIF) as src:
        dn = src.read().astype(np.float64)
    dn = dn[:, : dn.shape[1] // 2 * 2, : dn.shape[2] // 2 * 2]
    valid = (dn > 0).all(axis=0)
    hr = dn * LANDSAT_REFLECTANCE[0] + LANDSAT_REFLECTANCE[1]
    filled = hr.copy()
    for b in range(hr.shape[0]):
        filled[b][~valid] = hr[b][valid].mean()
    kernel, draw = random_kernel(np.random.default_rng(seed))
    kt = prepare_kernel(kernel, 2.0).double()

    def down(x: np.ndarray) -> np.ndarray:
        return imresize(torch.from_numpy(x), scale=0.5, kernel=kt).numpy()

    lr = down(filled)
    lr_valid = down(valid[None].astype(np.float64))[0] > 1 - 1e-9
    ok_lr = ndimage.binary_erosion(lr_valid, np.ones((3, 3), bool))
    score_mask = valid & np.repeat(np.repeat(ok_lr, 2, 0), 2, 1)
    score_mask[:2] = score_mask[-2:] = False
    score_mask[:, :2] = score_mask[:, -2:] = False
    lo = np.array([hr[b][valid].min() for b in range(hr.shape[0])])
    hi = np.array([hr[b][valid].max() for b in range(hr.shape[0])])

    def scores(sr: np.ndarray) -> dict:
        err = (sr.astype(np.float64) - hr)[:, score_mask]
        mse = (err ** 2).mean(axis=1)
        return {"psnr": float(np.mean(10 * np.log10((hi - lo) ** 2 / mse))),
                "psnr_bands": (10 * np.log10((hi - lo) ** 2 / mse)).tolist(),
                "rmse": float(np.sqrt(mse.mean()))}

    lr32 = lr.astype(np.float32)
    vr = (float(lo.min()), float(hi.max()))

    def zrow(cfg: ZSSRConfig, k: np.ndarray | None) -> dict:
        t0 = time.perf_counter()
        sr, hist = super_resolve(lr32, scale=2, config=cfg, kernel=k, mask=lr_valid,
                                 value_range=vr)
        return {**scores(sr), "train_s": hist.seconds, "total_s": time.perf_counter() - t0,
                "iterations": hist.iterations}

    fast, kcfg = cfgs
    est = estimate_kernel(lr, scale=2, mask=lr_valid, snap_bicubic=snap_bicubic)
    use = est.kernel if est.ok and est.model == "gaussian" else None
    up = imresize(torch.from_numpy(lr), scale=2.0).numpy()
    rows = {"bicubic_interp": scores(np.clip(up, vr[0], vr[1])),
            "zssr_bicubic": zrow(fast, None)}
    rows["zssr_estimated"] = (dict(rows["zssr_bicubic"], snapped=True) if use is None
                              else zrow(kcfg, use))
    rows["zssr_true"] = zrow(kcfg, kernel)
    gap = rows["zssr_true"]["psnr"] - rows["zssr_bicubic"]["psnr"]
    rec = {"name": "landsat8_B2-B5", "hr_shape": list(hr.shape), "lr_shape": list(lr.shape),
           "valid_hr_fraction": float(valid.mean()), "lr_valid_fraction": float(lr_valid.mean()),
           "scored_hr_pixels": int(score_mask.sum()), "kernel_draw": draw, "rows": rows,
           "estimate": {"model": est.model, "ok": est.ok, "reason": est.reason,
                        "seconds": est.seconds, "windows": est.windows,
                        "covariance": None if est.covariance is None
                        else est.covariance.tolist()},
           "kernel_error": {"estimated": kernel_error(use if use is not None
                                                      else bicubic_x2_kernel(), kernel),
                            "bicubic": kernel_error(bicubic_x2_kernel(), kernel)},
           "gap_recovery": ((rows["zssr_estimated"]["psnr"] - rows["zssr_bicubic"]["psnr"])
                            / gap if gap > 0 else float("nan"))}
    log_line(rec)
    return rec


def set5_items() -> list[tuple[str, np.ndarray, np.ndarray]]:
    root = DATA / "sr_benchmarks" / "Set5"
    items = []
    for i, name in enumerate(SET5, start=1):
        lr = np.asarray(Image.open(root / f"LR_bicubic_SelfExSR/image_SRF_2/img_00{i}_SRF_2_LR.png")
                        .convert("RGB"))
        hr = np.asarray(Image.open(root / f"HR/{name}.png").convert("RGB"))
        items.append((name, np.moveaxis(lr, -1, 0).copy(), np.moveaxis(hr, -1, 0).copy()))
    return items


def set5_estimates() -> dict:
    """The estimator alone on Set5's bicubic LR: which model it picks (cheap, no ZSSR).

    Where it picks ``bicubic``, ZSSR with the estimate is ZSSR assuming bicubic (the same
    call), so the no-harm difference is 0 dB by construction on those images.
    """
    recs = []
    for name, lr, _ in set5_items():
        est = estimate_kernel(lr, scale=SCALE)
        recs.append({"name": name, "model": est.model, "ok": est.ok,
                     "covariance": None if est.covariance is None else est.covariance.tolist(),
                     "seconds": est.seconds})
    return {"items": recs, "snapped_to_bicubic": sum(r["model"] == "bicubic" for r in recs)}


def merge(paths: list[Path], out_path: Path, *, crop: int, scale: int = SCALE,
          max_iters: int | None = None) -> int:
    """Combine per-image JSONL records (``--jsonl`` of several runs) into one JSON table."""
    by_set: dict[str, dict[str, dict]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            recs = by_set.setdefault(rec.pop("set"), {})
            old = recs.get(rec["name"])
            if old is not None:  # a later file's rows (e.g. --only-estimated) replace these
                rec["rows"] = {**old["rows"], **rec["rows"]}
            recs[rec["name"]] = rec
    out: dict = {"scale": scale, "crop": crop * (scale // 2), "threads": 1,
                 "config": "fast (+ kernel preset for the kernel rows)"
                 + (f", train.max_iters capped at {max_iters} for every row"
                    if max_iters is not None else "")}
    for key, recs in by_set.items():
        order = list(recs.values())
        out[key] = {"items": order, "summary": summarise(order)}
        print(key, json.dumps(out[key]["summary"], indent=1))
    if scale == 2:
        out["set5_bicubic_estimates"] = set5_estimates()
        print("set5", json.dumps(out["set5_bicubic_estimates"]))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=1))
    print(f"wrote {out_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=6, help="first N items of the blind set")
    ap.add_argument("--skip", type=int, default=0, help="skip the first N items")
    ap.add_argument("--crop", type=int, default=256,
                    help="HR crop side (px) at x2; x4 crops twice this")
    ap.add_argument("--scale", type=int, default=SCALE, choices=(2, 4))
    ap.add_argument("--max-iters", type=int, default=None,
                    help="cap train.max_iters of every ZSSR row alike")
    ap.add_argument("--only-estimated", action="store_true",
                    help="run only the estimate and its ZSSR row (merge the rest later)")
    ap.add_argument("--names", nargs="+", default=None, help="only these items of the set")
    ap.add_argument("--set5", action="store_true", help="also the Set5 bicubic no-harm check")
    ap.add_argument("--set5-only", nargs="+", default=None,
                    help="only the Set5 check, on these images")
    ap.add_argument("--no-snap", action="store_true",
                    help="estimator without the bicubic snap (snap_bicubic=0)")
    ap.add_argument("--landsat", action="store_true",
                    help="only the Wald-protocol row on the Landsat 8 stack (x2)")
    ap.add_argument("--json", type=Path, default=Path("bench/results/blind_x2.json"))
    ap.add_argument("--jsonl", type=Path, default=None,
                    help="also append each image's record here as soon as it is done")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="only merge JSONL files of earlier runs into --json")
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.json, crop=args.crop, scale=args.scale,
                     max_iters=args.max_iters)
    torch.set_num_threads(1)
    cfgs = configs(args.max_iters)
    snap = 0.0 if args.no_snap else 1.0
    if args.landsat:
        rec = landsat_wald(cfgs, snap_bicubic=snap)
        out = {"scale": 2, "protocol": "Wald", "threads": 1,
               "config": "fast (+ kernel preset for the kernel rows)"
               + (f", train.max_iters capped at {args.max_iters} for every row"
                  if args.max_iters is not None else ""), "landsat": rec}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")
        return 0
    if args.set5_only:
        for n, lr, hr in set5_items():
            if n in args.set5_only:
                rec = run_item(n, lr, hr, None, cfgs, snap_bicubic=snap)
                if args.jsonl:
                    with args.jsonl.open("a") as fh:
                        fh.write(json.dumps({"set": "set5_bicubic" + ("_nosnap" if args.no_snap
                                                                      else ""), **rec}) + "\n")
        return 0
    out: dict = {"scale": args.scale, "crop": args.crop * (args.scale // 2), "threads": 1,
                 "config": "fast (+ kernel preset for the kernel rows)"
                 + (f", train.max_iters capped at {args.max_iters} for every row"
                    if args.max_iters is not None else "")}
    items = build_set(count=args.skip + args.count, crop=args.crop,
                      scale=args.scale)[args.skip:]
    if args.names:
        items = [it for it in build_set(crop=args.crop, scale=args.scale)
                 if it.name in args.names]
    recs = []
    for it in items:
        recs.append(run_item(it.name, it.lr, it.hr, it.kernel, cfgs,
                             only_estimated=args.only_estimated, snap_bicubic=snap,
                             scale=args.scale))
        if args.jsonl:
            with args.jsonl.open("a") as fh:
                fh.write(json.dumps({"set": "blind", **recs[-1]}) + "\n")
    if args.only_estimated:
        return 0  # partial records: merge them with --merge
    out["blind"] = {"items": recs, "summary": summarise(recs)}
    print(json.dumps(out["blind"]["summary"], indent=1))
    if args.set5:
        recs5 = []
        for n, lr, hr in set5_items():
            recs5.append(run_item(n, lr, hr, None, cfgs, snap_bicubic=snap))
            if args.jsonl:
                with args.jsonl.open("a") as fh:
                    fh.write(json.dumps({"set": "set5_bicubic", **recs5[-1]}) + "\n")
        out["set5_bicubic"] = {"items": recs5, "summary": summarise(recs5)}
        print(json.dumps(out["set5_bicubic"]["summary"], indent=1))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
