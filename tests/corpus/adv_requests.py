"""Adversarial cases about requests: diverging training, hostile configs, huge rasters,
config bounds, odd values, DICOM geometry and stop signals (see :mod:`adversarial`)."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import _files as F
import numpy as np
import yaml
from _adv_base import COMMANDS, JOB_SET, RUN_FILES, SYNC, TINY, Builder

__all__ = ["REQUEST_GROUPS"]


# --------------------------------------------------------------------------- diverged


def _diverged(b: Builder) -> None:
    """``train.learning_rate`` above its bound (10) is refused before training, naming the
    bound; at the bound, a net that explodes stops with the setting named, no output."""
    k = "diverged"
    for name, value in (("lr_1e6", "1e6"), ("lr_1e30", "1.0e+30"), ("lr_11", "11")):
        c, i, o = b.case(name)
        b.upscale(name, k, b.png(i / "a.png"), o / "sr.png", "usage",
                  r"train\.learning_rate.*10", "--set", f"train.learning_rate={value}")
    c, i, o = b.case("lr_1e6_run")
    b.run(c.name, k, (b.png(i / "a.png"),), o / "run", "usage", r"train\.learning_rate",
          "--set", "train.learning_rate=1e6")
    c, i, o = b.case("lr_1e6_batch")
    b.png(i / "a.png")
    b.batch(c.name, k, b.job(c, inputs=[str(i / "*.png")], output=str(o),
                             set={**JOB_SET, "train.learning_rate": 1e6}), "usage",
            r"train\.learning_rate")
    c, i, o = b.case("lr_1e6_eval")
    b.png(i / "hr" / "a.png", side=(24, 24))
    b.eval(c.name, k, i / "hr", "usage", r"train\.learning_rate", "--set",
           "train.learning_rate=1e6", method="zssr")
    explode = ("--set", "train.learning_rate=10", "--set", "train.max_iters=30", "--set",
               "train.run_test_every=10", "--set", "net.depth=4", "--set", "net.width=16")
    problem = r"training diverged.*train\.learning_rate"
    c, i, o = b.case("diverge_png")
    b.upscale(c.name, k, b.png(i / "a.png", side=(40, 48)), o / "sr.png", "usage", problem,
              *explode)
    c, i, o = b.case("diverge_tif")
    src = F.write_tiff(i / "a.tif", b.rng.integers(0, 4000, (2, 32, 40)).astype(np.uint16))
    b.upscale(c.name, k, src, o / "sr.tif", "usage", problem, *explode)
    c, i, o = b.case("diverge_zarr")
    b.upscale(c.name, k, b.png(i / "a.png", side=(40, 48)), o / "sr.zarr", "usage", problem,
              *explode)
    c, i, o = b.case("diverge_run")
    b.run(c.name, k, (b.png(i / "a.png", side=(40, 48)),), o / "run", "batch", problem,
          *explode, "--retries", "0")
    c, i, o = b.case("diverge_batch")
    b.png(i / "a.png", side=(40, 48))
    b.batch(c.name, k, b.job(c, inputs=[str(i / "*.png")], output=str(o), set={
        **JOB_SET, "train.learning_rate": 10, "train.max_iters": 30, "train.run_test_every": 10,
        "net.depth": 4, "net.width": 16}), "batch", problem)
    c, i, o = b.case("diverge_eval")
    b.png(i / "hr" / "a.png", side=(40, 48))
    b.eval(c.name, k, i / "hr", "usage", problem, *explode, "--json", o / "r.json",
           method="zssr")


# --------------------------------------------------------------------- hostile configs


def _hostile_configs(b: Builder) -> None:
    k = "hostile_config"
    makers = {
        "laughs": (lambda p: F.billion_laughs(p), "YAML aliases"),
        "fifo": (lambda p: (os.mkfifo(p), p)[1], "not a regular file"),
        "latin1": (lambda p: (p.write_bytes("train:\n  max_iters: 2  # caf\xe9\n".encode(
            "latin-1")), p)[1], "UTF-8"),
        "user_step": (lambda p: (p.write_text('chain: {pre: ["numpy:save"]}\n'), p)[1],
                      "allow-user-steps"),
        "inf_in_file": (lambda p: (p.write_text("train:\n  noise_std: .inf\n"), p)[1],
                        "train.noise_std"),
    }
    for command in COMMANDS:
        for tag, (make, problem) in makers.items():
            name = f"cfg_{tag}_{command}"
            c, i, o = b.case(name)
            cfg = make(i / "cfg.yaml")
            if command == "batch":
                if tag == "user_step":
                    cfg.write_text(yaml.safe_dump({
                        "inputs": [str(i / "*.png")], "output": str(o), "scale": 2,
                        "set": JOB_SET, "scheduler": "synchronous",
                        "chain": {"pre": ["numpy:save"]}}))
                elif tag == "inf_in_file":
                    cfg.write_text(f"inputs: ['{i}/*.png']\noutput: '{o}'\nscale: 2\n"
                                   "set: {train.noise_std: .inf}\n")
                b.png(i / "a.png")
                b.batch(name, k, cfg, "usage", problem)
            elif command == "eval":
                b.png(i / "hr" / "a.png", side=(24, 24))
                b.eval(name, k, i / "hr", "usage", problem, "--config", cfg, method="zssr")
            elif command == "run":
                b.run(name, k, (b.png(i / "a.png"),), o / "run", "usage", problem,
                      "--config", cfg)
            else:
                b.upscale(name, k, b.png(i / "a.png"), o / "sr.png", "usage", problem,
                          "--config", cfg)
    for command, value in (("upscale", "/dev/zero"), ("run", "/dev/zero"),
                           ("eval", "/dev/zero")):
        name = f"cfg_dev_zero_{command}"
        c, i, o = b.case(name)
        if command == "upscale":
            b.upscale(name, k, b.png(i / "a.png"), o / "sr.png", "usage",
                      "/dev/zero.*not a regular file", "--config", value)
        elif command == "run":
            b.run(name, k, (b.png(i / "a.png"),), o / "run", "usage",
                  "/dev/zero.*not a regular file", "--config", value)
        else:
            b.png(i / "hr" / "a.png", side=(24, 24))
            b.eval(name, k, i / "hr", "usage", "/dev/zero.*not a regular file", "--config",
                   value, method="zssr")
    c, i, o = b.case("cfg_dev_zero_batch")
    b.batch(c.name, k, Path("/dev/zero"), "usage", "/dev/zero.*not a regular file",
            inputs=(i,))
    for value in (".inf", ".nan", "-.inf"):
        name = f"cfg_set_{value.strip('.-')}{'_neg' if value.startswith('-') else ''}"
        c, i, o = b.case(name)
        b.upscale(name, k, b.png(i / "a.png"), o / "sr.png", "usage", "train.noise_std",
                  "--set", f"train.noise_std={value}")
    c, i, o = b.case("cfg_set_nan_batch")
    b.png(i / "a.png")
    b.batch(c.name, k, b.job(c, inputs=[str(i / "*.png")], output=str(o)), "usage",
            "train.noise_std", "--set", "train.noise_std=.nan")


# ------------------------------------------------------------------------ huge rasters


def _huge_rasters(b: Builder) -> None:
    k = "huge_raster"
    makers = {
        "sparse_tiff_1e5": (lambda d: F.sparse_tiff(d / "sparse.tif", 100_000), ".tif"),
        "zarr_3e5": (lambda d: F.huge_zarr(d / "huge.zarr", 300_000), ".zarr"),
        "png8_1e5": (lambda d: F.huge_header_png(d / "huge8.png", 100_000), ".png"),
        "png16_1e5": (lambda d: F.huge_header_png(d / "huge16.png", 100_000, 16), ".png"),
    }
    problem = "(max-pixels|too large|pixels)"
    for tag, (make, suffix) in makers.items():
        c, i, o = b.case(f"huge_{tag}_upscale")
        b.upscale(c.name, k, make(i), o / f"sr{suffix}", "data", problem)
        c, i, o = b.case(f"huge_{tag}_run")
        b.run(c.name, k, (make(i),), o / "run", "batch", problem)
    for tag in ("sparse_tiff_1e5", "png8_1e5"):
        c, i, o = b.case(f"huge_{tag}_batch")
        makers[tag][0](i)
        b.batch(c.name, k, b.job(c, inputs=[str(i / "*")], output=str(o)), "batch", problem)
    c, i, o = b.case("huge_png8_1e5_eval")
    F.huge_header_png(i / "hr" / "huge.png", 100_000)
    b.eval(c.name, k, i / "hr", "data", problem)


# ----------------------------------------------------------------------- config bounds


def _config_bounds(b: Builder) -> None:
    k = "config_bounds"
    bounds = (("net.depth", "10000", "64"), ("net.width", "100000", "1024"),
              ("net.kernel_size", "99", "15"), ("train.max_iters", "1000000000", "10"))
    for command in COMMANDS:
        for key, value, limit in bounds:
            name = f"bound_{key.split('.')[1]}_{command}"
            c, i, o = b.case(name)
            problem = re.escape(key) + ".*" + limit
            if command == "upscale":
                b.upscale(name, k, b.png(i / "a.png"), o / "sr.png", "usage", problem,
                          "--set", f"{key}={value}")
            elif command == "run":
                b.run(name, k, (b.png(i / "a.png"),), o / "run", "usage", problem,
                      "--set", f"{key}={value}")
            elif command == "batch":
                b.png(i / "a.png")
                b.batch(name, k, b.job(c, inputs=[str(i / "*.png")], output=str(o),
                                       set={**JOB_SET, key: int(value)}), "usage", problem)
            else:
                b.png(i / "hr" / "a.png", side=(24, 24))
                b.eval(name, k, i / "hr", "usage", problem, "--set", f"{key}={value}",
                       method="zssr")


# -------------------------------------------------------------------------- odd values


def _odd_values(b: Builder) -> None:
    k = "odd_value"
    for scale in ("1.3333", "2.0001"):
        tag = scale.replace(".", "_")
        c, i, o = b.case(f"scale_{tag}_upscale")
        b.add(c.name, k, ("upscale", b.png(i / "a.png"), o / "sr.png", "--scale", scale,
                          *TINY), "usage", re.escape(scale))
        c, i, o = b.case(f"scale_{tag}_run")
        b.add(c.name, k, ("run", b.png(i / "a.png"), "--out", o / "run", "--scale", scale,
                          *SYNC, *TINY), "usage", re.escape(scale), bookkeeping=RUN_FILES)
    c, i, o = b.case("scale_1_3333_batch")
    b.png(i / "a.png")
    b.batch(c.name, k, b.job(c, inputs=[str(i / "*.png")], output=str(o), scale=1.3333),
            "usage", "1.3333")
    c, i, o = b.case("scale_1_3333_eval")
    b.png(i / "hr" / "a.png", side=(24, 24))
    b.add(c.name, k, ("eval", "--hr", i / "hr", "--scale", "1.3333", "--method", "bicubic"),
          "usage", "1.3333")
    for scheduler in ("ftp://x", "http://127.0.0.1:1"):
        tag = scheduler.split(":")[0]
        c, i, o = b.case(f"scheduler_{tag}_run")
        b.add(c.name, k, ("run", b.png(i / "a.png"), "--out", o / "run", "--scale", "2",
                          "--scheduler", scheduler, *TINY), "usage", re.escape(scheduler),
              bookkeeping=RUN_FILES)
        c, i, o = b.case(f"scheduler_{tag}_batch_job")
        b.png(i / "a.png")
        b.batch(c.name, k, b.job(c, inputs=[str(i / "*.png")], output=str(o),
                                 scheduler=scheduler), "usage", re.escape(scheduler))
    c, i, o = b.case("scheduler_ftp_batch_flag")
    b.png(i / "a.png")
    b.batch(c.name, k, b.job(c, inputs=[str(i / "*.png")], output=str(o)), "usage", "ftp://x",
            "--scheduler", "ftp://x")


# ----------------------------------------------------------------------- DICOM geometry


def _dicom_geometry(b: Builder) -> None:
    k = "dicom_geometry"
    for tag, attrs in (("spacing_one_value", {"PixelSpacing": [0.5]}),
                       ("spacing_zero", {"PixelSpacing": [0.0, 0.5]})):
        c, i, o = b.case(f"dcm_{tag}_upscale")
        src = F.dicom_edit(i / "ct.dcm", **attrs)
        b.upscale(c.name, k, src, o / "sr.dcm", "data", "ct.dcm: PixelSpacing")
        c, i, o = b.case(f"dcm_{tag}_run")
        b.run(c.name, k, (F.dicom_edit(i / "ct.dcm", **attrs),), o / "run", "batch",
              "PixelSpacing")
    c, i, o = b.case("dcm_spacing_one_value_batch")
    F.dicom_edit(i / "ct.dcm", PixelSpacing=[0.5])
    b.batch(c.name, k, b.job(c, inputs=[str(i / "ct.dcm")], output=str(o)), "batch",
            "PixelSpacing")
    for tag, iop in (("zero", [0, 0, 0, 0, 0, 0]), ("parallel", [1, 0, 0, 1, 0, 0])):
        c, i, o = b.case(f"series_orientation_{tag}_upscale")
        series = F.dicom_series_edit(i / "series", ImageOrientationPatient=iop)
        b.upscale(c.name, k, series, o / "sr", "data", "ImageOrientationPatient")
        c, i, o = b.case(f"series_orientation_{tag}_run")
        series = F.dicom_series_edit(i / "series", ImageOrientationPatient=iop)
        b.run(c.name, k, (series,), o / "run", "batch", "ImageOrientationPatient")


# ------------------------------------------------------------------------- stop signals


def _stop_signals(b: Builder) -> None:
    k = "stop_signal"

    def noise(path: Path, side: int = 300) -> Path:
        return F.png_of(path, b.rng.integers(0, 256, (side, side), dtype=np.uint8))

    slow = ("--tile", "32")
    for tag, out_name, sig, wait in (("cog", "sr.tif", signal.SIGTERM, ".sr.tif.tiles-*"),
                                     ("zarr", "sr.zarr", signal.SIGTERM, "sr.zarr.partial"),
                                     ("zarr_hup", "sr.zarr", signal.SIGHUP, "sr.zarr.partial"),
                                     ("dicom", "sr.dcm", signal.SIGTERM, ".sr.dcm.lock")):
        name = f"sigterm_upscale_{tag}" if sig == signal.SIGTERM else f"sighup_upscale_{tag}"
        c, i, o = b.case(name)
        src = F.dicom_edit(i / "ct.dcm") if tag == "dicom" else noise(i / "a.png")
        code = "terminated" if sig == signal.SIGTERM else "hangup"
        b.upscale(name, k, src, o / out_name, code, f"stopped by {signal.Signals(sig).name}",
                  *slow, stop=int(sig), wait_for=wait)
    c, i, o = b.case("sigterm_run")
    b.run(c.name, k, (noise(i / "a.png"),), o / "run", "terminated", "stopped by SIGTERM",
          *slow, stop=int(signal.SIGTERM), wait_for="tiles/*/*/*.done")
    c, i, o = b.case("sigterm_batch")
    noise(i / "a.png")
    b.batch(c.name, k, b.job(c, inputs=[str(i / "*.png")], output=str(o), set={
        **JOB_SET, "infer.back_projection_iters": 0, "tile": 32}), "terminated",
        "stopped by SIGTERM", stop=int(signal.SIGTERM),
        wait_for=".zssr-batch-run/tiles/*/*/*.done")


REQUEST_GROUPS = (_diverged, _hostile_configs, _huge_rasters, _config_bounds, _odd_values,
                  _dicom_geometry, _stop_signals)
