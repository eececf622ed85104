"""Write tests/data/geometry/: inputs whose geometry is not axis-aligned (issue 14).

Every other fixture is an identity-axial DICOM or a north-up GeoTIFF, where a
metadata rule that ignores ImageOrientationPatient or scales only ``a``/``e`` of
a geotransform gives the right answer by luck.  These do not:

* ``oblique/IM_{c,a,b}.dcm``: a 3-slice CT series derived from
  ``dicom/CT_small.dcm``.  Slice ``k`` holds the crop rows [40:88], columns
  [32 + 4k : 96 + 4k] of its pixels (48 x 64, distinct slices), PixelSpacing
  [0.6, 0.9] (row spacing 0.6 mm, column spacing 0.9 mm), SliceThickness 2.5,
  ImageOrientationPatient the first two columns of ``R = Rx(a) @ Rz(b)`` with
  ``cos a = 0.96, sin a = 0.28`` (16.26 degrees about x) and ``cos b = 0.8,
  sin b = 0.6`` (36.87 degrees about z).  Those Pythagorean cosines make every
  entry a short exact decimal, so the written direction cosines are exactly
  orthonormal: row direction (0.8, 0.576, 0.168), column direction
  (-0.6, 0.768, 0.224), normal (0, -0.28, 0.96).  ImagePositionPatient is
  ``ORIGIN + 2.5 k * normal``; file names are not in anatomical order
  (``IM_c`` is slice 0), UIDs are derived from a fixed seed string.
* ``rotated_sheared_96x128.tif``: the pixels, CRS, nodata and colour
  interpretation of ``io/geotiff/rgb_byte_96x128.tif`` with the geotransform
  ``Affine(282, 103, 130788.5, 95, -276, 2798111)``: rotated (b, d != 0) and
  sheared (the column and row vectors (282, 95) and (103, -276) are not
  perpendicular).
* ``south_up_96x128.tif``: the same pixels flipped upside down with
  ``Affine(300, 0, 130788.5, 0, 300, 2769311)`` (e > 0: row 0 is the south edge).

    .venv/bin/python tests/data/make_geometry_fixtures.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import rasterio
from affine import Affine
from pydicom.uid import generate_uid

DATA = Path(__file__).resolve().parent
OUT = DATA / "geometry"
SEED = "zssr-pipeline tests/data/geometry/oblique v1"
NAMES = ("IM_c.dcm", "IM_a.dcm", "IM_b.dcm")  # slice k is written to NAMES[k]
ROW_DIRECTION = (0.8, 0.576, 0.168)  # direction of increasing column index
COLUMN_DIRECTION = (-0.6, 0.768, 0.224)  # direction of increasing row index
PIXEL_SPACING = (0.6, 0.9)  # (between rows, between columns) in mm
SLICE_STEP = 2.5  # mm along the normal
ORIGIN = (-40.5, 12.25, 30.0)  # ImagePositionPatient of slice 0
ROWS, COLS = slice(40, 88), slice(32, 96)
ROTATED = Affine(282.0, 103.0, 130788.5, 95.0, -276.0, 2798111.0)
SOUTH_UP = Affine(300.0, 0.0, 130788.5, 0.0, 300.0, 2769311.0)


def _oblique_series() -> None:
    row, col = np.asarray(ROW_DIRECTION), np.asarray(COLUMN_DIRECTION)
    normal = np.cross(row, col)
    out = OUT / "oblique"
    out.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid(entropy_srcs=[SEED, "series"])
    for k, name in enumerate(NAMES):
        ds = pydicom.dcmread(DATA / "dicom" / "CT_small.dcm")
        pixels = ds.pixel_array[ROWS, COLS.start + 4 * k:COLS.stop + 4 * k]
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[SEED, "slice", str(k)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [f"{v:g}" for v in (*ROW_DIRECTION, *COLUMN_DIRECTION)]
        ds.PixelSpacing = [f"{v:g}" for v in PIXEL_SPACING]
        ds.SliceThickness = f"{SLICE_STEP:g}"
        position = np.asarray(ORIGIN) + k * SLICE_STEP * normal
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.SliceLocation = f"{float(position @ normal):.6f}"
        ds.save_as(out / name, enforce_file_format=True)
        print(f"wrote {out / name}: position {np.round(position, 6).tolist()}")


def _geotiff(name: str, transform: Affine, *, flip: bool) -> None:
    with rasterio.open(DATA / "io" / "geotiff" / "rgb_byte_96x128.tif") as src:
        pixels = src.read()
        profile = {"driver": "GTiff", "width": src.width, "height": src.height,
                   "count": src.count, "dtype": src.dtypes[0], "crs": src.crs,
                   "transform": transform, "nodata": src.nodata, "photometric": "RGB",
                   "compress": "deflate"}
        colorinterp = src.colorinterp
    with rasterio.open(OUT / name, "w", **profile) as dst:
        dst.write(pixels[:, ::-1] if flip else pixels)
        dst.colorinterp = colorinterp
    print(f"wrote {OUT / name}: transform {tuple(transform)[:6]}")


def main() -> None:
    _oblique_series()
    with rasterio.Env(GDAL_PAM_ENABLED=False):
        _geotiff("rotated_sheared_96x128.tif", ROTATED, flip=False)
        _geotiff("south_up_96x128.tif", SOUTH_UP, flip=True)


if __name__ == "__main__":
    main()
