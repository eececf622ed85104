"""Format detection by content, writer choice by suffix, metadata scaling dispatch.

DICOM inputs are pydicom's bundled test files (pydicom.data), so no copy is needed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from rasterio.windows import Window

from io_adapters import detect
from io_adapters.base import Metadata, Reader
from io_adapters.cog import CogWriter
from io_adapters.detect import open_reader, open_writer, scale_metadata, sniff
from io_adapters.errors import (
    CorruptFileError,
    InputNotFoundError,
    InvalidDataError,
    UnsupportedFormatError,
)
from io_adapters.geotiff import GeoTiffReader
from io_adapters.plain import PlainReader, PngWriter
from io_adapters.zarr_store import ZarrReader, ZarrWriter

IO = Path(__file__).parent / "data" / "io"
TIF, PNG = IO / "geotiff" / "rgb_byte_96x128.tif", IO / "plain" / "butterfly_48x64.png"
BMP = IO / "plain" / "t4.bmp"
SUPPORTED = "supported: TIFF/GeoTIFF/COG, PNG, JPEG, BMP, Zarr folder"


def _dicom_file() -> Path:
    data = pytest.importorskip("pydicom.data")
    return Path(data.get_testdata_file("CT_small.dcm"))


@pytest.mark.parametrize(("path", "name", "cls"), [
    (TIF, "geotiff", GeoTiffReader), (PNG, "png", PlainReader), (BMP, "bmp", PlainReader),
])
def test_files_are_recognised_by_content(path: Path, name: str, cls: type) -> None:
    assert sniff(path) == name
    reader = open_reader(path)
    assert isinstance(reader, cls) and isinstance(reader, Reader)


def test_extension_is_only_a_hint(tmp_path: Path) -> None:
    shutil.copyfile(PNG, tmp_path / "looks_like.tif")
    shutil.copyfile(TIF, tmp_path / "looks_like.png")
    with PIL.Image.open(PNG) as im:
        im.save(tmp_path / "photo.dat", format="JPEG")
    png = open_reader(tmp_path / "looks_like.tif")
    assert isinstance(png, PlainReader) and png.meta.extra["file_format"] == "PNG"
    assert isinstance(open_reader(tmp_path / "looks_like.png"), GeoTiffReader)
    assert sniff(tmp_path / "photo.dat") == "jpeg"
    np.testing.assert_array_equal(png.read(), PlainReader(PNG).read())


def test_bands_are_passed_to_the_reader() -> None:
    reader = open_reader(TIF, bands=[2])
    assert reader.meta.bands == 1 and reader.meta.band_names == ("B",)


def test_zarr_folder_is_recognised(tmp_path: Path) -> None:
    meta = GeoTiffReader(TIF).meta
    with ZarrWriter(tmp_path / "a.zarr", meta) as writer:
        writer.write(np.zeros(meta.shape, np.uint8), Window(0, 0, meta.cols, meta.rows))
    shutil.move(tmp_path / "a.zarr", tmp_path / "renamed")
    assert sniff(tmp_path / "renamed") == "zarr"
    assert isinstance(open_reader(tmp_path / "renamed"), ZarrReader)


def test_dicom_file_and_folder(tmp_path: Path) -> None:
    dcm = _dicom_file()
    shutil.copyfile(dcm, tmp_path / "slice.img")
    reader = open_reader(tmp_path / "slice.img")
    assert reader.meta.format == "dicom" and isinstance(reader, Reader)
    (tmp_path / "series").mkdir()
    shutil.copyfile(dcm, tmp_path / "series" / "1.dcm")
    assert sniff(tmp_path / "series") == "dicom"
    with pytest.raises(InvalidDataError, match="band selection is not supported for DICOM"):
        open_reader(dcm, bands=[1])


def test_bad_inputs_fail_with_one_line_messages(tmp_path: Path) -> None:
    (tmp_path / "notes.tif").write_text("hello world\n")
    bad_content = rf"notes.tif: unsupported file content .*named \.tif.*{SUPPORTED}"
    with pytest.raises(UnsupportedFormatError, match=bad_content) as e:
        open_reader(tmp_path / "notes.tif")
    assert "\n" not in str(e.value)
    with pytest.raises(InputNotFoundError, match="missing.tif: no such file or folder"):
        open_reader(tmp_path / "missing.tif")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(CorruptFileError, match=r"empty.png: file is empty \(0 bytes\)"):
        open_reader(tmp_path / "empty.png")
    (tmp_path / "folder").mkdir()
    with pytest.raises(UnsupportedFormatError,
                       match=f"folder: folder is neither a Zarr store .*{SUPPORTED}"):
        open_reader(tmp_path / "folder")
    (tmp_path / "BMxx").write_bytes(b"BM" + bytes(40))
    with pytest.raises(UnsupportedFormatError,
                       match=r"BMxx: unsupported file content \(starts with b'BM"):
        open_reader(tmp_path / "BMxx")


def test_unreadable_file_is_corrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(detect, "open", denied, raising=False)
    with pytest.raises(CorruptFileError, match="cannot be read: Permission denied"):
        open_reader(TIF)


def test_without_the_dicom_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detect, "DICOM_MODULE", ".no_such_dicom_module")
    monkeypatch.setattr(detect, "_dicom_state", {"loaded": False, "error": ""})
    without = {k: v for k, v in detect.READERS.items() if k != "dicom"}
    monkeypatch.setattr(detect, "READERS", without)
    assert detect.load_dicom_plugin() is False
    assert "DICOM" not in detect.supported_formats()
    assert isinstance(open_reader(PNG), PlainReader)
    with pytest.raises(UnsupportedFormatError, match="is DICOM but the DICOM adapter is unavailable"
                                                     r" \(ModuleNotFoundError"):
        open_reader(_dicom_file())


def _meta(geo: bool) -> Metadata:
    return GeoTiffReader(TIF).meta if geo else PlainReader(PNG).meta


def test_open_writer_by_suffix(tmp_path: Path) -> None:
    cog = open_writer(tmp_path / "a.tif", _meta(True))
    tiff = open_writer(tmp_path / "b.TIFF", _meta(False), compress="ZSTD")
    assert isinstance(cog, CogWriter) and cog._cog and isinstance(tiff, CogWriter) and not tiff._cog
    zarr_writer = open_writer(tmp_path / "c.zarr", _meta(True), chunks=(64, 64))
    png = open_writer(tmp_path / "d.png", _meta(False))
    assert isinstance(zarr_writer, ZarrWriter) and isinstance(png, PngWriter)
    for writer in (cog, tiff, zarr_writer, png):
        writer.abort()
    with pytest.raises(InvalidDataError, match="DicomWriter needs DICOM metadata"):
        open_writer(tmp_path / "e.dcm", _meta(False))
    with pytest.raises(UnsupportedFormatError, match=r"cannot write \.jpg outputs; choose one of: "
                                                     r"\.tif/\.tiff .*\.zarr .*\.png"):
        open_writer(tmp_path / "f.jpg", _meta(False))
    assert list(tmp_path.iterdir()) == []


def test_open_writer_round_trip_through_detection(tmp_path: Path) -> None:
    meta = scale_metadata(_meta(True), 2)
    data = GeoTiffReader(TIF).read().repeat(2, 1).repeat(2, 2)
    with open_writer(tmp_path / "x2.tif", meta) as writer:
        writer.write(data, Window(0, 0, meta.cols, meta.rows))
    back = open_reader(tmp_path / "x2.tif")
    assert back.meta.geo == meta.geo and back.meta.shape == (3, 192, 256)
    np.testing.assert_array_equal(back.read(), data)


def test_scale_metadata_dispatches_by_format() -> None:
    assert scale_metadata(_meta(False), 3).shape == (3, 144, 192)
    geo = scale_metadata(_meta(True), 2)
    assert geo.geo.transform[0] == pytest.approx(_meta(True).geo.transform[0] / 2)
    dcm = open_reader(_dicom_file()).meta
    assert scale_metadata(dcm, 2).rows == dcm.rows * 2
    from dataclasses import replace

    with pytest.raises(UnsupportedFormatError, match="no metadata scaling for format 'vrt'"):
        scale_metadata(replace(_meta(False), format="vrt"), 2)
