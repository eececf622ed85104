"""Issue 14: written geometry of oblique DICOM and rotated / south-up GeoTIFF outputs.

The inputs (tests/data/geometry, written by make_geometry_fixtures.py) are not
axis-aligned, so a rule that ignores ImageOrientationPatient, swaps the row and
column spacings, scales only ``a``/``e`` of a geotransform or drops the sign of
``e`` gives wrong numbers here.  Each test runs the real path
(:func:`pipeline.image.upscale.upscale_file`, tiny net) at x2 and x1.5, reads the written
file back with pydicom / rasterio / zarr / rioxarray (not with our readers) and
compares it with values computed below from the input header alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import rasterio
import zarr
from affine import Affine
from conftest import DATA

from pipeline.image.job import ImageJob
from pipeline.image.upscale import upscale_file
from zssr.config import config_from_dict

GEOMETRY = DATA / "geometry"
OBLIQUE = GEOMETRY / "oblique"
SLICES = ("IM_c.dcm", "IM_a.dcm", "IM_b.dcm")  # anatomical order
TINY = config_from_dict({"train": {"max_iters": 2, "crop_size": 24},
                         "net": {"depth": 3, "width": 8},
                         "infer": {"back_projection_iters": 1}})
SCALES = [2, 1.5]


@pytest.fixture(scope="module")
def upscaled(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path, float, str], Path]:
    """``upscaled(input, scale, suffix)``: the output of ``upscale_file``, made once."""
    root = tmp_path_factory.mktemp("geometry")
    done: dict[tuple[Path, float, str], Path] = {}

    def run(src: Path, scale: float, suffix: str) -> Path:
        key = (src, scale, suffix)
        if key not in done:
            out = root / f"{src.stem}_x{scale:g}".replace(".", "p") / f"out{suffix}"
            out.parent.mkdir(exist_ok=True)
            upscale_file(ImageJob(input=src, output=out, scale=scale, config=TINY, tile=32))
            done[key] = out
        return done[key]

    return run


def _floats(value: object) -> np.ndarray:
    return np.asarray([float(v) for v in value], dtype=float)  # type: ignore[attr-defined]


# --- DICOM ---------------------------------------------------------------------------
#
# PS3.3 C.7.6.2.1.1, Equation C.7.6.2.1-1: the centre of the pixel in column i and
# row j (0-based; i is the column index, j the row index) lies at
#
#     P(i, j) = S + i * dc * X + j * dr * Y
#
# with S = ImagePositionPatient (centre of the first transmitted pixel),
# X = ImageOrientationPatient[0:3] (the row direction cosine: the direction in which
# the column index i grows), Y = ImageOrientationPatient[3:6] (the column direction
# cosine: the direction in which the row index j grows), dc = PixelSpacing[1] (the
# distance between adjacent columns) and dr = PixelSpacing[0] (between adjacent rows).
#
# Resampling by s (MATLAB imresize, the engine's convention) puts the centre of HR
# pixel k of an axis at LR index (k + 0.5) / s - 0.5.  So HR pixel (0, 0) sits at LR
# (i, j) = ((1/s - 1)/2, (1/s - 1)/2), and the written geometry must be
#
#     S' = S + ((1/s - 1) / 2) * (dc * X + dr * Y),   dc' = dc / s,   dr' = dr / s,
#
# with X and Y unchanged.  For the fixture (X = (0.8, 0.576, 0.168),
# Y = (-0.6, 0.768, 0.224), dr = 0.6, dc = 0.9) at x2 that is a shift of
# -(0.09, 0.2448, 0.0714) mm: not along any patient axis.

def _lr_to_patient(ds: pydicom.Dataset, i: float, j: float) -> np.ndarray:
    """Patient position of (continuous) column ``i``, row ``j`` of ``ds`` (C.7.6.2.1-1)."""
    s, o = _floats(ds.ImagePositionPatient), _floats(ds.ImageOrientationPatient)
    dr, dc = _floats(ds.PixelSpacing)
    return s + i * dc * o[:3] + j * dr * o[3:]


def _expected_first_position(ds: pydicom.Dataset, scale: float) -> np.ndarray:
    half = (1.0 / scale - 1.0) / 2.0
    return _lr_to_patient(ds, half, half)


@pytest.mark.parametrize("scale", SCALES)
def test_orientation_ignored_in_position_shift_is_caught(upscaled, scale):
    out = upscaled(OBLIQUE, scale, "")
    for name in SLICES:
        lr, hr = pydicom.dcmread(OBLIQUE / name), pydicom.dcmread(out / name)
        assert (hr.Rows, hr.Columns) == (math.ceil(lr.Rows * scale), math.ceil(lr.Columns * scale))
        np.testing.assert_array_equal(_floats(hr.ImageOrientationPatient),
                                      _floats(lr.ImageOrientationPatient))
        np.testing.assert_allclose(_floats(hr.PixelSpacing), _floats(lr.PixelSpacing) / scale,
                                   rtol=1e-12)
        np.testing.assert_allclose(_floats(hr.ImagePositionPatient),
                                   _expected_first_position(lr, scale), rtol=0, atol=1e-6)
        # every HR pixel lands where the LR grid puts it: check the far corners too
        for j, i in ((0, hr.Columns - 1), (hr.Rows - 1, 0), (hr.Rows - 1, hr.Columns - 1)):
            np.testing.assert_allclose(
                _lr_to_patient(hr, i, j),
                _lr_to_patient(lr, (i + 0.5) / scale - 0.5, (j + 0.5) / scale - 0.5),
                rtol=0, atol=1e-5)


@pytest.mark.parametrize("scale", SCALES)
def test_dicom_to_zarr_keeps_oblique_geometry(upscaled, scale):
    """A DICOM series written as Zarr: the positions kept in the ``zssr`` attrs and the
    OME translation (the first pixel along the normal, column and row directions)."""
    out = upscaled(OBLIQUE, scale, ".zarr")
    attrs = zarr.open_group(out, mode="r").attrs.asdict()
    lr = [pydicom.dcmread(OBLIQUE / name) for name in SLICES]
    expected = np.stack([_expected_first_position(ds, scale) for ds in lr])
    np.testing.assert_allclose(np.asarray(attrs["zssr"]["medical"]["positions"]), expected,
                               rtol=0, atol=1e-9)
    o = _floats(lr[0].ImageOrientationPatient)
    row_dir, col_dir = o[:3], o[3:]
    normal = np.cross(row_dir, col_dir)
    dr, dc = _floats(lr[0].PixelSpacing) / scale
    transforms = attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    scales, translation = transforms[0]["scale"], transforms[1]["translation"]
    gap = float(np.linalg.norm(_floats(lr[1].ImagePositionPatient)
                               - _floats(lr[0].ImagePositionPatient)))
    np.testing.assert_allclose(scales, [1.0, gap, dr, dc], rtol=1e-12)
    p0 = expected[0]
    np.testing.assert_allclose(translation, [0.0, p0 @ normal, p0 @ col_dir, p0 @ row_dir],
                               rtol=0, atol=1e-9)


# --- GeoTIFF -------------------------------------------------------------------------
#
# A geotransform maps (col, row) pixel-corner coordinates to the CRS:
# x = a*col + b*row + c, y = d*col + e*row + f.  HR pixel corner (col', row') is LR
# corner (col'/s, row'/s), so the HR transform is T * scale(1/s): all of a, b, d, e
# divided by s, the origin (c, f) kept, the sign of e (north-up or south-up) kept.

def _written_transform(out: Path) -> tuple[float, ...]:
    if out.suffix == ".tif":
        with rasterio.open(out) as ds:
            return tuple(ds.transform)[:6]
    # rasterio's GDAL (3.10) cannot open our Zarr v3 store ("Unsupported codec: bytes"):
    # read the CF grid mapping's GDAL-order GeoTransform directly, as rioxarray does.
    c, a, b, f, d, e = (float(v) for v in zarr.open_group(out, mode="r")["spatial_ref"]
                        .attrs["GeoTransform"].split())
    return a, b, c, d, e, f


def _written_size(out: Path) -> tuple[int, int]:
    if out.suffix == ".tif":
        with rasterio.open(out) as ds:
            return ds.height, ds.width
    return tuple(zarr.open_group(out, mode="r")["band_data"].shape[-2:])  # type: ignore[return-value]


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", ["rotated_sheared_96x128.tif", "south_up_96x128.tif"])
def test_rotation_terms_not_scaled_is_caught(upscaled, name, scale, suffix):
    src = GEOMETRY / name
    out = upscaled(src, scale, suffix)
    with rasterio.open(src) as ds:
        lr = ds.transform
        rows, cols = ds.height, ds.width
    a, b, c, d, e, f = tuple(lr)[:6]
    expected = (a / scale, b / scale, c, d / scale, e / scale, f)
    written = _written_transform(out)
    assert _written_size(out) == (math.ceil(rows * scale), math.ceil(cols * scale))
    np.testing.assert_allclose(written, expected, rtol=1e-12, atol=0)
    hr = Affine(*written)
    hr_rows, hr_cols = math.ceil(rows * scale), math.ceil(cols * scale)
    for row, col in ((0, 0), (0, hr_cols - 1), (hr_rows - 1, 0), (hr_rows - 1, hr_cols - 1)):
        np.testing.assert_allclose(hr * (col + 0.5, row + 0.5),
                                   lr * ((col + 0.5) / scale, (row + 0.5) / scale),
                                   rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["rotated_sheared_96x128.tif", "south_up_96x128.tif"])
def test_zarr_coordinates_follow_the_transform(upscaled, name):
    """What xarray users see: rioxarray's transform, and 1-D x/y pixel-centre
    coordinates only where the grid is rectilinear (no 1-D coordinate fits a rotated
    or sheared one, so none may be written: rioxarray writes none either)."""
    xr = pytest.importorskip("xarray")
    pytest.importorskip("rioxarray")
    src, scale = GEOMETRY / name, 1.5
    out = upscaled(src, scale, ".zarr")
    with rasterio.open(src) as ds:
        a, b, c, d, e, f = tuple(ds.transform)[:6]
    expected = (a / scale, b / scale, c, d / scale, e / scale, f)
    data = xr.open_zarr(out)
    np.testing.assert_allclose(tuple(data.band_data.rio.transform())[:6], expected,
                               rtol=1e-12, atol=0)
    if b or d:
        assert "x" not in data.coords and "y" not in data.coords
        return
    rows, cols = data.band_data.shape[-2:]
    np.testing.assert_allclose(data.x.values, c + (np.arange(cols) + 0.5) * a / scale)
    np.testing.assert_allclose(data.y.values, f + (np.arange(rows) + 0.5) * e / scale)
    assert np.all(np.diff(data.y.values) > 0) == (e > 0)  # south-up: y grows down the rows
