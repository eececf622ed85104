"""One test per raise site added for the bad-input corpus (tests/corpus): each refuses a
bad input early, with our own error class and a message naming the file and the problem."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from io_adapters.detect import open_reader
from io_adapters.errors import (
    CorruptFileError,
    InputNotFoundError,
    InvalidDataError,
    WriteError,
)

DATA = Path(__file__).resolve().parent / "data"
TINY = {"train": {"max_iters": 2, "crop_size": 16}, "net": {"depth": 3, "width": 4},
        "infer": {"back_projection_iters": 0}}


def test_fifo_input_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(InputNotFoundError, match="pipe.png: not a regular file"):
        open_reader(fifo)


def test_fifo_in_a_batch_is_a_failed_item(tmp_path):
    from pipeline.runs.inputs import expand_inputs

    os.mkfifo(tmp_path / "pipe.tif")
    (item,) = expand_inputs([tmp_path / "pipe.tif"])
    assert item.error_class == "InputNotFoundError" and "not a regular file" in item.error


def test_png_with_a_damaged_header_is_corrupt_not_unsupported(tmp_path):
    src = (DATA / "io" / "plain" / "bridge_40x48.png").read_bytes()
    bad = tmp_path / "cut.png"
    bad.write_bytes(src[:40])
    with pytest.raises(CorruptFileError, match="cut.png: damaged image header"):
        open_reader(bad)


def test_png_with_a_broken_chunk_is_corrupt(tmp_path):
    src = (DATA / "io" / "plain" / "bridge_40x48.png").read_bytes()
    bad = tmp_path / "chunk.png"
    at = int(len(src) * 0.96875)
    bad.write_bytes(src[:at] + b"\x00" + src[at:])  # Pillow raises SyntaxError here
    with pytest.raises(CorruptFileError, match="chunk.png: cannot"):
        open_reader(bad).read()


def test_tiff_cut_inside_its_tags_is_corrupt(tmp_path):
    src = DATA / "io" / "geotiff" / "rgb_byte_96x128.tif"
    bad = tmp_path / "cut.tif"
    bad.write_bytes(src.read_bytes()[:-100])  # GDAL would open it, silently without CRS
    with pytest.raises(CorruptFileError, match="cut.tif: truncated or damaged TIFF"):
        open_reader(bad)


def _edit_dicom(dst: Path, **attrs) -> Path:
    import pydicom

    ds = pydicom.dcmread(DATA / "dicom" / "CT_small.dcm")
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def test_dicom_header_value_of_wrong_multiplicity_is_corrupt(tmp_path):
    bad = _edit_dicom(tmp_path / "multi.dcm", BitsAllocated=[16, 16])
    with pytest.raises(CorruptFileError, match="multi.dcm: damaged DICOM header value"):
        open_reader(bad)


def test_dicom_header_with_an_unknown_vr_is_corrupt(tmp_path):
    data = bytearray((DATA / "dicom" / "JPEGLSNearLossless_08.dcm").read_bytes())
    at = data.index(b"\x28\x00\x10\x00US")  # (0028,0010) Rows, explicit VR 'US'
    data[at + 4:at + 6] = b"WS"
    bad = tmp_path / "vr.dcm"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="vr.dcm: damaged DICOM header"):
        open_reader(bad)


def test_damaged_rle_frame_is_corrupt_without_a_rust_panic(tmp_path):
    import pydicom

    ds = pydicom.dcmread(DATA / "dicom" / "MR_small_RLE.dcm")
    data = bytearray(ds.PixelData)
    data[20:24] = (9).to_bytes(4, "little")  # the RLE header's segment count
    ds.PixelData = bytes(data)
    ds.save_as(tmp_path / "rle.dcm", enforce_file_format=True)
    with pytest.raises(CorruptFileError, match="rle.dcm: frame 0 cannot be decoded"):
        open_reader(tmp_path / "rle.dcm").read()


def _job(tmp_path: Path, src: Path, out: str = "sr.tif", **kw):
    from pipeline.image.job import ImageJob
    from zssr.config import config_from_dict

    return ImageJob(input=src, output=tmp_path / out, scale=2.0,
                    config=config_from_dict(TINY), **kw)


def test_all_nodata_is_invalid_data_naming_the_file(tmp_path):
    import rasterio

    from pipeline.image.upscale import upscale_file

    src = tmp_path / "empty.tif"
    with rasterio.open(src, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint16",
                       nodata=0, crs="EPSG:32618",
                       transform=rasterio.Affine(30, 0, 0, 0, -30, 0)) as ds:
        ds.write(np.zeros((1, 8, 8), np.uint16))
    with pytest.raises(InvalidDataError, match="empty.tif: no valid pixels"):
        upscale_file(_job(tmp_path, src))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.tif"]


def test_header_declaring_too_many_pixels_is_refused(tmp_path):
    from io_adapters.base import Metadata
    from io_adapters.detect import DEFAULT_MAX_PIXELS
    from pipeline.image.job import check_size

    side = int(DEFAULT_MAX_PIXELS ** 0.5) + 2
    meta = Metadata(path=Path("huge.tif"), format="geotiff", bands=1, rows=side, cols=side,
                    dtype=np.dtype("uint8"))
    with pytest.raises(InvalidDataError, match=f"huge.tif: declares {side} x {side} pixels"):
        check_size(meta, _job(tmp_path, Path("huge.tif")))


def test_bad_output_fails_before_training(tmp_path, monkeypatch):
    import pipeline.image.upscale as job_mod

    def no_training(*a, **k):
        raise AssertionError("trained although the output was bad")

    monkeypatch.setattr(job_mod, "train_stage", no_training)
    src = tmp_path / "in.png"
    shutil.copyfile(DATA / "io" / "plain" / "bridge_40x48.png", src)
    (tmp_path / "sr.png").write_bytes(b"keep me")
    with pytest.raises(WriteError, match="sr.png: output already exists"):
        job_mod.upscale_file(_job(tmp_path, src, out="sr.png"))
    assert (tmp_path / "sr.png").read_bytes() == b"keep me"
    with pytest.raises(InvalidDataError, match="float.png: PNG stores 8- or 16-bit"):
        job_mod.upscale_file(_float_job(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.tif", "in.png", "sr.png"]


def _float_job(tmp_path: Path):
    import rasterio

    src = tmp_path / "f.tif"
    with rasterio.open(src, "w", driver="GTiff", width=8, height=8, count=1, dtype="float32",
                       crs="EPSG:32618", transform=rasterio.Affine(30, 0, 0, 0, -30, 0)) as ds:
        ds.write(np.ones((1, 8, 8), np.float32))
    return _job(tmp_path, src, out="float.png")


@pytest.mark.parametrize("device, problem", [
    ("tpu", "expected cpu, cuda, cuda:N or mps"),
    ("cuda:99", "CUDA device"),
    ("meta", "expected cpu, cuda, cuda:N or mps"),
])
def test_parse_device(device, problem):
    from pipeline.cli.cmd_upscale import parse_device
    from pipeline.errors import UsageError

    assert parse_device("cpu") == "cpu"
    with pytest.raises(UsageError, match=f"--device '{device}': .*{problem}"):
        parse_device(device)


def test_kernel_path_that_is_a_folder(tmp_path):
    from pipeline.errors import InputError
    from pipeline.image.kernel_io import load_kernel

    with pytest.raises(InputError, match="is a folder, not a file"):
        load_kernel(tmp_path)


def test_config_file_errors_name_the_file(tmp_path):
    from configs import resolve_config
    from zssr.config import ConfigError

    cfg = tmp_path / "job.yaml"
    cfg.write_text("trian:\n  max_iters: 3\n")
    with pytest.raises(ConfigError, match="job.yaml: unknown config key 'trian'"):
        resolve_config(config_file=cfg)


def test_override_with_broken_yaml_is_a_config_error():
    from zssr.config import ConfigError, parse_override

    with pytest.raises(ConfigError, match="train.max_iters=\\[1,'?: not valid YAML"):
        parse_override("train.max_iters=[1,")
