"""Through-plane SR on real CT/MR volumes with the ``ct-thin`` / ``mr-thin`` presets (issue 18).

Every case is one ``zssr upscale IN OUT --through-plane --preset P ...`` process (the
command a user runs), timed under ``/usr/bin/time -v``: wall, user + system CPU seconds,
peak RSS; the CLI's own line gives training and inference seconds.  Of the files in
``../shared/data/dicom/`` only the enhanced multi-frame ones hold more than one slice;
``emri_small.dcm`` has no pixel spacing (through-plane refuses it), so its MR pixels go
in with the geometry of ``tests/_dicom_fixtures.enhanced_with_groups`` (pixel spacing
0.5 x 0.6 mm, slices 1.2 mm apart, axial) and rescale 1 / 0.

Cases (``--cases``):

* ``ct``: ``eCT_Supplemental.dcm`` as it is (real enhanced CT, 2 frames of 512^2,
  0.39 mm pixels, 10 mm slices 10 mm apart), ``ct-thin``, ``--scale-z 4`` (10 -> 2.5 mm).
  Two slices: no slice can be dropped, so no ground truth (cost only).
* ``mr``: emri_small (10 frames of 64^2, 1.2 mm), ``mr-thin``, ``--scale-z 2``: cost.
* ``mr-wald``: Wald on emri_small: a Gaussian slice profile of FWHM 2 slices, every 2nd
  slice kept (5 frames, 2.4 mm, stored as uint16 like the source), ``mr-thin``
  ``--scale-z 2`` back to 1.2 mm; PSNR / SSIM (3-D, skimage, data range = the source's
  maximum) against the source frames the new ones land on, beside cubic interpolation
  along the slice axis (``bench/through_plane.py``'s).
* ``mni-wald``: a thick-slice DICOM MR series built from the MNI template
  (``bench/through_plane.py``'s thick slices: FWHM 4 mm, every 4th axial slice, 48 slices of
  233 x 197 at 1 mm, 4 mm apart), ``mr-thin`` ``--scale-z 4``; the derived series read back
  with pydicom and scored against the template as in BENCHMARKS.md section 12.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/through_plane_real.py \\
        --json bench/results/through_plane_real.json [--cases ct mr mr-wald mni-wald]
        [--set train.max_iters=2]   # a smoke run

The ``zssr`` run is the checkout this script lies in (``python -c`` from its root), so a
``git archive`` copy measures that commit whatever the working tree holds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import torch
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from through_plane import MNI, cubic, thick_slices  # noqa: E402

from zssr.through_plane import degrade_rows, output_slices, upsample_rows  # noqa: E402

DICOM = ROOT.parent / "shared" / "data" / "dicom"
MR_HEADER = ROOT / "tests" / "data" / "dicom" / "MR_small.dcm"
SEED = "zssr-pipeline bench/through_plane_real v1"
CASES = ("ct", "mr", "mr-wald", "mni-wald")
CLI = "import sys; from pipeline.cli.main import main; sys.exit(main())"
TIME_FIELDS = {"Elapsed (wall clock) time (h:mm:ss or m:ss)": "wall",
               "User time (seconds)": "user_s", "System time (seconds)": "sys_s",
               "Maximum resident set size (kbytes)": "max_rss_kb"}


def emri_with_geometry(frames: np.ndarray, spacing: float, path: Path) -> Path:
    """emri_small's header with ``frames`` (uint16) and functional groups: pixel spacing
    0.5 x 0.6 mm, SliceThickness = ``spacing``, axial, slice k at z = k * spacing."""
    ds = pydicom.dcmread(DICOM / "emri_small.dcm")
    measures, orientation, shared = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.6], spacing
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    items = []
    for k in range(len(frames)):
        plane, item = Dataset(), Dataset()
        plane.ImagePositionPatient = [-10.0, -20.0, round(spacing * k, 6)]
        item.PlanePositionSequence = Sequence([plane])
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(items)
    ds.NumberOfFrames, ds.SpacingBetweenSlices = len(frames), spacing
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(
        entropy_srcs=[SEED, path.name])
    ds.PixelData = np.ascontiguousarray(frames.astype(np.uint16)).tobytes()
    ds.save_as(path)
    return path


def mni_series(lr: np.ndarray, spacing: float, folder: Path) -> Path:
    """``lr`` ``(z, y, x)`` uint8 as an axial MR series (MR_small's header, unsigned 16-bit
    stored values, 1 mm pixels, SliceThickness = SpacingBetweenSlices = ``spacing``)."""
    folder.mkdir()
    series = generate_uid(entropy_srcs=[SEED, "mni series"])
    for k, plane in enumerate(lr):
        ds = pydicom.dcmread(MR_HEADER)
        ds.SeriesInstanceUID, ds.InstanceNumber = series, k + 1
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(
            entropy_srcs=[SEED, "mni", str(k)])
        ds.Rows, ds.Columns = plane.shape
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 0, 16, 15
        ds.PixelSpacing, ds.ImageOrientationPatient = [1.0, 1.0], [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, spacing * k]
        ds.SliceLocation = spacing * k
        ds.SliceThickness = ds.SpacingBetweenSlices = spacing
        for key in ("WindowCenter", "WindowWidth", "SmallestImagePixelValue",
                    "LargestImagePixelValue"):
            if key in ds:
                del ds[key]
        ds.PixelData = np.ascontiguousarray(plane.astype(np.uint16)).tobytes()
        ds.save_as(folder / f"IM_{k:03d}.dcm", enforce_file_format=True)
    return folder


def read_volume(path: Path) -> np.ndarray:
    """A derived series folder or an enhanced file as ``(z, y, x)`` float64 real values
    (modality LUT applied), slices in position order."""
    if path.is_dir():
        slices = [pydicom.dcmread(p) for p in sorted(path.iterdir())]
        slices.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
        return np.stack([ds.pixel_array * float(ds.get("RescaleSlope", 1))
                         + float(ds.get("RescaleIntercept", 0)) for ds in slices])
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array.astype(np.float64)
    out = []
    for i, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        groups = item.get("PixelValueTransformationSequence") or ds.SharedFunctionalGroupsSequence[
            0].get("PixelValueTransformationSequence")
        slope, icpt = (1.0, 0.0) if not groups else (float(groups[0].RescaleSlope),
                                                   float(groups[0].RescaleIntercept))
        z = float(item.PlanePositionSequence[0].ImagePositionPatient[2])
        out.append((z, frames[i] * slope + icpt))
    return np.stack([f for _, f in sorted(out, key=lambda t: t[0])])


def run_zssr(argv: list[str], env: dict[str, str]) -> dict:
    """One ``zssr`` process under ``/usr/bin/time -v``."""
    load = os.getloadavg()[0]
    proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", CLI, *argv],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"zssr {' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    got: dict = {"load_avg_1min_before": load, "load_avg_1min_after": os.getloadavg()[0]}
    for line in proc.stderr.splitlines():
        key, _, value = line.strip().partition(": ")
        if key in TIME_FIELDS:
            got[TIME_FIELDS[key]] = value
    h, m, s = (["0"] + got.pop("wall").split(":"))[-3:]
    got["wall_s"] = int(h) * 3600 + int(m) * 60 + float(s)
    got["cpu_s"] = float(got.pop("user_s")) + float(got.pop("sys_s"))
    got["peak_rss_mb"] = int(got.pop("max_rss_kb")) / 1024
    line = proc.stdout.strip().splitlines()[-1]
    times = re.search(r"train ([\d.]+)s, (\d+) it; infer ([\d.]+)s", line)
    if times:
        got.update(train_s=float(times[1]), iterations=int(times[2]), infer_s=float(times[3]))
    got["cli_line"] = line
    return got


def scores(est: np.ndarray, ref: np.ndarray, data_range: float) -> dict:
    return {"psnr": float(peak_signal_noise_ratio(ref, est, data_range=data_range)),
            "ssim": float(structural_similarity(ref, est, data_range=data_range))}


def case(name: str, work: Path, sets: list[str], env: dict[str, str]) -> dict:
    extra = [a for s in sets for a in ("--set", s)] + ["--seed", "0", "--overwrite"]
    truth = None
    if name == "ct":
        src, preset, factor = DICOM / "eCT_Supplemental.dcm", "ct-thin", 4.0
        out = work / "ct_z4.dcm"
    elif name == "mr":
        frames = pydicom.dcmread(DICOM / "emri_small.dcm").pixel_array
        src, preset, factor = emri_with_geometry(frames, 1.2, work / "emri.dcm"), "mr-thin", 2.0
        out = work / "emri_z2.dcm"
    elif name == "mr-wald":
        hr = pydicom.dcmread(DICOM / "emri_small.dcm").pixel_array.astype(np.float32)
        lr = degrade_rows(torch.from_numpy(hr).permute(1, 0, 2), 2.0, 2.0).permute(1, 0, 2)
        lr = np.clip(np.rint(lr.numpy()), 0, 4095).astype(np.uint16)
        src, preset, factor = emri_with_geometry(lr, 2.4, work / "emri_thick.dcm"), "mr-thin", 2.0
        out = work / "emri_thick_z2.dcm"
        n = output_slices(len(lr), factor)
        up = upsample_rows(torch.from_numpy(lr.astype(np.float32)).permute(1, 0, 2), factor, n)
        truth = (hr[:n], np.clip(np.rint(up.permute(1, 0, 2).numpy()), 0, 4095),
                 float(hr.max()), 4095)
    else:  # mni-wald
        import nibabel as nib

        hr = np.asarray(nib.load(MNI).dataobj).transpose(2, 1, 0)  # (z, y, x)
        lr = thick_slices(hr, 4.0)
        src, preset, factor = mni_series(lr, 4.0, work / "mni_thick"), "mr-thin", 4.0
        out = work / "mni_thin"
        n = output_slices(len(lr), factor)
        truth = (hr[:n], cubic(lr, factor, n), 255.0, 255)
        hr = None
    row = {"case": name, "input": src.name, "preset": preset, "scale_z": factor}
    row.update(run_zssr(["upscale", str(src), str(out), "--preset", preset, "--scale-z",
                         f"{factor:g}", *extra], env))
    row["cli_line"] = row["cli_line"].replace(f"{work}/", "")
    sr = read_volume(out)
    lr_vol = read_volume(src)
    row.update(lr_shape=list(lr_vol.shape), sr_shape=list(sr.shape),
               lr_voxels=int(lr_vol.size), sr_voxels=int(sr.size))
    if truth is not None:
        ref, cub, data_range, top = truth
        ref = ref.astype(np.float64)
        est = np.clip(np.rint(sr), 0, top)
        row["data_range"] = data_range
        row["cubic"] = scores(cub.astype(np.float64), ref, data_range)
        row["zssr"] = scores(est, ref, data_range)
        row["gain_db"] = row["zssr"]["psnr"] - row["cubic"]["psnr"]
    print(json.dumps({k: v for k, v in row.items() if k != "cli_line"}), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    ap.add_argument("--set", action="append", default=[], dest="sets")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rows = []
    with tempfile.TemporaryDirectory(prefix="tp_real_") as tmp:
        for name in args.cases:
            rows.append(case(name, Path(tmp), args.sets, env))
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip()
        doc = {"command": "bench/through_plane_real.py --cases " + " ".join(args.cases)
               + "".join(f" --set {s}" for s in args.sets),
               "commit": commit or "unknown (not run from a git checkout)",
               "started_utc": started,
               "machine": f"{platform.machine()}, {os.cpu_count()} cores shared with other "
               f"jobs, torch {torch.__version__}, OMP_NUM_THREADS={env['OMP_NUM_THREADS']}",
               "results": rows}
        args.json.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
