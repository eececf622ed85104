"""Issue 18.4: medical Zarr outputs are OME-Zarr 0.5 images that ome-zarr-models accepts.

Each output is written by the real writer (:func:`io_adapters.detect.open_writer`, as
the pipeline's finalize does) from DICOM inputs read with our reader: the series of
tests/data/dicom/series (3 CT slices), one CT slice (CT_small.dcm with a display window
added), a multi-frame enhanced MR (tests/_dicom_fixtures.enhanced_with_groups) and an
RGB slice; then validated with ``ome_zarr_models.v05.Image`` (axes order and types, axis
names = ``dimension_names``, every level present, scales ordered) and the omero model.
Expected pyramid shapes, scales, translations and values are computed here from the
inputs, not from :mod:`io_adapters._ome`.  The strongest oracle: the first pyramid level of
a 2x nearest-neighbour upsampled series is the input itself, with the input's spacing and
first-pixel position.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
import zarr
from _dicom_fixtures import DICOM, copy_series, enhanced_with_groups, upsample
from ome_zarr_models.common.omero import Omero
from ome_zarr_models.v05 import Image
from rasterio.windows import Window

from io_adapters.base import MedicalInfo, Metadata
from io_adapters.detect import open_reader, open_writer, scale_metadata
from io_adapters.zarr_store import ZarrReader, ZarrWriter

MM = "millimeter"


def _write(reader, out: Path, *, meta: Metadata | None = None, pixels=None,
           **options) -> Path:
    """Every frame of ``reader`` (or ``pixels[f]``) through the Zarr writer, one call each."""
    meta = meta or reader.meta
    with open_writer(out, meta, **options) as writer:
        for f in range(meta.frames):
            data = reader.read(frame=f) if pixels is None else pixels[f]
            writer.write(data, Window(0, 0, meta.cols, meta.rows), frame=f)
    return out


def _validate(out: Path) -> tuple[Image, dict]:
    """The store checked by ome-zarr-models: the NGFF image and its ``omero`` model."""
    group = zarr.open_group(out, mode="r")
    image = Image.from_zarr(group)  # raises pydantic.ValidationError on a bad store
    ome = group.attrs.asdict()["ome"]
    Omero.model_validate(ome["omero"])
    return image, ome


def _axes(image: Image) -> list[tuple[str, str, str | None]]:
    return [(a.name, a.type, a.unit) for a in image.ome_attributes.multiscales[0].axes]


def _transforms(ome: dict, level: int) -> tuple[list[float], list[float]]:
    scale, shift = ome["multiscales"][0]["datasets"][level]["coordinateTransformations"]
    return scale["scale"], shift["translation"]


def _along(ds: pydicom.Dataset) -> tuple[float, float, float]:
    """First pixel centre along the slice normal, the column and the row direction."""
    o = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    p = np.asarray([float(v) for v in ds.ImagePositionPatient])
    return float(p @ np.cross(o[:3], o[3:])), float(p @ o[3:]), float(p @ o[:3])


def test_series_upsampled_x2_validates_and_its_level_1_is_the_input(tmp_path: Path) -> None:
    series = copy_series(tmp_path)
    reader = open_reader(series)
    lr = [pydicom.dcmread(series / n) for n in ("IM_c.dcm", "IM_a.dcm", "IM_b.dcm")]
    meta = scale_metadata(reader.meta, 2)  # 256 x 256: one level at the default 256
    pixels = [upsample(reader.read(frame=f), 2, 2) for f in range(3)]
    out = _write(reader, tmp_path / "ct.zarr", meta=meta, pixels=pixels)
    image, ome = _validate(out)
    assert _axes(image) == [("c", "channel", None), ("z", "space", MM),
                            ("y", "space", MM), ("x", "space", MM)]
    group = zarr.open_group(out, mode="r")
    assert group["band_data"].metadata.dimension_names == ("c", "z", "y", "x")
    assert [d["path"] for d in ome["multiscales"][0]["datasets"]] == ["band_data", "pyramid/1"]
    assert group["band_data"].shape == (1, 3, 256, 256)
    assert group["pyramid/1"].shape == (1, 3, 128, 128)
    assert group["pyramid/1"].metadata.dimension_names == ("c", "z", "y", "x")
    # a 2 x 2 mean of a nearest-neighbour x2 upsample is the input, stored values
    for f, ds in enumerate(lr):
        np.testing.assert_array_equal(group["pyramid/1"][0, f], ds.pixel_array)
    gap = float(np.linalg.norm(np.subtract([float(v) for v in lr[1].ImagePositionPatient],
                                           [float(v) for v in lr[0].ImagePositionPatient])))
    dr, dc = (float(v) for v in lr[0].PixelSpacing)
    z0, y0, x0 = _along(lr[0])
    scale, shift = _transforms(ome, 1)  # the LR geometry itself
    np.testing.assert_allclose(scale, [1.0, gap, dr, dc], rtol=1e-12)
    np.testing.assert_allclose(shift, [0.0, z0, y0, x0], rtol=0, atol=1e-9)
    scale0, shift0 = _transforms(ome, 0)
    np.testing.assert_allclose(scale0, [1.0, gap, dr / 2, dc / 2], rtol=1e-12)
    np.testing.assert_allclose(shift0, [0.0, z0, y0 - dr / 4, x0 - dc / 4], rtol=0, atol=1e-9)
    back = ZarrReader(out)
    assert (back.meta.frames, back.meta.bands, back.meta.rows) == (3, 1, 256)
    assert back.meta.medical == meta.medical
    for f in range(3):
        np.testing.assert_array_equal(back.read(frame=f), pixels[f])


def test_one_ct_slice_validates_with_the_dicom_window_in_stored_values(tmp_path: Path) -> None:
    ds = pydicom.dcmread(DICOM / "CT_small.dcm")
    ds.WindowCenter, ds.WindowWidth = 40, 400  # HU, the soft-tissue window
    ds.save_as(tmp_path / "ct.dcm")
    out = _write(open_reader(tmp_path / "ct.dcm"), tmp_path / "ct.zarr")
    image, ome = _validate(out)
    assert _axes(image) == [("c", "channel", None), ("y", "space", MM), ("x", "space", MM)]
    assert zarr.open_array(out, path="band_data").metadata.dimension_names == ("c", "y", "x")
    assert len(ome["multiscales"][0]["datasets"]) == 1  # 128 x 128 < 256: no pyramid
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    window = ome["omero"]["channels"][0]["window"]
    assert (window["start"], window["end"]) == ((40 - 200 - intercept) / slope,
                                                (40 + 200 - intercept) / slope)
    stored = ds.pixel_array
    assert (window["min"], window["max"]) == (stored.min(), stored.max())
    data_attrs = zarr.open_array(out, path="band_data").attrs.asdict()
    assert (data_attrs["scale_factor"], data_attrs["add_offset"], data_attrs["units"]) == (
        slope, intercept, "HU")
    scale, shift = _transforms(ome, 0)
    _, y0, x0 = _along(ds)
    assert scale == [1.0, *(float(v) for v in ds.PixelSpacing)]
    np.testing.assert_allclose(shift, [0.0, y0, x0], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(ZarrReader(out).read()[0], stored)  # raw values kept


def test_xarray_opens_the_root_and_decodes_hounsfield_units(tmp_path: Path) -> None:
    xr = pytest.importorskip("xarray")
    ds = pydicom.dcmread(DICOM / "CT_small.dcm")
    meta = scale_metadata(open_reader(DICOM / "CT_small.dcm").meta, 2)
    pixels = [upsample(ds.pixel_array[None].astype(np.int16), 2, 2)]
    out = _write(None, tmp_path / "ct.zarr", meta=meta, pixels=pixels)
    assert len(_validate(out)[1]["multiscales"][0]["datasets"]) == 2
    with xr.open_zarr(out, zarr_format=3) as x:  # the pyramid is in a subgroup: no clash
        hu = x.band_data.values[0]
    np.testing.assert_allclose(hu, pixels[0][0] * float(ds.RescaleSlope)
                               + float(ds.RescaleIntercept))


def test_multi_frame_enhanced_mr_validates(tmp_path: Path) -> None:
    reader = open_reader(enhanced_with_groups(tmp_path))
    out = _write(reader, tmp_path / "mr.zarr", pyramid_min_side=16)
    image, ome = _validate(out)
    assert [a[0] for a in _axes(image)] == ["c", "z", "y", "x"]
    group = zarr.open_group(out, mode="r")
    n = reader.meta.frames
    assert [group[d["path"]].shape for d in ome["multiscales"][0]["datasets"]] == [
        (1, n, 64, 64), (1, n, 32, 32), (1, n, 16, 16), (1, n, 8, 8)]
    for level in range(4):
        scale, shift = _transforms(ome, level)
        centres = [-20.0 + 0.5 * np.arange(2 ** level), -10.0 + 0.6 * np.arange(2 ** level)]
        np.testing.assert_allclose(scale, [1.0, 1.2, 0.5 * 2 ** level, 0.6 * 2 ** level])
        np.testing.assert_allclose(shift, [0.0, 0.0, *(c.mean() for c in centres)], atol=1e-9)
    back = ZarrReader(out)
    for f in (0, n - 1):
        np.testing.assert_array_equal(back.read(frame=f), reader.read(frame=f))


def test_rgb_slice_pyramid_values_at_odd_sizes(tmp_path: Path) -> None:
    reader = open_reader(DICOM / "SC_rgb_small_odd.dcm")  # 3 x 3 RGB, uint8
    out = _write(reader, tmp_path / "rgb.zarr", pyramid_min_side=2)
    _, ome = _validate(out)
    assert [c["color"] for c in ome["omero"]["channels"]] == ["FF0000", "00FF00", "0000FF"]
    assert ome["omero"]["rdefs"]["model"] == "color"
    group = zarr.open_group(out, mode="r")
    rgb = reader.read()
    expected = np.empty((3, 2, 2), dtype=np.uint8)  # the last row/column: what is there
    for b in range(3):
        for i in range(2):
            for j in range(2):
                expected[b, i, j] = round(float(rgb[b, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean()))
    np.testing.assert_array_equal(group["pyramid/1"][:], expected)
    assert group["pyramid/2"].shape == (3, 1, 1)
    np.testing.assert_array_equal(group["pyramid/2"][:, 0, 0],
                                  [round(float(expected[b].mean())) for b in range(3)])


def _synthetic(rows: int, cols: int, *, dtype: str = "uint16",
               nodata: float | None = None) -> Metadata:
    med = MedicalInfo(modality="MR", photometric="MONOCHROME2", pixel_spacing=(0.8, 0.7),
                      slice_thickness=None, orientation=(0, 1, 0, 0, 0, -1),
                      positions=((5.0, -30.0, 40.0),))
    return Metadata(path=Path("mr.dcm"), format="dicom", bands=1, rows=rows, cols=cols,
                    dtype=np.dtype(dtype), nodata=nodata, medical=med)


def test_pyramid_of_a_large_slice_with_the_default_threshold(tmp_path: Path) -> None:
    meta = _synthetic(600, 520)
    data = np.random.default_rng(7).integers(0, 4000, (1, 600, 520)).astype(np.uint16)
    with ZarrWriter(tmp_path / "big.zarr", meta, chunks=(128, 128)) as writer:
        for r in range(0, 600, 128):
            writer.write(data[:, r:r + 128], Window(0, r, 520, min(128, 600 - r)))
    _, ome = _validate(tmp_path / "big.zarr")
    group = zarr.open_group(tmp_path / "big.zarr", mode="r")
    # halve (ceil) while the smaller side is >= 256: 520 -> 260 -> 130
    shapes = [(1, math.ceil(600 / 2 ** k), math.ceil(520 / 2 ** k)) for k in range(3)]
    assert [group[d["path"]].shape for d in ome["multiscales"][0]["datasets"]] == shapes
    # orientation rows along +y, columns along -z: first pixel at (y, x) = (-40, -30)
    for k in range(3):
        scale, shift = _transforms(ome, k)
        assert scale == [1.0, 0.8 * 2 ** k, 0.7 * 2 ** k]
        np.testing.assert_allclose(shift, [0.0, np.mean(-40.0 + 0.8 * np.arange(2 ** k)),
                                           np.mean(-30.0 + 0.7 * np.arange(2 ** k))])
    window = ome["omero"]["channels"][0]["window"]
    assert (window["start"], window["end"]) == (data.min(), data.max())


def test_nodata_is_left_out_of_the_means_and_the_window(tmp_path: Path) -> None:
    meta = _synthetic(3, 4, dtype="float32", nodata=-1.0)
    data = np.array([[[1, 2, -1, -1], [3, 4, -1, -1], [10, -1, 7, 8]]], dtype=np.float32)
    with ZarrWriter(tmp_path / "nd.zarr", meta, chunks=(4, 4), pyramid_min_side=2) as writer:
        writer.write(data, Window(0, 0, 4, 3))
    _, ome = _validate(tmp_path / "nd.zarr")
    level1 = zarr.open_array(tmp_path / "nd.zarr", path="pyramid/1")[0]
    np.testing.assert_array_equal(level1, [[2.5, -1.0], [10.0, 7.5]])
    window = ome["omero"]["channels"][0]["window"]
    assert (window["min"], window["max"]) == (1.0, 10.0)


def test_an_empty_store_committed_before_its_workers_write_validates(tmp_path: Path) -> None:
    """The pipeline commits its work stores empty, then fills them by regions."""
    ZarrWriter(tmp_path / "work.zarr", _synthetic(600, 520), chunks=(64, 64)).commit()
    _, ome = _validate(tmp_path / "work.zarr")
    assert [d["path"] for d in ome["multiscales"][0]["datasets"]] == ["band_data"]
    assert "pyramid" not in zarr.open_group(tmp_path / "work.zarr", mode="r")


@pytest.mark.parametrize("bad", [0, 1, 2.5, True, "256"])
def test_pyramid_min_side_must_be_an_int_of_2_or_more(tmp_path: Path, bad) -> None:
    with pytest.raises(ValueError, match=r"pyramid_min_side .* must be an int >= 2 or None"):
        ZarrWriter(tmp_path / "x.zarr", _synthetic(8, 8), pyramid_min_side=bad)
    assert list(tmp_path.iterdir()) == []  # refused before the partial store exists
