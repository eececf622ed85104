"""Metadata kept or refused, never silently lost (issue 20, item 8).

* A palette GeoTIFF is refused (super-resolving colour-map indices is
  meaningless) with the ``gdal_translate -expand`` line; a palette PNG is
  expanded to RGB with a log line, its pixels equal to Pillow's own expansion.
* Ground control points survive ``zssr upscale``: the output TIFF holds them
  with pixel/line positions times the scale (computed here) and the same map
  coordinates and CRS; a PNG output, which cannot hold them, is refused.
* EXIF orientation is applied on both plain decode paths (Pillow, GDAL for
  16 bits): the pixels equal ``PIL.ImageOps.exif_transpose`` -- an
  independent implementation -- for every orientation 1-8.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image, ImageOps
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS

from io_adapters.plain import PlainReader
from pipeline.cli.main import main

TINY = ["--set", "train.max_iters=2", "--set", "net.depth=3", "--set", "net.width=4",
        "--set", "infer.back_projection_iters=0", "--set", "train.crop_size=16", "-q"]
RNG = np.random.default_rng(7)


def test_palette_geotiff_is_refused_with_the_fix(tmp_path, capsys):
    src = tmp_path / "classes.tif"
    with rasterio.open(src, "w", driver="GTiff", width=32, height=24, count=1, dtype="uint8",
                       crs="EPSG:32633", transform=rasterio.Affine(30, 0, 0, 0, -30, 0)) as ds:
        ds.write(RNG.integers(0, 4, (1, 24, 32), np.uint8))
        ds.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 0, 0, 255), 2: (0, 255, 0, 255),
                              3: (0, 0, 255, 255)})
    out = tmp_path / "sr.tif"
    assert main(["upscale", str(src), str(out), "--scale", "2", *TINY]) == 6
    err = capsys.readouterr().err
    assert "classes.tif: band 1 is palette-indexed" in err
    assert "gdal_translate -expand rgba classes.tif" in err
    assert not out.exists()


def test_palette_png_is_expanded_with_a_log_line(tmp_path, caplog):
    indices = RNG.integers(0, 3, (10, 14), np.uint8)
    im = Image.frombytes("P", (14, 10), indices.tobytes())
    im.putpalette([10, 20, 30, 200, 100, 0, 0, 90, 250] + [0] * (256 * 3 - 9))
    src = tmp_path / "pal.png"
    im.save(src)
    caplog.set_level(logging.INFO, logger="io_adapters.plain")
    reader = PlainReader(src)
    got = reader.read()
    expected = np.asarray(Image.open(src).convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(got, expected)
    assert reader.meta.band_names == ("R", "G", "B")
    assert "palette image expanded to RGB" in caplog.text


def _gcp_tiff(path: Path) -> list[GroundControlPoint]:
    gcps = [GroundControlPoint(row=0, col=0, x=500000.0, y=4000000.0, z=0.0),
            GroundControlPoint(row=40, col=0, x=500000.0, y=3998800.0, z=5.0),
            GroundControlPoint(row=0, col=48, x=501440.0, y=4000000.0, z=0.0),
            GroundControlPoint(row=20.5, col=24.25, x=500727.5, y=3999385.0, z=12.0)]
    with rasterio.open(path, "w", driver="GTiff", width=48, height=40, count=1,
                       dtype="uint8") as ds:
        ds.write(RNG.integers(0, 255, (1, 40, 48), np.uint8))
        ds.gcps = (gcps, CRS.from_epsg(32633))
    return gcps


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_ground_control_points_survive_scaled(tmp_path, capsys):
    src, out = tmp_path / "gcp.tif", tmp_path / "sr.tif"
    planted = _gcp_tiff(src)
    assert main(["upscale", str(src), str(out), "--scale", "2", *TINY]) == 0
    with rasterio.open(out) as ds:
        got, crs = ds.gcps
        assert (ds.height, ds.width) == (80, 96)
    assert crs == CRS.from_epsg(32633)
    assert [(g.row, g.col, g.x, g.y, g.z) for g in got] == [
        (2 * p.row, 2 * p.col, p.x, p.y, p.z) for p in planted]
    png = tmp_path / "sr.png"
    assert main(["upscale", str(src), str(png), "--scale", "2", *TINY]) == 6
    assert "PNG cannot hold the input's 4 ground control points" in capsys.readouterr().err
    assert not png.exists()


def _oriented(path: Path, pixels: np.ndarray, orientation: int) -> Path:
    im = Image.fromarray(pixels)  # uint16 2-D: mode I;16
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(path, exif=exif)
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(tmp_path, orientation):
    src = _oriented(tmp_path / "o.png", RNG.integers(0, 255, (6, 10, 3), np.uint8),
                    orientation)
    reader = PlainReader(src)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(src))).transpose(2, 0, 1)
    assert (reader.meta.rows, reader.meta.cols) == expected.shape[1:]
    np.testing.assert_array_equal(reader.read(), expected)
    assert reader.meta.extra.get("exif_orientation", 1) == orientation


@pytest.mark.parametrize("orientation", [6, 7])
def test_exif_orientation_on_the_16_bit_path(tmp_path, orientation):
    pixels = RNG.integers(0, 65535, (6, 10), np.uint16)
    src = _oriented(tmp_path / "o16.png", pixels, orientation)
    reader = PlainReader(src)
    assert reader.meta.dtype == np.uint16  # decoded by GDAL, not Pillow
    expected = np.asarray(ImageOps.exif_transpose(Image.open(src))).astype(np.uint16)
    np.testing.assert_array_equal(reader.read()[0], expected)


def test_cli_output_has_the_viewer_orientation(tmp_path):
    src = _oriented(tmp_path / "o.png", RNG.integers(0, 255, (12, 20), np.uint8), 6)
    out = tmp_path / "sr.png"
    assert main(["upscale", str(src), str(out), "--scale", "2", *TINY]) == 0
    with Image.open(out) as im:
        assert im.size == (24, 40)  # (width, height): rotated as a viewer shows the input
