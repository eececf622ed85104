"""ZarrWriter / write_region / ZarrReader: round trips, xarray + rioxarray georeferencing,
chunk alignment, several processes writing one store, OME-style medical attrs.

Pixels come from the Landsat crop fixture (tests/data/make_io_fixtures.py).
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr
from affine import Affine
from rasterio.windows import Window

from io_adapters import zarr_store
from io_adapters.base import MedicalInfo, Metadata, Reader, Writer
from io_adapters.errors import CorruptFileError, InputNotFoundError, InvalidDataError, WriteError
from io_adapters.geotiff import GeoTiffReader
from io_adapters.zarr_regions import write_region
from io_adapters.zarr_store import ZarrReader, ZarrWriter, scale_zarr_metadata

LANDSAT = Path(__file__).parent / "data" / "io" / "geotiff" / "landsat_64x80.tif"
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")


def _chunk_windows(rows: int, cols: int, tile: int) -> list[Window]:
    return [Window(c, r, min(tile, cols - c), min(tile, rows - r))
            for r in range(0, rows, tile) for c in range(0, cols, tile)]


def _write_all(writer, data, masks=None, tile=32, frame=0) -> None:
    for w in _chunk_windows(data.shape[1], data.shape[2], tile):
        r, c, h, wd = int(w.row_off), int(w.col_off), int(w.height), int(w.width)
        part = None if masks is None else masks[:, r:r + h, c:c + wd]
        writer.write(data[:, r:r + h, c:c + wd], w, frame=frame, mask=part)


def test_round_trip_keeps_pixels_masks_and_metadata(tmp_path: Path) -> None:
    src = GeoTiffReader(LANDSAT)
    out = tmp_path / "out.zarr"
    with ZarrWriter(out, src.meta, chunks=(32, 32), attrs={"run": {"scale": 1}}) as writer:
        assert isinstance(writer, Writer)
        _write_all(writer, src.read(), src.read_masks())
        assert not out.exists() and writer.store_path.name == "out.zarr.partial"
    assert [p.name for p in tmp_path.iterdir()] == ["out.zarr"]
    back = ZarrReader(out)
    assert isinstance(back, Reader)
    np.testing.assert_array_equal(back.read(), src.read())
    np.testing.assert_array_equal(back.read_masks(), src.read_masks())
    for field in ("shape", "dtype", "nodata", "has_mask", "band_names", "geo", "frames"):
        assert getattr(back.meta, field) == getattr(src.meta, field), field
    assert back.meta.format == "zarr" and back.meta.extra["attrs"] == {"run": {"scale": 1}}
    assert back.meta.extra["chunks"] == (4, 32, 32)
    assert back.meta.extra["dimension_names"] == ("band", "y", "x")
    assert zarr.open_array(out, path="band_data").shards is None


def test_xarray_and_rioxarray_see_crs_and_transform(tmp_path: Path) -> None:
    xr = pytest.importorskip("xarray")
    pytest.importorskip("rioxarray")
    src = GeoTiffReader(LANDSAT)
    meta = scale_zarr_metadata(src.meta, 2)
    with ZarrWriter(tmp_path / "x2.zarr", meta, chunks=(64, 64)) as writer:
        _write_all(writer, src.read().repeat(2, 1).repeat(2, 2), tile=64)
    ds = xr.open_zarr(tmp_path / "x2.zarr")  # consolidated: no fallback warning
    with rasterio.open(LANDSAT) as lr:
        assert ds.rio.crs == lr.crs
        assert ds.rio.transform() == Affine(*meta.geo.transform)
        assert ds.band_data.rio.bounds() == pytest.approx(tuple(lr.bounds))
    assert ds.band_data.dims == ("band", "y", "x") and ds.band_data.shape == (4, 128, 160)
    assert ds.band_data.rio.encoded_nodata == 0
    assert int(ds.band_data.isnull().sum()) == int((src.read() == 0).sum() * 4)
    t = Affine(*meta.geo.transform)
    assert float(ds.x[0]) == t.c + t.a / 2 and float(ds.y[-1]) == t.f + t.e * 127.5


def test_rioxarray_written_zarr_is_readable(tmp_path: Path) -> None:
    rioxarray = pytest.importorskip("rioxarray")
    da = rioxarray.open_rasterio(LANDSAT)
    da.to_dataset(name="band_data").to_zarr(tmp_path / "rx.zarr", zarr_format=3,
                                         consolidated=False)
    reader = ZarrReader(tmp_path / "rx.zarr")
    src = GeoTiffReader(LANDSAT)
    assert reader.meta.shape == src.meta.shape and reader.meta.nodata == 0
    assert reader.meta.geo.transform == pytest.approx(src.meta.geo.transform)
    assert rasterio.crs.CRS.from_wkt(reader.meta.geo.crs_wkt) == rasterio.crs.CRS.from_epsg(32620)
    np.testing.assert_array_equal(reader.read(Window(-3, 10, 20, 20)),
                                  src.read(Window(-3, 10, 20, 20)))


def _write_chunk(args: tuple[str, int, int]) -> int:
    store, r, c = args
    data = GeoTiffReader(LANDSAT).read(Window(c, r, 32, 32))
    write_region(store, data[:, :min(32, 64 - r), :min(32, 80 - c)],
                 Window(c, r, min(32, 80 - c), min(32, 64 - r)))
    return r * 1000 + c


def test_several_processes_write_one_store(tmp_path: Path) -> None:
    src = GeoTiffReader(LANDSAT)
    writer = ZarrWriter(tmp_path / "mp.zarr", src.meta, chunks=(32, 32))
    jobs = [(str(writer.store_path), int(w.row_off), int(w.col_off))
            for w in _chunk_windows(64, 80, 32)]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert len(list(pool.map(_write_chunk, jobs))) == 6
    writer.commit()
    np.testing.assert_array_equal(ZarrReader(tmp_path / "mp.zarr").read(), src.read())


def test_alignment_is_enforced(tmp_path: Path) -> None:
    writer = ZarrWriter(tmp_path / "a.zarr", GeoTiffReader(LANDSAT).meta, chunks=(32, 32))
    for bad in (Window(16, 0, 32, 32), Window(0, 0, 16, 32), Window(32, 32, 32, 16)):
        with pytest.raises(ValueError, match="not aligned to the 32 x 32 chunks"):
            writer.write(np.zeros((4, int(bad.height), int(bad.width))), bad)
    writer.write(np.ones((4, 32, 16)), Window(64, 32, 16, 32))  # short edge chunk is fine
    writer.write(np.ones((4, 32, 48)), Window(32, 0, 48, 32))  # several whole chunks too
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_mask_sets_nodata_and_nudges(tmp_path: Path) -> None:
    meta = replace(GeoTiffReader(LANDSAT).meta, rows=2, cols=2)
    mask = np.array([[True, False], [True, True]])
    with ZarrWriter(tmp_path / "m.zarr", meta, chunks=(2, 2), compressor="zstd") as writer:
        writer.write(np.array([[[0.2, 9], [-4, 70000]]] * 4), Window(0, 0, 2, 2), mask=mask)
    got = ZarrReader(tmp_path / "m.zarr")
    np.testing.assert_array_equal(got.read()[0], [[1, 0], [1, 65535]])
    np.testing.assert_array_equal(got.read_mask(), mask)


def test_stack_frames_and_medical_attrs(tmp_path: Path) -> None:
    med = MedicalInfo(modality="CT", photometric="MONOCHROME2", pixel_spacing=(0.5, 0.25),
                      slice_thickness=2.0, orientation=(1, 0, 0, 0, 1, 0),
                      positions=((-10.0, -20.0, 5.0), (-10.0, -20.0, 8.0), (-10.0, -20.0, 11.0)),
                      rescale_intercept=-1024.0, sources=("a.dcm", "b.dcm", "c.dcm"))
    meta = Metadata(path=Path("series"), format="dicom", bands=1, rows=20, cols=24,
                    dtype=np.dtype("int16"), frames=3, medical=med, extra={"layout": "series"})
    data = np.arange(3 * 20 * 24, dtype=np.int16).reshape(3, 1, 20, 24)
    with ZarrWriter(tmp_path / "ct.zarr", meta, chunks=(16, 16)) as writer:
        for f in (2, 0, 1):
            _write_all(writer, data[f], tile=16, frame=f)
    back = ZarrReader(tmp_path / "ct.zarr")
    assert back.meta.frames == 3 and back.meta.medical == med and back.meta.geo is None
    np.testing.assert_array_equal(back.read(Window(20, 16, 8, 8), frame=1)[0, :4, :4],
                                  data[1, 0, 16:, 20:])
    ome = json.loads((tmp_path / "ct.zarr" / "zarr.json").read_text())["attributes"]["ome"]
    ms = ome["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["c", "z", "y", "x"]  # OME: channel first
    scale, shift = ms["datasets"][0]["coordinateTransformations"]
    assert scale["scale"] == [1.0, 3.0, 0.5, 0.25]
    assert shift["translation"] == [0.0, 5.0, -20.0, -10.0]
    assert zarr.open_array(tmp_path / "ct.zarr", path="band_data").metadata.dimension_names == (
        "c", "z", "y", "x")
    with pytest.raises(ValueError, match="frame 3 out of range"):
        back.read(frame=3)
    assert scale_zarr_metadata(back.meta, 2).medical.pixel_spacing == (0.25, 0.125)


def test_stack_in_the_old_frame_band_layout_is_still_read(tmp_path: Path) -> None:
    """Medical stacks written before the OME order were (frame, band, y, x)."""
    group = zarr.open_group(tmp_path / "old.zarr", mode="w", zarr_format=3,
                            attributes={"zssr": {"band_names": ["r", "g"]}})
    arr = group.create_array("band_data", shape=(3, 2, 5, 4), chunks=(1, 2, 5, 4),
                             dtype="uint8", dimension_names=("frame", "band", "y", "x"))
    data = np.arange(120, dtype=np.uint8).reshape(3, 2, 5, 4)
    arr[:] = data
    back = ZarrReader(tmp_path / "old.zarr", bands=[1])
    assert (back.meta.frames, back.meta.bands, back.meta.band_names) == (3, 1, ("g",))
    np.testing.assert_array_equal(back.read(frame=2), data[2, 1:])


def test_float_nan_nodata_and_alpha(tmp_path: Path) -> None:
    meta = Metadata(path=Path("f"), format="plain", bands=2, rows=4, cols=4,
                    dtype=np.dtype("float32"), nodata=float("nan"), band_names=("L", "A"),
                    alpha_band=1)
    data = np.ones((2, 4, 4), np.float32)
    data[1, 0, 0] = 0  # transparent
    mask = np.ones((4, 4), bool)
    mask[3, 3] = False
    with ZarrWriter(tmp_path / "f.zarr", meta, chunks=(4, 4)) as writer:
        writer.write(data, Window(0, 0, 4, 4), mask=mask)
    back = ZarrReader(tmp_path / "f.zarr")
    assert np.isnan(back.meta.nodata) and back.meta.alpha_band == 1
    valid = back.read_mask()
    assert not valid[0, 0] and not valid[3, 3] and valid.sum() == 14
    assert np.isnan(back.read(Window(3, 3, 2, 2))).all()
    assert ZarrReader(tmp_path / "f.zarr", bands=[0]).meta.alpha_band is None


def test_overwrite_abort_and_exceptions(tmp_path: Path) -> None:
    meta = GeoTiffReader(LANDSAT).meta
    with pytest.raises(RuntimeError, match="boom"), ZarrWriter(tmp_path / "e.zarr", meta):
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "old.zarr").mkdir()
    (tmp_path / "old.zarr" / "junk").write_text("x")
    with pytest.raises(WriteError, match="already exists"):
        ZarrWriter(tmp_path / "old.zarr", meta)
    with pytest.raises(WriteError, match="not a Zarr store written by zssr"):  # output rule
        ZarrWriter(tmp_path / "old.zarr", meta, overwrite=True)
    assert (tmp_path / "old.zarr" / "junk").read_text() == "x"
    shutil.rmtree(tmp_path / "old.zarr")
    with ZarrWriter(tmp_path / "old.zarr", meta) as writer:  # now replace a store of ours
        _write_all(writer, np.zeros_like(GeoTiffReader(LANDSAT).read()), tile=512)
    with ZarrWriter(tmp_path / "old.zarr", meta, overwrite=True) as writer:
        _write_all(writer, GeoTiffReader(LANDSAT).read(), tile=512)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.zarr"]
    with pytest.raises(WriteError, match="already committed or aborted"):
        writer.write(np.zeros((4, 64, 80)), Window(0, 0, 80, 64))
    with pytest.raises(WriteError, match="already committed or aborted"):
        writer.commit()


def test_writer_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meta = GeoTiffReader(LANDSAT).meta
    with pytest.raises(ValueError, match=r"attrs\['zssr'\] is reserved"):
        ZarrWriter(tmp_path / "a.zarr", meta, attrs={"zssr": 1})
    with pytest.raises(ValueError, match=r"attrs\['bad'\] is reserved or not JSON"):
        ZarrWriter(tmp_path / "a.zarr", meta, attrs={"bad": {1, 2}})
    with pytest.raises(ValueError, match="compressor 'lz4' unknown"):
        ZarrWriter(tmp_path / "a.zarr", meta, compressor="lz4")
    with pytest.raises(ValueError, match="chunks .* must be a"):
        ZarrWriter(tmp_path / "a.zarr", meta, chunks=(0, 32))
    with pytest.raises(InvalidDataError, match="pixel type bool"):
        ZarrWriter(tmp_path / "a.zarr", replace(meta, dtype=np.dtype(bool)))

    def fail(*args, **kwargs):
        raise OSError("read-only file system")

    monkeypatch.setattr(zarr_store.zarr, "open_group", fail)
    with pytest.raises(WriteError, match="cannot create the Zarr store: read-only"):
        ZarrWriter(tmp_path / "a.zarr", meta)
    assert list(tmp_path.iterdir()) == []


def test_reader_errors(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="none.zarr: no such Zarr store"):
        ZarrReader(tmp_path / "none.zarr")
    (tmp_path / "bad.zarr").mkdir()
    (tmp_path / "bad.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="bad.zarr: cannot open the Zarr store"):
        ZarrReader(tmp_path / "bad.zarr")
    group = zarr.open_group(tmp_path / "two.zarr", mode="w")
    group.create_array("a", shape=(4, 4), dtype="uint8")
    group.create_array("b", shape=(4, 4), dtype="uint8")
    with pytest.raises(InvalidDataError, match=r"expected one image array .*\['a', 'b'\]"):
        ZarrReader(tmp_path / "two.zarr")
    zarr.create_array(tmp_path / "5d.zarr", shape=(1, 1, 1, 4, 4), dtype="uint8")
    with pytest.raises(InvalidDataError, match="has 5 dimensions"):
        ZarrReader(tmp_path / "5d.zarr")
    zarr.create_array(tmp_path / "yxc.zarr", shape=(4, 4, 3), dtype="uint8",
                      dimension_names=("y", "x", "band"))
    with pytest.raises(InvalidDataError, match=r"must end with \('y', 'x'\)"):
        ZarrReader(tmp_path / "yxc.zarr")
    zarr.create_array(tmp_path / "c.zarr", shape=(4, 4), dtype="complex64")
    with pytest.raises(InvalidDataError, match="pixel type complex64"):
        ZarrReader(tmp_path / "c.zarr")


def test_bare_array_store_is_one_band(tmp_path: Path) -> None:
    arr = zarr.create_array(tmp_path / "g.zarr", shape=(6, 5), chunks=(3, 3), dtype="float32")
    arr[:] = np.arange(30, dtype=np.float32).reshape(6, 5)
    reader = ZarrReader(tmp_path / "g.zarr")
    assert reader.meta.shape == (1, 6, 5) and reader.meta.geo is None
    out = reader.read(Window(3, 4, 4, 4))
    np.testing.assert_array_equal(out[0, :2, :2], [[23, 24], [28, 29]])
    assert not out[0, 2:].any()
