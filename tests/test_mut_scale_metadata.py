"""Tests that kill the mutants of the metadata scaling in ``io_adapters`` (bench/mutation.py).

Expected values are written out here from the geometry, not taken from the functions:
an image super-resolved by ``s`` has ``ceil(n * s)`` pixels per axis, pixels ``1/s`` as
large (GeoTIFF transform ``a, b, d, e`` divided by the column/row scale, origin ``c, f``
kept; DICOM spacing divided), and the new first pixel is the top-left sub-pixel of the
old one: its centre sits at old pixel index ``-1/2 + 1/(2 s)`` along each axis.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from geometry import as_scale
from io_adapters._common import scale_common
from io_adapters._dicom_derive import _scale_spacing, _scale_us_regions
from io_adapters._dicom_frames import DicomFrame, scaled_frame
from io_adapters.base import GeoInfo, MedicalInfo, Metadata
from io_adapters.detect import scale_metadata
from io_adapters.errors import InvalidDataError, UnsupportedFormatError
from io_adapters.geotiff import scale_geo_metadata
from io_adapters.zarr_store import scale_zarr_metadata

TRANSFORM = (30.0, 2.0, 500000.0, 1.5, -30.0, 4200000.0)  # rotated/sheared on purpose


def _meta(fmt: str = "geotiff", **kw) -> Metadata:
    args = dict(path=Path("in.tif"), format=fmt, bands=2, rows=7, cols=9,
                dtype=np.dtype(np.uint16))
    args.update(kw)
    return Metadata(**args)


@pytest.mark.parametrize(("rows", "cols", "scale", "shape"), [
    (7, 9, 1.5, (11, 14)),  # 10.5 -> 11, 13.5 -> 14
    (7, 9, (2, 3), (14, 27)),
    (10, 10, 1.1, (11, 11)),  # 10 * 1.1 = 11.000000000000002 -> 11
    (50, 50, 1.1, (55, 55)),  # 55.000000000000007 in floats: 56 before issue 15
    (3, 3, 4 / 3, (4, 4)),
])
def test_size_is_matlab_ceil_exactly(rows, cols, scale, shape):
    out = scale_common(_meta(rows=rows, cols=cols), scale)
    assert (out.rows, out.cols) == shape


@pytest.mark.parametrize(("bad", "message"), [
    (0, "scale must be >= 1 (a super-resolution factor), got 0"),
    (0.5, "scale must be >= 1 (a super-resolution factor), got 0.5"),
    (float("nan"), "scale must be finite, got nan"),
    ((2, 0), "col scale must be >= 1 (a super-resolution factor), got 0"),
    ((2, 3, 4), "scale must be a number or a pair (rows, cols), got (2, 3, 4)"),
])
def test_scale_errors(bad, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        scale_metadata(_meta(), bad)


def test_geo_transform_scaled_origin_kept():
    geo = GeoInfo(crs_wkt="EPSG:32633", transform=TRANSFORM)
    extra = {"overviews": [2, 4], "block_shapes": [(256, 256)], "tiled": True,
             "gcps": ((10.0, 20.0, 1.0, 2.0, 0.0), (0.5, 3.0, 5.0, 6.0, 7.0))}
    out = scale_geo_metadata(_meta(geo=geo, extra=extra, nodata=0.0), (2, 3))
    a, b, c, d, e, f = TRANSFORM
    np.testing.assert_allclose(out.geo.transform, (a / 3, b / 2, c, d / 3, e / 2, f))
    assert len(out.geo.transform) == 6 and out.geo.crs_wkt == "EPSG:32633"
    assert (out.rows, out.cols, out.bands, out.nodata) == (14, 27, 2, 0.0)
    assert out.extra["tiled"] is True
    assert "overviews" not in out.extra and "block_shapes" not in out.extra
    # GCP pixel/line positions (row, col) scale by the row and column factors
    assert out.extra["gcps"] == ((20.0, 60.0, 1.0, 2.0, 0.0), (1.0, 9.0, 5.0, 6.0, 7.0))
    assert extra["gcps"][0] == (10.0, 20.0, 1.0, 2.0, 0.0)  # input untouched


def test_geo_without_gcps():
    out = scale_geo_metadata(_meta(geo=GeoInfo(None, TRANSFORM), extra={"gcps": ()}), 2)
    assert out.extra == {"gcps": ()}
    out = scale_geo_metadata(_meta(geo=GeoInfo(None, TRANSFORM)), 2)
    assert out.extra == {}


def test_common_scaling_of_spacing_and_size():
    med = MedicalInfo(modality="CT", photometric="MONOCHROME2", pixel_spacing=(0.8, 0.6),
                      slice_thickness=2.0, orientation=None)
    out = scale_common(_meta("zarr", medical=med, geo=None), (2, 4))
    assert out.medical.pixel_spacing == pytest.approx((0.4, 0.15), rel=1e-15)
    assert out.medical.slice_thickness == 2.0 and (out.rows, out.cols) == (14, 36)
    no_spacing = MedicalInfo("CT", "MONOCHROME2", None, None, None)
    assert scale_common(_meta(medical=no_spacing), 2).medical.pixel_spacing is None
    assert scale_zarr_metadata(_meta("zarr", medical=med), 2).medical.pixel_spacing == \
        pytest.approx((0.4, 0.3), rel=1e-15)


def test_scale_metadata_dispatches_by_format():
    geo = GeoInfo(None, TRANSFORM)
    for fmt in ("geotiff", "zarr", "plain"):
        out = scale_metadata(_meta(fmt, geo=geo), 1.5)
        assert (out.rows, out.cols, out.format) == (11, 14, fmt)
        np.testing.assert_allclose(out.geo.transform[:2], (20.0, 2 / 1.5))
    with pytest.raises(UnsupportedFormatError, match=re.escape(
            "in.tif: no metadata scaling for format 'webp'; known: geotiff, plain, zarr")):
        scale_metadata(_meta("webp"), 2)


def _frame(position=(10.0, -20.0, 5.0), orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
           spacing=(0.8, 0.5)) -> DicomFrame:
    return DicomFrame(source=0, index=0, position=position, orientation=orientation,
                      spacing=spacing, slice_thickness=1.0)


def _first_centre(frame: DicomFrame, sy: float, sx: float) -> np.ndarray:
    """World position of the new first pixel: old index (-1/2 + 1/(2 sy), -1/2 + 1/(2 sx))."""
    i, j = -0.5 + 0.5 / sy, -0.5 + 0.5 / sx
    row_dir, col_dir = np.array(frame.orientation[:3]), np.array(frame.orientation[3:])
    dr, dc = frame.spacing  # between rows (along col_dir), between columns (along row_dir)
    return np.array(frame.position) + j * dc * row_dir + i * dr * col_dir


@pytest.mark.parametrize(("sy", "sx"), [(2.0, 2.0), (2.0, 4.0), (3.0, 1.5)])
def test_dicom_frame_position_and_spacing(sy, sx):
    c, s = math.cos(0.3), math.sin(0.3)  # an oblique plane
    frame = _frame(orientation=(c, s, 0.0, 0.0, c, s))
    out = scaled_frame(frame, row_scale=sy, col_scale=sx)
    assert out.spacing == pytest.approx((0.8 / sy, 0.5 / sx), rel=1e-15)
    np.testing.assert_allclose(out.position, _first_centre(frame, sy, sx), atol=1e-12)
    assert all(type(v) is float for v in out.position)
    assert out.orientation == frame.orientation and out.slice_thickness == 1.0


def test_dicom_frame_without_geometry():
    frame = _frame(spacing=None)
    assert scaled_frame(frame, row_scale=2, col_scale=2) is frame
    out = scaled_frame(_frame(position=None), row_scale=2, col_scale=2)
    assert out.position is None and out.spacing == (0.4, 0.25)
    out = scaled_frame(_frame(orientation=None), row_scale=2, col_scale=2)
    assert out.position == (10.0, -20.0, 5.0)


def _dicom_meta(frames, *, positions=True, scale=None) -> Metadata:
    med = MedicalInfo("CT", "MONOCHROME2", frames[0].spacing, 1.0, frames[0].orientation,
                      positions=tuple(f.position for f in frames) if positions else ())
    extra = {"dicom_frames": tuple(frames)}
    if scale:
        extra["scale"] = scale
    return Metadata(path=Path("ct.dcm"), format="dicom", bands=1, rows=5, cols=6,
                    dtype=np.dtype(np.int16), frames=len(frames), medical=med, extra=extra)


def test_scale_dicom_metadata():
    from io_adapters.dicom_writer import scale_dicom_metadata

    frames = [_frame(), _frame(position=(10.0, -20.0, 6.0), spacing=(0.7, 0.7))]
    out = scale_dicom_metadata(_dicom_meta(frames, scale=(1.5, 2.0)), (2, 4))
    assert (out.rows, out.cols) == (10, 24)
    assert out.extra["scale"] == (3.0, 8.0)  # composed with the earlier step
    assert out.medical.pixel_spacing == pytest.approx((0.4, 0.125), rel=1e-15)  # frame 1's
    for f, new in zip(frames, out.medical.positions, strict=True):
        np.testing.assert_allclose(new, _first_centre(f, 2.0, 4.0), atol=1e-12)
    from dataclasses import replace

    good = _dicom_meta(frames)
    for bad in (replace(good, format="zarr"), replace(good, medical=None)):
        with pytest.raises(InvalidDataError, match=re.escape(
                "ct.dcm: not DICOM metadata from DicomReader")):
            scale_dicom_metadata(bad, 2)
    assert [f.position for f in out.extra["dicom_frames"]] == list(out.medical.positions)
    plain = scale_dicom_metadata(_dicom_meta(frames, positions=False), 2)
    assert plain.medical.positions == () and plain.extra["scale"] == (2.0, 2.0)
    for bad in (_meta("geotiff"), replace_format(_dicom_meta(frames))):
        with pytest.raises(InvalidDataError, match="not DICOM metadata from DicomReader"):
            scale_dicom_metadata(bad, 2)


def replace_format(meta: Metadata) -> Metadata:
    from dataclasses import replace

    return replace(meta, extra={})


def test_scale_spacing_keywords():
    ds = Dataset()
    ds.PixelSpacing = [0.8, 0.6]
    ds.ImagerPixelSpacing = [1.0, 2.0]
    ds.NominalScannedPixelSpacing = [3.0, 9.0]
    _scale_spacing(ds, 2.0, 3.0)
    assert [float(v) for v in ds.PixelSpacing] == [0.4, 0.2]
    assert [float(v) for v in ds.ImagerPixelSpacing] == pytest.approx([0.5, 2 / 3], rel=1e-13)
    assert [float(v) for v in ds.NominalScannedPixelSpacing] == [1.5, 3.0]
    odd = Dataset()
    odd.PixelSpacing = [0.8, 0.6, 0.4]  # malformed (3 values): left alone
    _scale_spacing(odd, 2.0, 2.0)
    assert [float(v) for v in odd.PixelSpacing] == [0.8, 0.6, 0.4]


def test_ultrasound_regions_in_pixel_units():
    region = Dataset()
    region.RegionLocationMinX0, region.RegionLocationMaxX1 = 10, 19  # columns 10..19
    region.RegionLocationMinY0, region.RegionLocationMaxY1 = 3, 7
    region.ReferencePixelX0, region.ReferencePixelY0 = 4, 2
    region.PhysicalDeltaX, region.PhysicalDeltaY = 0.3, 0.2
    ds = Dataset()
    ds.SequenceOfUltrasoundRegions = [region]
    _scale_us_regions(ds, as_scale((1.5, 2.0)))
    r = ds.SequenceOfUltrasoundRegions[0]
    # columns [10, 20) x 2 -> [20, 40): new 20..39; rows [3, 8) x 1.5 -> [4.5, 12): 4..11
    assert (r.RegionLocationMinX0, r.RegionLocationMaxX1) == (20, 39)
    assert (r.RegionLocationMinY0, r.RegionLocationMaxY1) == (4, 11)
    # pixel centre 4.5 -> 9.0 -> index 8.5 -> round half to even: 8; rows 2.5 * 1.5 - .5 = 3.25
    assert (r.ReferencePixelX0, r.ReferencePixelY0) == (8, 3)
    assert r.PhysicalDeltaX == pytest.approx(0.15) and r.PhysicalDeltaY == pytest.approx(0.2 / 1.5)


def test_ultrasound_region_with_missing_bounds():
    region = Dataset()
    region.RegionLocationMinX0 = 10  # no MaxX1: left alone
    region.RegionLocationMinY0, region.RegionLocationMaxY1 = 0, 9
    ds = Dataset()
    ds.SequenceOfUltrasoundRegions = [region]
    _scale_us_regions(ds, as_scale(3))
    assert ds.SequenceOfUltrasoundRegions[0].RegionLocationMinX0 == 10
    assert ds.SequenceOfUltrasoundRegions[0].RegionLocationMaxY1 == 29
    _scale_us_regions(Dataset(), as_scale(2))  # no regions: nothing to do


def _geometry_ds(*, aspect: bool = True) -> Dataset:
    from pydicom.tag import Tag

    ds = Dataset()
    ds.Rows, ds.Columns = 5, 6
    ds.PixelSpacing = [0.8, 0.6]
    if aspect:
        ds.PixelAspectRatio = [4, 3]
    ds.ImagePositionPatient = [0, 0, 0]
    for group in (0x6000, 0x6002, 0x601E):  # overlay planes: dropped
        ds.add_new(Tag(group, 0x0010), "US", 5)
    for group in (0x5FFE, 0x6001, 0x6020):  # not overlay planes: kept
        ds.add_new(Tag(group, 0x0010), "US", 5)
    shared, f0, f1 = Dataset(), Dataset(), Dataset()
    measures = Dataset()
    measures.PixelSpacing = [1.0, 0.5]
    shared.PixelMeasuresSequence = [measures]
    for item, z in ((f0, 1.0), (f1, 2.0)):
        plane = Dataset()
        plane.ImagePositionPatient = [0, 0, z]
        item.PlanePositionSequence = [plane]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = [f0, f1]
    region = Dataset()
    region.RegionLocationMinX0, region.RegionLocationMaxX1 = 0, 5
    region.RegionLocationMinY0, region.RegionLocationMaxY1 = 0, 4
    ds.SequenceOfUltrasoundRegions = [region]
    return ds


def test_set_geometry_of_a_derived_dataset():
    from io_adapters._dicom_derive import _set_geometry

    frames = [_frame(position=(1.0, 2.0, 3.0)), _frame(position=(1.0, 2.0, 4.0))]
    meta = _dicom_meta(frames, scale=(2.0, 3.0))
    meta = Metadata(**{**meta.__dict__, "rows": 10, "cols": 18})
    ds = _geometry_ds()
    _set_geometry(ds, frames, meta)
    assert (ds.Rows, ds.Columns) == (10, 18)
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.4, 0.2])
    assert "PixelAspectRatio" not in ds  # anisotropic: the ratio changed
    assert [float(v) for v in ds.ImagePositionPatient] == [1.0, 2.0, 3.0]
    shared = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in shared.PixelSpacing] == pytest.approx([0.5, 0.5 / 3])
    per_frame = [item.PlanePositionSequence[0].ImagePositionPatient
                 for item in ds.PerFrameFunctionalGroupsSequence]
    assert [[float(v) for v in p] for p in per_frame] == [[1.0, 2.0, 3.0], [1.0, 2.0, 4.0]]
    r = ds.SequenceOfUltrasoundRegions[0]
    # columns [0, 6) x 3 -> 0..17; rows [0, 5) x 2 -> 0..9
    assert (r.RegionLocationMaxX1, r.RegionLocationMaxY1) == (17, 9)
    groups = {t.group for t in ds.keys()}
    assert not groups & {0x6000, 0x6002, 0x601E}
    assert {0x5FFE, 0x6001, 0x6020} <= groups


def test_set_geometry_keeps_an_isotropic_aspect_ratio_and_missing_positions():
    from io_adapters._dicom_derive import _set_geometry

    frames = [_frame(position=None)]
    meta = _dicom_meta(frames, scale=(2.0, 2.0), positions=False)
    ds = _geometry_ds()
    del ds.PerFrameFunctionalGroupsSequence
    _set_geometry(ds, frames, meta)
    assert [int(v) for v in ds.PixelAspectRatio] == [4, 3]
    assert [float(v) for v in ds.ImagePositionPatient] == [0.0, 0.0, 0.0]  # no new position
    no_pos = _geometry_ds()
    del no_pos.ImagePositionPatient
    _set_geometry(no_pos, [_frame(), _frame()], _dicom_meta([_frame(), _frame()]))
    assert "ImagePositionPatient" not in no_pos  # not added where there was none
    # no "scale" recorded: nothing is rescaled
    assert [float(v) for v in no_pos.PixelSpacing] == [0.8, 0.6]
    assert no_pos.SequenceOfUltrasoundRegions[0].RegionLocationMaxX1 == 5
