"""Plain images: PlainReader (Pillow, GDAL for 16-bit PNG) and PngWriter round trips.

Fixtures are crops of Set5/Set14/T91 images written by tests/data/make_io_fixtures.py.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from rasterio.windows import Window

from io_adapters import plain
from io_adapters.base import Metadata, Reader, Writer
from io_adapters.errors import (
    CorruptFileError,
    InputNotFoundError,
    InvalidDataError,
    UnsupportedFormatError,
    WriteError,
)
from io_adapters.plain import PlainReader, PngWriter, scale_plain_metadata

PLAIN = Path(__file__).parent / "data" / "io" / "plain"
RGB, GRAY = PLAIN / "butterfly_48x64.png", PLAIN / "bridge_40x48.png"
RGBA = PLAIN / "bird_rgba_48x64.png"
RGB16, BMP = PLAIN / "butterfly16_48x64.png", PLAIN / "t4.bmp"


def _pillow_chw(path: Path, mode: str | None = None) -> np.ndarray:
    with PIL.Image.open(path) as im:
        arr = np.asarray(im.convert(mode) if mode else im)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


@pytest.mark.parametrize(("path", "names", "shape"), [
    (RGB, ("R", "G", "B"), (3, 48, 64)),
    (GRAY, ("L",), (1, 40, 48)),
    (RGBA, ("R", "G", "B", "A"), (4, 48, 64)),
    (BMP, ("R", "G", "B"), (3, 300, 211)),
])
def test_reads_8bit_pixels_and_metadata(path: Path, names, shape) -> None:
    with PlainReader(path) as reader:
        assert isinstance(reader, Reader)
        meta = reader.meta
        assert (meta.format, meta.band_names, meta.shape, meta.dtype) == (
            "plain", names, shape, np.uint8)
        assert meta.geo is None and meta.nodata is None
        np.testing.assert_array_equal(reader.read(), _pillow_chw(path))


def test_alpha_is_a_band_and_the_mask() -> None:
    reader = PlainReader(RGBA)
    assert reader.meta.alpha_band == 3 and reader.meta.has_mask
    mask = reader.read_mask()
    np.testing.assert_array_equal(mask, reader.read()[3] != 0)
    assert not mask[:, :8].any() and mask[:, 8:].all()
    assert reader.read_masks(Window(0, 0, 10, 2)).shape == (4, 2, 10)


def test_16bit_colour_png_keeps_16_bits() -> None:
    reader = PlainReader(RGB16)
    wide = reader.read()
    assert reader.meta.dtype == np.uint16 and wide.max() > 255
    np.testing.assert_array_equal(wide // 257, _pillow_chw(RGB))  # v * 257 + noise < 257


def test_16bit_gray_png(tmp_path: Path) -> None:
    values = (_pillow_chw(GRAY)[0].astype(np.uint16) * 250 + 7)
    PIL.Image.fromarray(values).save(tmp_path / "g16.png")
    reader = PlainReader(tmp_path / "g16.png")
    assert reader.meta.dtype == np.uint16 and reader.meta.band_names == ("L",)
    np.testing.assert_array_equal(reader.read()[0], values)


def test_palette_and_jpeg_become_rgb(tmp_path: Path) -> None:
    with PIL.Image.open(RGB) as im:
        im.quantize(16).save(tmp_path / "p.png")
        with_tr = im.quantize(16)
        with_tr.info["transparency"] = 0
        with_tr.save(tmp_path / "pt.png", transparency=0)
        im.save(tmp_path / "a.jpg", quality=90)
        im.convert("CMYK").save(tmp_path / "cmyk.jpg")
    p = PlainReader(tmp_path / "p.png")
    assert p.meta.band_names == ("R", "G", "B")
    np.testing.assert_array_equal(p.read(), _pillow_chw(tmp_path / "p.png", "RGB"))
    assert PlainReader(tmp_path / "pt.png").meta.band_names == ("R", "G", "B", "A")
    jpg = PlainReader(tmp_path / "a.jpg")
    assert jpg.meta.extra["file_format"] == "JPEG" and jpg.meta.shape == (3, 48, 64)
    assert np.abs(jpg.read().astype(int) - _pillow_chw(RGB)).mean() < 8
    assert PlainReader(tmp_path / "cmyk.jpg").read().shape == (3, 48, 64)


def test_boundless_windows_and_band_selection() -> None:
    reader = PlainReader(RGB, bands=[2, 0])
    full = _pillow_chw(RGB)[[2, 0]]
    assert reader.meta.band_names == ("B", "R")
    out = reader.read(Window(-5, -3, 20, 10))
    assert out.shape == (2, 10, 20)
    np.testing.assert_array_equal(out[:, 3:, 5:], full[:, :7, :15])
    assert not out[:, :3].any() and not out[:, :, :5].any()
    assert not reader.read(Window(100, 100, 4, 4)).any()
    np.testing.assert_array_equal(reader.read(Window(60, 40, 10, 10), bands=[1])[0, :8, :4],
                                  full[1, 40:, 60:])
    mask = reader.read_mask(Window(60, 40, 10, 10))
    assert mask[:8, :4].all() and not mask[8:].any() and not mask[:, 4:].any()


def test_reader_pickles_by_path() -> None:
    reader = PlainReader(RGBA, bands=[3])
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone.read(), reader.read())


def test_reader_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputNotFoundError, match="missing.png: no such file"):
        PlainReader(tmp_path / "missing.png")
    (tmp_path / "t.png").write_text("not an image")
    with pytest.raises(UnsupportedFormatError, match="t.png: not an image Pillow can read"):
        PlainReader(tmp_path / "t.png")
    (tmp_path / "cut.png").write_bytes(RGB.read_bytes()[:200])
    with pytest.raises(CorruptFileError, match="cut.png: cannot decode the pixels"):
        PlainReader(tmp_path / "cut.png").read()
    (tmp_path / "cut16.png").write_bytes(RGB16.read_bytes()[:40])
    with pytest.raises(CorruptFileError, match="cut16.png: cannot read the 16-bit PNG"):
        PlainReader(tmp_path / "cut16.png")
    reader = PlainReader(RGB)
    with pytest.raises(InvalidDataError, match="band index 3 out of range.*0..2"):
        reader.read(bands=[3])
    with pytest.raises(InvalidDataError, match="empty band selection"):
        PlainReader(RGB, bands=[])
    with pytest.raises(ValueError, match="frame 1 out of range"):
        reader.read(frame=1)
    with pytest.raises(ValueError, match="integer offsets"):
        reader.read(Window(0.5, 0, 4, 4))
    monkeypatch.delitem(plain._MODES, "L")
    with pytest.raises(InvalidDataError, match="unsupported PNG pixel mode 'L'"):
        PlainReader(GRAY)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(InvalidDataError, match="too large to decode whole"):
        PlainReader(RGB)


def test_header_oserror_is_corrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(PIL.Image, "open", broken)
    with pytest.raises(CorruptFileError, match="cannot read the image header: disk on fire"):
        PlainReader(RGB)


def _meta(bands: int, dtype: str, rows: int = 37, cols: int = 53, **kw) -> Metadata:
    names = {1: ("L",), 2: ("L", "A"), 3: ("R", "G", "B"), 4: ("R", "G", "B", "A")}[bands]
    alpha = bands - 1 if bands in (2, 4) else None
    return Metadata(path=Path("src.png"), format="plain", bands=bands, rows=rows, cols=cols,
                    dtype=np.dtype(dtype), band_names=names, alpha_band=alpha, **kw)


def _write_tiles(writer, data: np.ndarray, tile: int = 16) -> None:
    _, rows, cols = data.shape
    for r in range(0, rows, tile):
        for c in range(0, cols, tile):
            win = Window(c, r, min(tile, cols - c), min(tile, rows - r))
            writer.write(data[:, r:r + tile, c:c + tile], win)


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("bands", [1, 2, 3, 4])
def test_png_round_trip(tmp_path: Path, bands: int, dtype: str) -> None:
    rng = np.random.default_rng(bands)
    data = rng.integers(0, np.iinfo(dtype).max, (bands, 37, 53), dtype=dtype, endpoint=True)
    out = tmp_path / "out.png"
    with PngWriter(out, _meta(bands, dtype)) as writer:
        assert isinstance(writer, Writer)
        _write_tiles(writer, data)
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    back = PlainReader(out)
    assert back.meta.dtype == np.dtype(dtype)
    assert back.meta.band_names == _meta(bands, dtype).band_names
    np.testing.assert_array_equal(back.read(), data)
    if dtype == "uint8":
        np.testing.assert_array_equal(_pillow_chw(out), data)


def test_png_writer_casts_floats_and_applies_alpha_mask(tmp_path: Path) -> None:
    out = tmp_path / "f.png"
    values = np.array([[[-3.2, 0.4, 254.6, 300.7]]] * 4)
    mask = np.array([[True, False, True, True]])
    with PngWriter(out, _meta(4, "uint8", rows=1, cols=4)) as writer:
        writer.write(values, Window(0, 0, 4, 1), mask=mask)
    got = PlainReader(out).read()[:, 0]
    np.testing.assert_array_equal(got[:3], [[0, 0, 255, 255]] * 3)
    np.testing.assert_array_equal(got[3], [0, 0, 255, 255])
    np.testing.assert_array_equal(PlainReader(out).read_mask()[0], [False, False, True, True])


def test_png_abort_leaves_nothing(tmp_path: Path) -> None:
    writer = PngWriter(tmp_path / "a.png", _meta(3, "uint8"))
    writer.write(np.zeros((3, 5, 5), np.uint8), Window(0, 0, 5, 5))
    writer.abort()
    with pytest.raises(RuntimeError, match="boom"):
        with PngWriter(tmp_path / "b.png", _meta(1, "uint8")):
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_png_writer_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidDataError, match="8- or 16-bit unsigned pixels, not float32"):
        PngWriter(tmp_path / "x.png", _meta(3, "float32"))
    with pytest.raises(InvalidDataError, match="1-4 bands"):
        PngWriter(tmp_path / "x.png", _meta(1, "uint8", frames=2))
    with pytest.raises(InvalidDataError, match="too large for the in-memory PNG writer"):
        PngWriter(tmp_path / "x.png", _meta(4, "uint16", rows=2**15, cols=2**15))
    with pytest.raises(WriteError, match="output folder .* does not exist"):
        PngWriter(tmp_path / "no" / "x.png", _meta(1, "uint8"))
    (tmp_path / "x.png").write_bytes(b"old")
    with pytest.raises(WriteError, match="is not a .png file written by zssr"):  # output rule
        PngWriter(tmp_path / "x.png", _meta(1, "uint8"), overwrite=True)
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\nold")  # an earlier PNG output
    with pytest.raises(WriteError, match="already exists; delete it or pass overwrite=True"):
        PngWriter(tmp_path / "x.png", _meta(1, "uint8"))
    writer = PngWriter(tmp_path / "x.png", _meta(1, "uint8"), overwrite=True)
    with pytest.raises(ValueError, match=r"does not fit window .* expected \(bands, rows, cols\)"):
        writer.write(np.zeros((2, 4, 4)), Window(0, 0, 4, 4))
    with pytest.raises(ValueError, match="is not inside the 37 x 53 output"):
        writer.write(np.zeros((1, 4, 4)), Window(50, 0, 4, 4))
    with pytest.raises(ValueError, match="mask shape"):
        writer.write(np.zeros((4, 4)), Window(0, 0, 4, 4), mask=np.ones((3, 3), bool))
    writer.commit()
    assert PlainReader(tmp_path / "x.png").meta.shape == (1, 37, 53)
    with pytest.raises(WriteError, match="already committed or aborted"):
        writer.write(np.zeros((1, 4, 4)), Window(0, 0, 4, 4))
    with pytest.raises(WriteError, match="already committed or aborted"):
        writer.commit()


def test_png_encode_failure_is_write_error(tmp_path: Path, monkeypatch) -> None:
    writer = PngWriter(tmp_path / "x.png", _meta(1, "uint8"))
    monkeypatch.setattr(plain.rasterio, "open", lambda *a, **k: (_ for _ in ()).throw(
        OSError("no space left")))
    with pytest.raises(WriteError, match="cannot write the PNG: no space left"):
        writer.commit()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("scale", "size"), [(2, (74, 106)), (1.5, (56, 80)), ((3, 1), (111, 53))])
def test_scale_plain_metadata(scale, size) -> None:
    scaled = scale_plain_metadata(_meta(3, "uint8"), scale)
    assert (scaled.rows, scaled.cols) == size and scaled.band_names == ("R", "G", "B")


def test_scale_rejects_bad_factors() -> None:
    with pytest.raises(ValueError, match=r"^scale must be >= 1 \(a super-resolution factor\), "
                                         r"got 0$"):
        scale_plain_metadata(_meta(3, "uint8"), 0)
