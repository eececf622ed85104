"""Tiny files declaring huge rasters are refused in seconds, before a pixel is read.

Acceptance (issue 20): a sparse TIFF, a Zarr and a PNG each declaring
100 000^2 are refused within seconds, the message naming the limit and the
flag.  The files are generated here: the TIFF by GDAL with ``SPARSE_OK`` (no
tile written), the Zarr by ``zarr`` with no chunk written, the PNGs as a bare
IHDR with big dimensions and a minimal IDAT (CRCs computed here).  Also: the
plain-image decoders' bomb guard on both paths (Pillow, GDAL for 16 bits)
holds even with ``--max-pixels`` raised, the flag raises/lowers the limit,
the tile count is bounded and a large job logs its tile count and estimate.
"""

from __future__ import annotations

import logging
import math
import signal
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr
from PIL import Image

from io_adapters.base import Metadata
from io_adapters.errors import InvalidDataError
from pipeline.cli.main import main
from pipeline.image.budget import MAX_TILES, check_budget
from zssr.config import ZSSRConfig

SIDE = 100_000
TINY = ["--set", "train.max_iters=2", "--set", "net.depth=3", "--set", "net.width=4",
        "--set", "infer.back_projection_iters=0", "--set", "train.crop_size=16", "-q"]


@pytest.fixture(autouse=True)
def _deadline():
    """A guard that stops working must fail the test, not run it for days."""
    def stop(signum, frame):
        raise TimeoutError("still running after 120 s: the size guard did not refuse")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _png(path: Path, side: int, *, bit_depth: int) -> Path:
    """A gray PNG whose IHDR declares ``side`` x ``side``; one tiny IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", side, side, bit_depth, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


def _sparse_tiff(path: Path, side: int) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=1,
                       dtype="uint8", tiled=True, blockxsize=256, blockysize=256,
                       SPARSE_OK=True, crs="EPSG:32633",
                       transform=rasterio.Affine(30, 0, 0, 0, -30, 0)):
        pass  # no tile is written
    return path


def _zarr(path: Path, side: int) -> Path:
    zarr.create_array(store=str(path), shape=(side, side), chunks=(1024, 1024), dtype="uint8",
                      dimension_names=("y", "x"))  # metadata only, no chunk
    return path


def _refused(capsys, args: list[str]) -> str:
    start = time.monotonic()
    code = main(args)
    seconds = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 6, err
    assert seconds < 10, seconds  # a header check, not a read
    return err


@pytest.mark.parametrize("make", ["tiff", "zarr", "png16", "png8"])
def test_tiny_file_declaring_100k_squared_is_refused(tmp_path, capsys, make):
    src = {"tiff": lambda: _sparse_tiff(tmp_path / "sparse.tif", SIDE),
           "zarr": lambda: _zarr(tmp_path / "big.zarr", SIDE),
           "png16": lambda: _png(tmp_path / "big16.png", SIDE, bit_depth=16),
           "png8": lambda: _png(tmp_path / "big8.png", SIDE, bit_depth=8)}[make]()
    size = sum(p.stat().st_size for p in [src, *src.rglob("*")] if p.is_file())
    assert size < 3_000_000  # tiny on disk ...
    out = tmp_path / "out.tif"
    err = _refused(capsys, ["upscale", str(src), str(out), "--scale", "2", *TINY])
    assert str(src) in err and "--max-pixels" in err  # ... refused, the flag named
    limit = "4e+08" if make in ("tiff", "zarr") else "1.79e+08"
    declared = "10000000000 pixels" if make == "png8" else "100000 x 100000"  # Pillow's words
    assert limit in err and declared in err
    assert not out.exists()


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_plain_decoders_guard_bombs_even_with_the_limit_raised(tmp_path, capsys, bit_depth):
    """Both plain decode paths (Pillow; GDAL for 16 bits) keep Pillow's bomb limit."""
    src = _png(tmp_path / "bomb.png", 40_000, bit_depth=bit_depth)
    err = _refused(capsys, ["upscale", str(src), str(tmp_path / "o.png"), "--scale", "2",
                            "--max-pixels", "1e12", *TINY])
    assert "PIL.Image.MAX_IMAGE_PIXELS" in err and "too large to decode whole" in err


def test_max_pixels_flag_moves_the_limit(tmp_path, capsys):
    src = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48), np.uint8)).save(src)
    err = _refused(capsys, ["upscale", str(src), str(tmp_path / "a.png"), "--scale", "2",
                            "--max-pixels", "1000", *TINY])
    assert "declares 40 x 48 pixels" in err and "limit of 1e+03 pixels (--max-pixels)" in err
    assert main(["upscale", str(src), str(tmp_path / "b.png"), "--scale", "2", *TINY]) == 0
    _sparse_tiff(tmp_path / "mid.tif", 3000)
    err = _refused(capsys, ["upscale", str(tmp_path / "mid.tif"), str(tmp_path / "c.tif"),
                            "--scale", "2", "--max-pixels", "8e6", *TINY])
    assert "3000 x 3000" in err and "8e+06" in err


def _meta(side: int, frames: int = 1) -> Metadata:
    return Metadata(path=Path("scene.tif"), format="geotiff", bands=1, rows=side, cols=side,
                    dtype=np.dtype("uint16"), frames=frames)


def test_landsat_scene_passes_and_logs_its_estimate(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.image.budget")
    est = check_budget(_meta(16_000), config=ZSSRConfig(), scale=2.0, tile=256, bands=1)
    tiles = math.ceil(16_000 / 256) ** 2  # 63 x 63, computed here
    assert est.tiles == tiles == 3969 and est.hr_pixels == 4 * 16_000 ** 2
    line = " ".join(r.getMessage() for r in caplog.records)
    assert f"-> {tiles} tiles of 256 px" in line and "estimated" in line
    assert max(r.levelno for r in caplog.records) == logging.WARNING  # shown without -v
    assert est.infer_seconds > 3600  # 1e9 HR px at ~0.05 MP/s: hours, said up front


def test_tile_count_and_frames_are_bounded():
    with pytest.raises(InvalidDataError, match=rf"tiles of 8 px, more than the limit of "
                       rf"{MAX_TILES}; use a larger --tile"):
        check_budget(_meta(20_000), config=ZSSRConfig(), scale=2.0, tile=8, bands=1)
    with pytest.raises(InvalidDataError, match=r"declares 8000 x 8000 pixels x 10 frames"):
        check_budget(_meta(8000, frames=10), config=ZSSRConfig(), scale=2.0, tile=256, bands=1)


def test_zssr_run_takes_the_flag_too(tmp_path, capsys):
    src = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 48), np.uint8)).save(src)
    code = main(["run", str(src), "--out", str(tmp_path / "run"), "--scale", "2",
                 "--scheduler", "synchronous", "--max-pixels", "1000", *TINY[:-1]])
    out = capsys.readouterr()
    assert code == 1, out.err  # the image failed, refused on its header
    assert "declares 40 x 48 pixels" in out.out
    outputs = tmp_path / "run" / "outputs"
    assert not outputs.exists() or not list(outputs.iterdir())
