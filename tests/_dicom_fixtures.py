"""Small DICOM inputs built in a test's tmp_path from tests/data/dicom (shared by the tests)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

DICOM = Path(__file__).resolve().parent / "data" / "dicom"
SERIES_NAMES = ("IM_c.dcm", "IM_a.dcm", "IM_b.dcm")  # anatomical order (see make_dicom_series.py)

# Errors dciodvfy reports although PS3.3 allows the attribute: the MR Pulse Sequence and
# Bulk Motion Synchronization attributes are "Required if Image Type Value 1 is ORIGINAL or
# MIXED. May be present otherwise." (C.8.13.4), but dicom3tools' conditions lack "may be
# present otherwise", so every DERIVED Enhanced MR keeping them is flagged.
DCIODVFY_FALSE_POSITIVES = re.compile(
    r"Attribute present when condition unsatisfied .*Module=<(MRPulseSequence|"
    r"BulkMotionSynchronization)>")


def enhanced_with_groups(folder: Path) -> Path:
    """emri_small.dcm plus functional groups: shared spacing/orientation, per-frame
    position and rescale (slope 1 + 0.5 i, intercept -i) and MR frame type."""
    ds = pydicom.dcmread(DICOM / "emri_small.dcm")
    measures = Dataset()
    measures.PixelSpacing = [0.5, 0.6]
    measures.SliceThickness = 1.2
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    items = []
    for i in range(int(ds.NumberOfFrames)):
        plane, rescale, frame_type = Dataset(), Dataset(), Dataset()
        plane.ImagePositionPatient = [-10.0, -20.0, 1.2 * i]
        rescale.RescaleSlope = 1 + 0.5 * i
        rescale.RescaleIntercept = -i
        rescale.RescaleType = "US"
        frame_type.FrameType = ["ORIGINAL", "PRIMARY", "T1", "NONE"]
        item = Dataset()
        item.PlanePositionSequence = Sequence([plane])
        item.PixelValueTransformationSequence = Sequence([rescale])
        item.MRImageFrameTypeSequence = Sequence([frame_type])
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(items)
    path = folder / "enhanced.dcm"
    ds.save_as(path)
    return path


def copy_series(folder: Path) -> Path:
    out = folder / "series"
    shutil.copytree(DICOM / "series", out)
    return out


def add_slice(series: Path, name: str, *, z: float, **changes: object) -> Path:
    """A new slice in ``series`` cloned from IM_c at height ``z`` with ``changes``."""
    ds = pydicom.dcmread(series / "IM_c.dcm")
    position = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [position[0], position[1], z]
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(series / name)
    return series / name


def upsample(array: np.ndarray, sy: int, sx: int) -> np.ndarray:
    """Nearest-neighbour upsampling of ``(bands, rows, cols)`` stored values."""
    return np.repeat(np.repeat(array, sy, axis=1), sx, axis=2)


def dciodvfy_errors(path: Path) -> set[str]:
    """dciodvfy errors of one file, normalised (values, lengths and paths stripped).

    Raises ``RuntimeError`` when dciodvfy did not verify the file: a missing or crashed
    tool, no output, or a file it could not read ("Abort", "dataset read failed").  It
    exits 0 for a clean file and 1 when it reports errors, so the exit status alone does
    not tell; an empty error set from a tool that never ran must not pass as "no errors".
    """
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False,
                         timeout=120)
    text = run.stdout + run.stderr
    unread = ("Abort -" in text or "Dicom dataset read failed" in text
              or "Information Object Not found" in text)
    if run.returncode not in (0, 1) or not text.strip() or unread:
        raise RuntimeError(f"dciodvfy did not verify {path} (exit {run.returncode}): "
                           f"{text.strip()[:300]!r}")
    errors = set()
    for line in text.splitlines():
        if not line.startswith("Error") or DCIODVFY_FALSE_POSITIVES.search(line):
            continue
        line = line.replace(str(path), "<file>")
        line = re.sub(r" = <[^>]*>", "", line)
        line = re.sub(r"\d+ dec", "N dec", line)
        errors.add(" ".join(line.split()))
    return errors
