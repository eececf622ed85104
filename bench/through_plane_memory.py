"""Peak RSS of ``zssr upscale --through-plane`` against the size of its input and output.

For each size, a synthetic thick-slice volume (NIfTI, float32, seeded: smooth blobs plus
noise, 0.8 mm pixels, slices 4 mm apart) is super-resolved ×4 through-plane by
``zssr upscale`` in a fresh process under ``/usr/bin/time -v`` with tiny training
(the point is memory, not quality), and the process's maximum resident set size is
recorded beside the LR volume's and the output's sizes.  The output is a Zarr store by
default (a streaming writer: chunk by chunk); ``--out-suffix .nii.gz`` measures the NIfTI
writer.

    nice -n 10 .venv/bin/python bench/through_plane_memory.py \\
        --json bench/results/through_plane_memory.json

``--writers`` measures the output writers alone, on the path ``zssr upscale
--through-plane`` takes after the engine (``pipeline.image.volume._write``: the result
read frame by frame from its ``DiskVolume`` into the writer, then committed), for
``.nii``, ``.nii.gz``, a DICOM thin-slice series and an enhanced multi-frame file
(uncompressed; ``--syntax rle`` for RLE) of 512-pixel frames, as the output grows with
``--factors``.  Each row runs in a fresh process under ``/usr/bin/time -v``, once per
source tree in ``--trees`` (e.g. a ``git archive`` of the commit before, side by side
with this checkout); the synthetic sources (tests/_dicom_fixtures' thick series and
enhanced file, a small NIfTI) are scaled in-plane to 512-pixel frames in metadata only,
and the result volume holds seeded random stored values:

    nice -n 10 .venv/bin/python bench/through_plane_memory.py --writers \\
        --trees before=bench/scratch/before_src after=. --factors 8 32 64 \\
        --json bench/results/through_plane_writers_memory.json

The volumes and outputs live under ``--work`` (default ``bench/scratch``, git-ignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = ((256, 256, 16), (512, 512, 32), (512, 512, 64))  # (rows, cols, slices)
TINY = ("train.max_iters=20", "net.width=8", "net.depth=4", "train.crop_size=32",
        "train.eval_windows=1", "infer.ensemble=false")


def make_volume(path: Path, rows: int, cols: int, slices: int, *, seed: int = 0) -> None:
    """A seeded float32 thick-slice volume: a few smooth blobs, a little noise."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    vol = np.empty((cols, rows, slices), dtype=np.float32)  # NIfTI order (i, j, k)
    centres = rng.random((6, 2)) * (rows, cols)
    for k in range(slices):
        img = np.zeros((rows, cols), np.float32)
        for i, (cy, cx) in enumerate(centres):
            r = (0.08 + 0.04 * np.sin(k / 3 + i)) * min(rows, cols)
            img += 100 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))
        img += rng.normal(0, 2, img.shape).astype(np.float32)
        vol[:, :, k] = img.T
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.8, 4.0, 1.0])), path)


def peak_rss(cmd: list[str]) -> tuple[int, float, int, str]:
    """``(max RSS in KiB, wall seconds, exit code, stderr tail)`` of ``cmd``."""
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True,
                          cwd=ROOT)
    wall = time.perf_counter() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return int(m.group(1)) if m else -1, wall, proc.returncode, proc.stderr[-2000:]


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


WRITER_FORMATS = ("nii", "nii.gz", "dicom-series", "dicom-enhanced")


def _writer_child(argv: list[str]) -> int:
    """In a fresh process whose ``io_adapters``/``pipeline`` come from the tree in the
    working folder: one through-plane result of ``factor`` written to ``fmt``."""
    import types

    fmt, factor, work, syntax = argv[0], float(argv[1]), Path(argv[2]), argv[3]
    sys.path.insert(0, os.getcwd())
    sys.path.insert(1, str(ROOT / "tests"))  # the DICOM fixtures
    from io_adapters.detect import open_reader
    from pipeline.image.volume import DiskVolume, _write, through_plane_metadata

    source = work / f"source-{fmt}"
    if not source.exists():
        source.mkdir(parents=True)
        if fmt.startswith("nii"):
            make_volume(source / "thick.nii", 64, 64, 5)
        elif fmt == "dicom-series":
            from _dicom_fixtures import thick_series

            thick_series(source, oblique=True, rows=64, cols=64)
        else:
            from _dicom_fixtures import thick_enhanced

            thick_enhanced(source, oblique=True, rows=44, cols=42)
    path = next(p for p in source.iterdir() if not p.name.startswith("."))
    with open_reader(path) as reader:
        meta = through_plane_metadata(reader.meta, factor, int((5 - 1) * factor) + 1)
    if fmt.startswith("nii"):
        from io_adapters.nifti import scale_nifti_metadata

        meta = scale_nifti_metadata(meta, 8)
    else:
        from io_adapters.dicom_writer import scale_dicom_metadata

        meta = scale_dicom_metadata(meta, 512 / meta.rows)  # 512-pixel rows
    out = work / f"out-{fmt}-x{factor:g}" if fmt == "dicom-series" else \
        work / f"out-{fmt}-x{factor:g}.{'dcm' if fmt.startswith('dicom') else fmt}"
    shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
    raw = work / f"result-{os.getpid()}.raw"
    rng = np.random.default_rng(0)
    try:
        sr = DiskVolume(raw, dtype=meta.dtype, mode="w+", shape=(meta.frames, meta.rows,
                                                                  meta.cols))
        for k in range(meta.frames):  # seeded values, a frame at a time
            sr[k] = (rng.normal(0, 100, (meta.rows, meta.cols)) if meta.dtype.kind == "f"
                     else rng.integers(0, 1000, (meta.rows, meta.cols))).astype(meta.dtype)
        options = {} if fmt.startswith("nii") else {"transfer_syntax": syntax}
        job = types.SimpleNamespace(input=path, output=out, overwrite=True,
                                    writer_options=options)
        t0 = time.perf_counter()
        _write(job, meta, sr, None)
        print(json.dumps({"frames": meta.frames, "rows": meta.rows, "cols": meta.cols,
                          "out_mb": meta.frames * meta.rows * meta.cols
                          * meta.dtype.itemsize / 1e6,
                          "write_s": round(time.perf_counter() - t0, 2)}))
    finally:
        raw.unlink(missing_ok=True)
    return 0


def _writers(args: argparse.Namespace) -> list[dict]:
    """Every format x factor x tree in a fresh process; rows for the JSON."""
    rows = []
    trees = dict(t.split("=", 1) for t in args.trees)
    for fmt in args.formats:
        for factor in args.factors:
            for name, tree in trees.items():
                folder = Path(tree).resolve()
                cmd = [sys.executable, str(Path(__file__).resolve()), "--writer-child", fmt,
                       f"{factor:g}", str(args.work.resolve()), args.syntax]
                t0 = time.perf_counter()
                proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True,
                                      text=True, cwd=folder,
                                      env={**os.environ, "PYTHONPATH": str(folder)})
                m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
                row = {"format": fmt, "syntax": args.syntax if fmt.startswith("dicom")
                       else None, "factor": factor, "tree": name, "rc": proc.returncode,
                       "peak_rss_mb": int(m.group(1)) * 1024 / 1e6 if m else None,
                       "wall_s": round(time.perf_counter() - t0, 1)}
                line = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
                row.update(json.loads(line[0]) if line and proc.returncode == 0 else
                           {"stderr": proc.stderr[-1500:]})
                rows.append(row)
                print(f"{fmt:15} x{factor:<4g} {name:7} frames {row.get('frames', '?'):>4} "
                      f"output {row.get('out_mb', 0):6.0f} MB  peak RSS "
                      f"{row['peak_rss_mb'] or -1:6.0f} MB  write {row.get('write_s', '?')} s"
                      f"  rc {proc.returncode}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="*", default=[f"{r}x{c}x{s}" for r, c, s in SIZES],
                   help="ROWSxCOLSxSLICES of each volume")
    p.add_argument("--scale-z", type=float, default=4.0)
    p.add_argument("--out-suffix", default=".zarr", help=".zarr or .nii.gz")
    p.add_argument("--slab", type=int, default=None, help="through_plane.slab (default 64)")
    p.add_argument("--label", default="", help="a note stored with the results")
    p.add_argument("--work", type=Path, default=ROOT / "bench" / "scratch" / "tp_memory")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--writers", action="store_true",
                   help="measure the output writers alone (see the module doc)")
    p.add_argument("--formats", nargs="*", default=list(WRITER_FORMATS),
                   choices=WRITER_FORMATS)
    p.add_argument("--factors", nargs="*", type=float, default=[8.0, 32.0, 64.0])
    p.add_argument("--trees", nargs="*", default=["after=."],
                   help="NAME=FOLDER of each source tree to measure")
    p.add_argument("--syntax", default="explicit-little", help="DICOM transfer syntax")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--writer-child"]:
        return _writer_child(argv[1:])
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.writers:
        rows = _writers(args)
        record = {"bench": "through_plane_writers_memory", "commit": _commit(),
                  "label": args.label, "trees": args.trees,
                  "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  "machine": f"{platform.machine()} {os.cpu_count()} cpu, "
                             f"{platform.python_version()}", "rows": rows}
        if args.json:
            old = json.loads(args.json.read_text()) if args.json.exists() else []
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps([*old, record], indent=1) + "\n")
        return 0 if all(r["rc"] == 0 for r in rows) else 1
    rows_out = []
    for text in args.sizes:
        r, c, s = (int(v) for v in text.split("x"))
        src = args.work / f"thick_{r}x{c}x{s}.nii"
        if not src.exists():
            make_volume(src, r, c, s)
        out = args.work / f"thin_{r}x{c}x{s}{args.out_suffix}"
        shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "pipeline.cli.main", "upscale", str(src), str(out),
               "--through-plane", "--scale-z", f"{args.scale_z:g}", "-q"]
        for item in TINY + ((f"through_plane.slab={args.slab}",) if args.slab else ()):
            cmd += ["--set", item]
        kib, wall, rc, err = peak_rss(cmd)
        n_out = int(np.floor((s - 1) * args.scale_z + 1e-9)) + 1
        row = {"size": [r, c, s], "slices_out": n_out, "lr_mb": r * c * s * 4 / 1e6,
               "out_mb": r * c * n_out * 4 / 1e6, "peak_rss_mb": kib * 1024 / 1e6,
               "wall_s": round(wall, 1), "rc": rc}
        if rc != 0:
            row["stderr"] = err
        rows_out.append(row)
        print(f"{r}x{c}x{s} -> {n_out} slices: LR {row['lr_mb']:.0f} MB, output "
              f"{row['out_mb']:.0f} MB, peak RSS {row['peak_rss_mb']:.0f} MB, "
              f"{wall:.0f} s, rc {rc}", flush=True)
    record = {"bench": "through_plane_memory", "commit": _commit(), "label": args.label,
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()} {os.cpu_count()} cpu, {platform.python_version()}",
              "scale_z": args.scale_z, "out_suffix": args.out_suffix, "slab": args.slab or 64,
              "settings": list(TINY),
              "rows": rows_out}
    if args.json:
        old = json.loads(args.json.read_text()) if args.json.exists() else []
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([*old, record], indent=1) + "\n")
    return 0 if all(r["rc"] == 0 for r in rows_out) else 1


if __name__ == "__main__":
    sys.exit(main())
