"""GeoTiffReader, CogWriter and scale_geo_metadata on crops of real rasters.

Fixtures (tests/data/make_io_fixtures.py): a crop of rasterio's RGB.byte.tif (uint8,
EPSG:32618, nodata 0, pixels that are 0 in some bands only) and of the Landsat 8
B2-B5 stack (uint16, EPSG:32620, nodata 0, band descriptions and tags).
Expected values come from rasterio reading the same files directly.
"""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

from io_adapters import cog as cog_module
from io_adapters.base import GeoInfo, Metadata, Reader, Writer
from io_adapters.errors import (
    CorruptFileError,
    InputNotFoundError,
    InvalidDataError,
    UnsupportedFormatError,
    WriteError,
)
from io_adapters.geotiff import CogWriter, GeoTiffReader, scale_geo_metadata

GEO = Path(__file__).parent / "data" / "io" / "geotiff"
RGB, LANDSAT = GEO / "rgb_byte_96x128.tif", GEO / "landsat_64x80.tif"
# test files written here without georeference; rasterio's own use of `Affine *`
pytestmark = [pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
              pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")]


def _write_tiles(writer, data: np.ndarray, masks: np.ndarray | None = None, tile: int = 40):
    _, rows, cols = data.shape
    for r in range(0, rows, tile):
        for c in range(0, cols, tile):
            win = Window(c, r, min(tile, cols - c), min(tile, rows - r))
            part = None if masks is None else masks[:, r:r + tile, c:c + tile]
            writer.write(data[:, r:r + tile, c:c + tile], win, mask=part)


@pytest.mark.parametrize("path", [RGB, LANDSAT])
def test_metadata_matches_rasterio(path: Path) -> None:
    with GeoTiffReader(path) as reader, rasterio.open(path) as ds:
        assert isinstance(reader, Reader)
        m = reader.meta
        assert (m.format, m.shape, m.dtype, m.nodata, m.has_mask) == (
            "geotiff", (ds.count, ds.height, ds.width), np.dtype(ds.dtypes[0]), 0.0, True)
        assert rasterio.crs.CRS.from_wkt(m.geo.crs_wkt) == ds.crs
        assert Affine(*m.geo.transform) == ds.transform
        assert m.geo.colorinterp == tuple(c.name for c in ds.colorinterp)
        assert m.geo.tags == ds.tags()
        np.testing.assert_array_equal(reader.read(), ds.read())


def test_band_names_from_descriptions_or_colour() -> None:
    assert GeoTiffReader(RGB).meta.band_names == ("R", "G", "B")
    landsat = GeoTiffReader(LANDSAT, bands=[3, 1])
    assert landsat.meta.band_names == ("SR_B5 nir", "SR_B3 green")
    assert landsat.meta.geo.colorinterp == ("undefined", "undefined")
    with rasterio.open(LANDSAT) as ds:
        np.testing.assert_array_equal(landsat.read(), ds.read([4, 2]))
        np.testing.assert_array_equal(landsat.read(bands=[1]), ds.read([2]))


def test_boundless_read_fills_nodata(tmp_path: Path) -> None:
    reader = GeoTiffReader(RGB)
    with rasterio.open(RGB) as ds:
        inside = ds.read(window=Window(0, 0, 30, 20))
    out = reader.read(Window(-10, -10, 40, 30))
    np.testing.assert_array_equal(out[:, 10:, 10:], inside)
    assert not out[:, :10].any() and not out[:, :, :10].any()
    assert not reader.read_mask(Window(-10, -10, 40, 30))[:10].any()
    path = tmp_path / "f.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1,
                       dtype="float32", nodata=-9999.0) as dst:
        dst.write(np.ones((1, 8, 8), np.float32))
    far = GeoTiffReader(path).read(Window(6, 6, 4, 4))
    np.testing.assert_array_equal(far[0, :2, :2], 1.0)
    assert (far[0, 2:] == -9999.0).all()
    assert (GeoTiffReader(path).read(Window(50, 0, 2, 2)) == -9999).all()


def test_masks_per_band_and_all_bands() -> None:
    reader = GeoTiffReader(RGB)
    with rasterio.open(RGB) as ds:
        expected = ds.read_masks() > 0
    masks = reader.read_masks()
    np.testing.assert_array_equal(masks, expected)
    np.testing.assert_array_equal(reader.read_mask(), expected.all(axis=0))
    assert (masks.any(axis=0) & ~masks.all(axis=0)).sum() == 157  # 0 in some bands only


def test_internal_mask_and_no_mask(tmp_path: Path) -> None:
    data = np.arange(64, dtype=np.uint16).reshape(1, 8, 8)
    valid = np.ones((8, 8), bool)
    valid[:3, :2] = False
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(tmp_path / "m.tif", "w", driver="GTiff", width=8, height=8, count=1,
                           dtype="uint16") as dst:
            dst.write(data)
            dst.write_mask(valid)
        with rasterio.open(tmp_path / "n.tif", "w", driver="GTiff", width=8, height=8, count=1,
                           dtype="uint16") as dst:
            dst.write(data)
    masked = GeoTiffReader(tmp_path / "m.tif")
    assert masked.meta.has_mask and masked.meta.nodata is None and masked.meta.geo is None
    np.testing.assert_array_equal(masked.read_mask(), valid)
    plain = GeoTiffReader(tmp_path / "n.tif")
    assert not plain.meta.has_mask and plain.meta.extra["colorinterp"] == ("gray",)
    m = plain.read_mask(Window(6, 6, 4, 4))
    assert m[:2, :2].all() and not m[2:].any() and not m[:, 2:].any()


def test_decimated_read_matches_gdal_average() -> None:
    with rasterio.open(LANDSAT) as ds:
        expected = ds.read(out_shape=(4, 32, 40), resampling=Resampling.average)
    got = GeoTiffReader(LANDSAT).read(out_shape=(32, 40))
    np.testing.assert_array_equal(got, expected)
    wide = GeoTiffReader(LANDSAT).read(Window(-8, -8, 96, 80), out_shape=(24, 24))
    assert wide.shape == (4, 24, 24)


def test_gigantic_header_opens_and_reads_windows(tmp_path: Path) -> None:
    path = tmp_path / "huge.tif"
    with rasterio.open(path, "w", driver="GTiff", width=100_000, height=80_000, count=1,
                       dtype="uint8", tiled=True, blockxsize=1024, blockysize=1024,
                       SPARSE_OK=True, crs="EPSG:32618",
                       transform=Affine(10, 0, 0, 0, -10, 0)) as dst:
        dst.write(np.full((1, 4, 4), 9, np.uint8), window=Window(99_996, 79_996, 4, 4))
    reader = GeoTiffReader(path)
    assert (reader.meta.rows, reader.meta.cols) == (80_000, 100_000)
    corner = reader.read(Window(99_996, 79_996, 8, 8))
    assert (corner[0, :4, :4] == 9).all() and not corner[0, 4:].any()


def test_reader_pickles_and_reads_from_threads() -> None:
    reader = pickle.loads(pickle.dumps(GeoTiffReader(LANDSAT, bands=[0, 2])))
    assert reader.meta.bands == 2
    windows = [Window(c, r, 20, 16) for r in range(0, 64, 16) for c in range(0, 80, 20)]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(reader.read, windows))
    for win, got in zip(windows, parallel, strict=True):
        np.testing.assert_array_equal(got, reader.read(win))
    reader.close()


def test_reader_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputNotFoundError, match="nope.tif: no such file"):
        GeoTiffReader(tmp_path / "nope.tif")
    (tmp_path / "cut.tif").write_bytes(RGB.read_bytes()[:100])
    with pytest.raises(CorruptFileError, match="cut.tif: damaged TIFF"):
        GeoTiffReader(tmp_path / "cut.tif")
    (tmp_path / "text.tif").write_text("hello world, not a raster")
    with pytest.raises(UnsupportedFormatError, match="text.tif: not a raster GDAL can read"):
        GeoTiffReader(tmp_path / "text.tif")
    with rasterio.open(tmp_path / "c.tif", "w", driver="GTiff", width=4, height=4, count=1,
                       dtype="complex64") as dst:
        dst.write(np.ones((1, 4, 4), np.complex64))
    with pytest.raises(InvalidDataError, match="pixel type complex64 cannot be super-resolved"):
        GeoTiffReader(tmp_path / "c.tif")
    with pytest.raises(InvalidDataError, match="band index 4 out of range"):
        GeoTiffReader(LANDSAT, bands=[4])
    with pytest.raises(ValueError, match="frame 2 out of range"):
        GeoTiffReader(LANDSAT).read_masks(frame=2)


def test_damaged_tile_is_corrupt_file_error(tmp_path: Path) -> None:
    data = bytearray(LANDSAT.read_bytes())
    with rasterio.open(LANDSAT) as ds:
        off = int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    data[off:off + size] = bytes([0, 255]) * (size // 2) + bytes(size % 2)
    (tmp_path / "bad.tif").write_bytes(bytes(data))
    reader = GeoTiffReader(tmp_path / "bad.tif")
    assert reader.read(Window(0, 0, 32, 32)).shape == (4, 32, 32)  # other tiles are fine
    with pytest.raises(CorruptFileError, match="bad.tif: cannot read window .*TIFFReadEncodedTile"):
        reader.read()
    with pytest.raises(CorruptFileError, match="bad.tif: cannot read the mask of window"):
        reader.read_masks()


def test_scale_geo_metadata_keeps_origin() -> None:
    meta = GeoTiffReader(LANDSAT).meta
    t = Affine(*meta.geo.transform)
    two = scale_geo_metadata(meta, 2)
    assert (two.rows, two.cols) == (128, 160)
    assert Affine(*two.geo.transform) == Affine(t.a / 2, 0, t.c, 0, t.e / 2, t.f)
    odd = scale_geo_metadata(meta, (1.5, 3))
    assert (odd.rows, odd.cols) == (96, 240)
    assert odd.geo.transform[0] == pytest.approx(t.a / 3)
    assert odd.geo.transform[4] == pytest.approx(t.e / 1.5)
    assert "overviews" not in two.extra and two.geo.crs_wkt == meta.geo.crs_wkt
    assert scale_geo_metadata(replace(meta, geo=None), 2.5).geo is None


@pytest.mark.parametrize("path", [RGB, LANDSAT])
def test_cog_round_trip_keeps_pixels_and_metadata(tmp_path: Path, path: Path) -> None:
    src = GeoTiffReader(path)
    out = tmp_path / "out.tif"
    with CogWriter(out, src.meta) as writer:
        assert isinstance(writer, Writer)
        _write_tiles(writer, src.read(), src.read_masks())
        assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]
    assert cog_validate(out, strict=True)[0]
    back = GeoTiffReader(out)
    np.testing.assert_array_equal(back.read(), src.read())  # per-band masks: no value lost
    np.testing.assert_array_equal(back.read_masks(), src.read_masks())
    for field in ("shape", "dtype", "nodata", "has_mask", "band_names", "geo"):
        assert getattr(back.meta, field) == getattr(src.meta, field), field
    assert back.meta.extra["block_shapes"] == (512, 512)


def test_cog_of_upscaled_image_has_overviews(tmp_path: Path) -> None:
    src = GeoTiffReader(RGB)
    meta = scale_geo_metadata(src.meta, 3)
    hr = src.read().repeat(3, axis=1).repeat(3, axis=2)
    out = tmp_path / "x3.tif"
    with CogWriter(out, meta, blocksize=128, compress="ZSTD") as writer:
        _write_tiles(writer, hr, src.read_masks().repeat(3, axis=1).repeat(3, axis=2), tile=100)
    assert cog_validate(out, strict=True)[0]
    with rasterio.open(out) as ds, rasterio.open(RGB) as lr:
        assert ds.overviews(1) == [2, 4] and ds.compression.name == "zstd"
        assert ds.block_shapes[0] == (128, 128)
        assert ds.bounds == pytest.approx(lr.bounds) and ds.crs == lr.crs
        np.testing.assert_array_equal(ds.read(), hr)


def test_mask_sets_nodata_and_nudges_valid_nodata_values(tmp_path: Path) -> None:
    meta = replace(GeoTiffReader(RGB).meta, rows=2, cols=3)
    values = np.array([[[0, 5, 0], [7, 0, 255]]] * 3, np.uint8)
    mask = np.array([[True, False, False], [True, True, True]])
    with CogWriter(tmp_path / "n.tif", meta) as writer:
        writer.write(values, Window(0, 0, 3, 2), mask=mask)
    got = GeoTiffReader(tmp_path / "n.tif").read()
    np.testing.assert_array_equal(got[0], [[1, 0, 0], [7, 1, 255]])
    fmeta = replace(meta, dtype=np.dtype("float32"), nodata=-1.0, geo=None)
    with CogWriter(tmp_path / "f.tif", fmeta, compress="NONE") as writer:
        writer.write(np.array([[[-1.0, 2.5, np.nan]] * 2] * 3), Window(0, 0, 3, 2),
                     mask=np.array([[True, False, True]] * 2))
    back = GeoTiffReader(tmp_path / "f.tif").read()[0, 0]
    assert back[0] == np.nextafter(np.float32(-1), np.float32(1)) and back[1] == -1.0


def test_internal_mask_alpha_and_plain_tiff(tmp_path: Path) -> None:
    meta = Metadata(path=Path("a.png"), format="plain", bands=4, rows=20, cols=30,
                    dtype=np.dtype("uint16"), has_mask=True, band_names=("R", "G", "B", "A"),
                    alpha_band=3)
    data = np.full((4, 20, 30), 1000, np.uint16)
    valid = np.ones((20, 30), bool)
    valid[5:9, 10:20] = False
    with CogWriter(tmp_path / "rgba.tif", meta, cog=False) as writer:
        writer.write(data, Window(0, 0, 30, 20), mask=valid)
    back = GeoTiffReader(tmp_path / "rgba.tif")
    assert back.meta.geo is None and back.meta.alpha_band == 3
    assert back.meta.band_names == ("R", "G", "B", "A")
    np.testing.assert_array_equal(back.read_mask(), valid)
    gray = replace(meta, bands=1, band_names=("L",), alpha_band=None)
    with CogWriter(tmp_path / "m.tif", gray) as writer:
        writer.write(data[:1, :, :15], Window(0, 0, 15, 20), mask=valid[:, :15])
        writer.write(data[:1, :, 15:], Window(15, 0, 15, 20))
    masked = GeoTiffReader(tmp_path / "m.tif")
    assert masked.meta.has_mask and masked.meta.nodata is None
    valid[:, 15:] = True  # the second write came without a mask: all valid
    np.testing.assert_array_equal(masked.read_mask(), valid)


def test_band_scales_offsets_units_and_categorical_overviews(tmp_path: Path) -> None:
    geo = GeoInfo(crs_wkt=rasterio.crs.CRS.from_epsg(3035).to_wkt(),
                  transform=(20.0, 0.0, 4e6, 0.0, -20.0, 3e6), colorinterp=("gray",),
                  scales=(1e-4,), offsets=(-0.2,), units=("reflectance",),
                  tags={"SOURCE": "test"})
    meta = Metadata(path=Path("c.tif"), format="geotiff", bands=1, rows=256, cols=256,
                    dtype=np.dtype("uint8"), nodata=255, band_names=("class",), geo=geo,
                    extra={"categorical": True})
    classes = (np.arange(256)[:, None] // 3 + np.arange(256)[None] // 5) % 4 * 10
    with CogWriter(tmp_path / "c.tif", meta, blocksize=128) as writer:
        writer.write(classes[None].astype(np.uint8), Window(0, 0, 256, 256))
    back = GeoTiffReader(tmp_path / "c.tif").meta
    assert replace(back.geo, tags={}) == replace(geo, tags={}) and back.band_names == ("class",)
    assert back.geo.tags == {**geo.tags, "AREA_OR_POINT": "Area"}  # GDAL adds AREA_OR_POINT
    with rasterio.open(tmp_path / "c.tif") as ds:
        assert ds.overviews(1) == [2]
        overview = ds.read(1, out_shape=(128, 128))
    assert set(np.unique(overview)) <= {0, 10, 20, 30}  # NEAREST keeps class values


def test_abort_and_exceptions_leave_nothing(tmp_path: Path) -> None:
    meta = GeoTiffReader(RGB).meta
    writer = CogWriter(tmp_path / "a.tif", meta)
    writer.write(np.zeros((3, 10, 10), np.uint8), Window(0, 0, 10, 10))
    writer.abort()
    writer.abort()
    with pytest.raises(RuntimeError, match="boom"), CogWriter(tmp_path / "b.tif", meta) as w:
        w.write(np.zeros((3, 10, 10), np.uint8), Window(0, 0, 10, 10))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meta = GeoTiffReader(RGB).meta
    with pytest.raises(InvalidDataError, match="holds one frame, not 3"):
        CogWriter(tmp_path / "s.tif", replace(meta, frames=3))
    with pytest.raises(InvalidDataError, match="pixel type complex64"):
        CogWriter(tmp_path / "s.tif", replace(meta, dtype=np.dtype("complex64")))
    with pytest.raises(ValueError, match="blocksize 100 must be a multiple of 16"):
        CogWriter(tmp_path / "s.tif", meta, blocksize=100)
    with pytest.raises(ValueError, match="blocksize 64 must be .* at least 128 for a COG"):
        CogWriter(tmp_path / "s.tif", meta, blocksize=64)
    with pytest.raises(WriteError, match="output path equals the input"):
        CogWriter(RGB, meta, inputs=(RGB,))
    (tmp_path / "old.tif").write_bytes(b"old")
    with pytest.raises(WriteError, match="is not a .tif file written by zssr"):  # output rule
        CogWriter(tmp_path / "old.tif", meta, overwrite=True)
    (tmp_path / "old.tif").write_bytes(b"II*\x00old")  # an earlier TIFF output
    with pytest.raises(WriteError, match="already exists"):
        CogWriter(tmp_path / "old.tif", meta)
    writer = CogWriter(tmp_path / "old.tif", meta, overwrite=True)
    with pytest.raises(ValueError, match="mask shape"):
        writer.write(np.zeros((3, 4, 4)), Window(0, 0, 4, 4), mask=np.ones((2, 4, 4), bool))
    writer.write(np.zeros((3, 96, 128)), Window(0, 0, 128, 96))
    writer.commit()
    assert GeoTiffReader(tmp_path / "old.tif").meta.shape == (3, 96, 128)
    with pytest.raises(WriteError, match="already committed or aborted"):
        writer.write(np.zeros((3, 4, 4)), Window(0, 0, 4, 4))
    with pytest.raises(WriteError, match="already committed or aborted"):
        writer.commit()


def test_gdal_failures_become_write_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meta = GeoTiffReader(RGB).meta

    def fail(*args, **kwargs):
        raise RasterioIOError("disk full")

    writer = CogWriter(tmp_path / "w.tif", meta)
    monkeypatch.setattr(writer._dst, "write", fail)
    with pytest.raises(WriteError, match="cannot write window .*disk full"):
        writer.write(np.zeros((3, 4, 4)), Window(0, 0, 4, 4))
    monkeypatch.setattr(cog_module.rasterio.shutil, "copy", fail)
    with pytest.raises(WriteError, match="cannot finish the GeoTIFF: disk full"):
        writer.commit()
    monkeypatch.setattr(cog_module.rasterio, "open", fail)
    with pytest.raises(WriteError, match="cannot create the temporary GeoTIFF: disk full"):
        CogWriter(tmp_path / "v.tif", meta)
    assert list(tmp_path.iterdir()) == []
