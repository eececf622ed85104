"""Write tests/data/dicom/series/: a 3-slice CT series derived from CT_small.dcm.

Each slice is CT_small with its pixels rolled by ``4 * k`` columns (real values,
distinct slices), ``ImagePositionPatient`` moved by ``k * SliceThickness``
along the slice normal, ``InstanceNumber = k + 1`` and SOP Instance / Series
UIDs made deterministic from a fixed seed.  File names are deliberately not in
anatomical order (``IM_c`` is slice 0), so readers must sort by position.

    .venv/bin/python tests/data/make_dicom_series.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

HERE = Path(__file__).resolve().parent / "dicom"
SEED = "zssr-pipeline tests/data/dicom/series v1"
NAMES = ("IM_c.dcm", "IM_a.dcm", "IM_b.dcm")  # slice k is written to NAMES[k]


def main() -> None:
    source = pydicom.dcmread(HERE / "CT_small.dcm")
    pixels = source.pixel_array
    orientation = np.asarray([float(v) for v in source.ImageOrientationPatient])
    normal = np.cross(orientation[:3], orientation[3:])
    origin = np.asarray([float(v) for v in source.ImagePositionPatient])
    step = float(source.SliceThickness)
    series_uid = generate_uid(entropy_srcs=[SEED, "series"])
    out = HERE / "series"
    out.mkdir(exist_ok=True)
    for k, name in enumerate(NAMES):
        ds = pydicom.dcmread(HERE / "CT_small.dcm")
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[SEED, "slice", str(k)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        position = origin + k * step * normal
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.SliceLocation = f"{float(np.dot(position, normal)):.6f}"
        ds.PixelData = np.roll(pixels, 4 * k, axis=1).astype(pixels.dtype).tobytes()
        ds.save_as(out / name, enforce_file_format=True)
        print(f"wrote {out / name}: z={position[2]:.3f}")


if __name__ == "__main__":
    main()
