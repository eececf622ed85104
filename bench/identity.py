"""Output fingerprints of ``zssr upscale`` and ``zssr run`` on real fixtures (issue 15).

The redesign must leave outputs bit-identical: this runs both commands on a GeoTIFF,
a DICOM series and a PNG of ``tests/data`` with the ``fast`` preset and seed 0 (one
torch thread, so the float sums are in one order), plus ``paper-gradual`` (shortened)
through both, and records per output the sha256 of its pixel values (read back by the
project's own readers, so a container-level difference such as a timestamp or a new UID
does not count, and a different pixel does) and of the metadata that must survive.

    .venv/bin/python bench/identity.py --json bench/results/identity_before.json
    .venv/bin/python bench/identity.py --json /tmp/after.json --compare bench/results/identity_before.json

``--compare`` exits 1 and names every output whose fingerprint changed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from io_adapters.detect import open_reader  # noqa: E402

DATA = ROOT / "tests" / "data"
FIXTURES = {
    "geotiff": (DATA / "io" / "geotiff" / "landsat_64x80.tif", "out.tif"),
    "dicom_series": (DATA / "dicom" / "series", "out_series"),
    "png": (DATA / "io" / "plain" / "butterfly_48x64.png", "out.png"),
}
FAST = ("--preset", "fast", "--seed", "0")
# paper-gradual, shortened so the bench stays minutes: the same code path (two gradual
# steps, father pyramid), fewer iterations.
GRADUAL = ("--preset", "paper-gradual", "--seed", "0", "--set", "train.max_iters=60")


def _zssr(*args: str, may_refuse: bool = False) -> str:
    """Run ``zssr ARGS``; "" on success, the error line when ``may_refuse`` and it failed."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "pipeline.cli.main", *args]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        if may_refuse:
            return done.stderr.strip().splitlines()[-1]
        raise SystemExit(f"{' '.join(cmd)}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return ""


def fingerprint(path: Path) -> dict:
    """sha256 of the pixel values (all frames) and of the metadata that must survive."""
    reader = open_reader(path)
    meta = reader.meta
    pixels = hashlib.sha256()
    for frame in range(meta.frames):
        arr = reader.read(None, frame=frame)
        pixels.update(str((arr.dtype, arr.shape)).encode())
        pixels.update(arr.tobytes())
    kept = {
        "shape": [meta.frames, meta.bands, meta.rows, meta.cols],
        "dtype": str(meta.dtype),
        "geo": repr(getattr(meta, "geo", None)),
        # sources name the file it was read from (a temporary path here): not kept data
        "medical": repr(replace(meta.medical, sources=()) if meta.medical else None),
    }
    reader.close()
    return {"pixels": pixels.hexdigest(), "meta": hashlib.sha256(json.dumps(kept).encode()).hexdigest(),
            "shape": kept["shape"]}


def run_all(work: Path, threads: int) -> dict:
    results = {}
    for name, (src, out_name) in FIXTURES.items():
        for label, preset in (("fast", FAST), ("paper-gradual", GRADUAL)):
            if label == "paper-gradual" and name != "png":
                continue  # one gradual image is enough to pin that path
            up = work / f"upscale_{name}_{label}" / out_name
            up.parent.mkdir(parents=True)
            t0 = time.perf_counter()
            _zssr("upscale", str(src), str(up), "--scale", "2", "-q", *preset)
            t_up = time.perf_counter() - t0
            run_dir = work / f"run_{name}_{label}"
            t0 = time.perf_counter()
            refused = _zssr("run", str(src), "--out", str(run_dir), "--scale", "2", "-q",
                            "--scheduler", "synchronous", "--torch-threads", str(threads),
                            *preset, may_refuse=label == "paper-gradual")
            t_run = time.perf_counter() - t0
            if refused:  # before issue 15, zssr run refused gradual_steps
                run_fp = {"refused": refused}
            else:
                outs = sorted(p for p in (run_dir / "outputs").iterdir())
                if len(outs) != 1:
                    raise SystemExit(f"{run_dir}/outputs: expected one output, found {outs}")
                run_fp = fingerprint(outs[0])
            results[f"{name}/{label}"] = {
                "upscale": fingerprint(up), "run": run_fp,
                "seconds": {"upscale": round(t_up, 1), "run": round(t_run, 1)}}
            print(f"{name}/{label}: upscale {t_up:.0f} s, run {t_run:.0f} s", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--compare", type=Path, default=None, help="earlier JSON to compare with")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="zssr_identity_") as tmp:
        results = run_all(Path(tmp), threads=1)
    doc = {"commit": commit, "machine": f"{platform.node()} ({os.cpu_count()} cpus), "
           f"Python {platform.python_version()}, torch {torch.__version__}",
           "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
           "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=1) + "\n")
    if args.compare is None:
        return 0
    before = json.loads(args.compare.read_text())["results"]
    changed = []
    for key, r in results.items():
        for cmd in ("upscale", "run"):
            old = before.get(key, {}).get(cmd, {})
            if "refused" in old and "refused" not in r[cmd]:
                old = before[key]["upscale"]  # newly accepted: must equal zssr upscale's output
            for part in ("pixels", "meta"):
                if old.get(part) != r[cmd].get(part):
                    changed.append(f"{key} {cmd} {part}")
    missing = sorted(set(before) - set(results))
    for line in changed + [f"{k}: missing" for k in missing]:
        print("CHANGED", line)
    print("identical" if not changed and not missing else f"{len(changed) + len(missing)} differ")
    return 1 if changed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
