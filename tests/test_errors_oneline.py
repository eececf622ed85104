"""Bad input and bad flags: one line on stderr naming the file (or flag) and the problem,
the exit code of the problem's class (pipeline/errors.py), and, where the input allows,
before any training (issue 20, item 7: each case once escaped as a traceback, exit 10,
or a wrong class after the whole computation)."""

from __future__ import annotations

import errno
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipeline.cli.main import main
from pipeline.errors import EXIT, exit_code, one_line

DATA = Path(__file__).resolve().parent / "data"
SMALL = DATA / "io" / "plain" / "bridge_40x48.png"
TINY = ["--set", "train.max_iters=2", "--set", "train.crop_size=16", "--set", "net.depth=3",
        "--set", "net.width=4", "--set", "infer.back_projection_iters=0", "-q"]


@pytest.fixture
def trained(monkeypatch) -> list[str]:
    """Records every training call (the engine's ``train`` as the pipeline calls it)."""
    import pipeline.image.job as job_mod

    calls: list[str] = []
    real = job_mod.train

    def spy(model, source, **kw):
        calls.append(str(source.reader.meta.path))
        return real(model, source, **kw)

    monkeypatch.setattr(job_mod, "train", spy)
    return calls


def run_cli(capsys, *argv: str | Path) -> tuple[int, str, float]:
    """``(exit code, the stderr line, seconds)``; fails unless stderr is exactly one line."""
    t0 = time.perf_counter()
    code = main([str(a) for a in argv])
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0] and "internal error" not in err[0], err[0]
    return code, err[0], seconds


# ------------------------------------------------------------------------- flags, configs


def test_scale_that_is_no_small_ratio_is_a_usage_error_before_training(tmp_path, capsys,
                                                                        trained):
    code, err, _ = run_cli(capsys, "upscale", SMALL, tmp_path / "o.png", "--scale", "1.3333",
                           *TINY)
    assert code == EXIT["usage"] and "1.3333" in err and "4/3" in err
    assert trained == [] and list(tmp_path.iterdir()) == []


def test_scale_that_is_no_small_ratio_fails_a_run_as_usage(tmp_path, capsys, trained):
    code, err, _ = run_cli(capsys, "run", SMALL, "--out", tmp_path / "run", "--scale",
                           "1.3333", "--scheduler", "synchronous", *TINY)
    assert code == EXIT["usage"] and "1.3333" in err
    assert trained == []


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf"])
def test_non_finite_override_is_a_usage_error(tmp_path, capsys, trained, value):
    code, err, _ = run_cli(capsys, "upscale", SMALL, tmp_path / "o.png", "--scale", "2", *TINY,
                           "--set", f"train.noise_std={value}")
    assert code == EXIT["usage"] and "train.noise_std" in err
    assert trained == []


def test_latin1_config_file_is_a_usage_error_naming_the_file(tmp_path, capsys, trained):
    cfg = tmp_path / "café.yaml"
    cfg.write_bytes("train:\n  max_iters: 2  # café\n".encode("latin-1"))
    code, err, _ = run_cli(capsys, "upscale", SMALL, tmp_path / "o.png", "--scale", "2",
                           "--config", cfg, *TINY)
    assert code == EXIT["usage"] and "café.yaml" in err and "UTF-8" in err
    assert trained == []


def test_unknown_scheduler_scheme_is_refused_at_once(tmp_path, capsys, trained):
    code, err, seconds = run_cli(capsys, "run", SMALL, "--out", tmp_path / "run", "--scale",
                                 "2", "--scheduler", "ftp://x", *TINY)
    assert code == EXIT["usage"] and "ftp://x" in err and "tcp://" in err
    assert seconds < 5  # was: a 20 s connect timeout, then a 40 s hang closing the client
    assert trained == [] and not (tmp_path / "run").exists()


# -------------------------------------------------------------------------------- outputs


def test_eperm_is_a_write_error():
    assert exit_code(PermissionError(errno.EPERM, "Operation not permitted")) == EXIT["write"]


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs sysfs (EPERM on mkdir)")
def test_run_folder_that_cannot_be_created_eperm_is_exit_7(capsys, trained):
    code, err, _ = run_cli(capsys, "run", SMALL, "--out", "/sys/kernel/zssr-test-run",
                           "--scale", "2", "--scheduler", "synchronous", *TINY)
    assert code == EXIT["write"] and "/sys/kernel/zssr-test-run" in err
    assert trained == []


def test_history_that_is_a_folder_fails_before_training(tmp_path, capsys, trained):
    hist = tmp_path / "hist"
    hist.mkdir()
    (hist / "keep.txt").write_text("mine")
    code, err, _ = run_cli(capsys, "upscale", SMALL, tmp_path / "o.png", "--scale", "2", *TINY,
                           "--history", hist)
    assert code in (EXIT["usage"], EXIT["write"]) and "hist" in err
    assert trained == [] and (hist / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(("name", "problem"), [
    ("{stem}\\0x.png", "NUL"), ("{stem}" + "a" * 300 + ".png", "at most 255")])
def test_batch_output_name_that_no_file_system_takes_fails_before_processing(
        tmp_path, capsys, trained, name, problem):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "b.png").write_bytes(SMALL.read_bytes())
    job = tmp_path / "job.yaml"
    job.write_text(f'inputs: [{tmp_path / "in" / "b.png"}]\noutput: {tmp_path / "out"}\n'
                   f'name: "{name}"\nscale: 2\nscheduler: synchronous\n'
                   "set: {train.max_iters: 2, net.depth: 3, net.width: 4}\n")
    code, err, _ = run_cli(capsys, "batch", job)
    assert code == EXIT["usage"] and "job.yaml" in err and problem in err
    assert trained == []


# --------------------------------------------------------------------------------- inputs


def test_float_rgba_input_is_super_resolved_with_its_alpha(tmp_path, capsys):
    """Was: exit 10 after training (an integer-only alpha path)."""
    import rasterio

    src = tmp_path / "rgba.tif"
    pixels = np.random.default_rng(0).random((4, 24, 28)).astype(np.float32)
    pixels[3] = 1.0
    pixels[3, :4, :4] = 0.0  # a transparent corner
    with rasterio.open(src, "w", driver="GTiff", width=28, height=24, count=4,
                       dtype="float32", photometric="RGB", alpha="YES") as ds:
        ds.write(pixels)
    out = tmp_path / "o.tif"
    assert main(["upscale", str(src), str(out), "--scale", "2", *TINY]) == 0
    with rasterio.open(out) as ds:
        alpha = ds.read(4)
        assert ds.dtypes[3] == "float32" and alpha.shape == (48, 56)
    assert alpha.min() >= 0 and alpha[:6, :6].max() == 0 and alpha[12:, 12:].min() > 0.99


def _zarr_input(tmp_path: Path) -> Path:
    out = tmp_path / "in.zarr"
    assert main(["upscale", str(SMALL), str(out), "--scale", "2", *TINY]) == 0
    return out


@pytest.mark.parametrize(("key", "value"), [
    ("nodata", "abc"), ("medical", {"modality": "CT"}), ("extra", [1, 2]),
    ("medical", {"modality": "CT", "photometric": "MONOCHROME2", "pixel_spacing": [0.5],
                 "slice_thickness": None, "orientation": None})])
def test_malformed_zarr_attributes_are_corrupt_not_internal(tmp_path, capsys, trained, key,
                                                            value):
    import zarr

    store = _zarr_input(tmp_path)
    trained.clear()
    group = zarr.open_group(store, mode="r+")
    ours = dict(group.attrs["zssr"])
    ours[key] = value
    group.attrs["zssr"] = ours
    code, err, _ = run_cli(capsys, "upscale", store, tmp_path / "o.png", "--scale", "2", *TINY)
    assert code == EXIT["corrupt"] and "in.zarr: malformed Zarr attributes" in err
    assert trained == []


def test_malformed_geotransform_in_zarr_is_corrupt(tmp_path):
    import zarr

    from io_adapters.detect import open_reader
    from io_adapters.errors import CorruptFileError
    from io_adapters.zarr_store import ZarrWriter

    reader = open_reader(DATA / "io" / "geotiff" / "rgb_byte_96x128.tif")
    store = tmp_path / "geo.zarr"
    with ZarrWriter(store, reader.meta) as w:
        w.write(reader.read(), None)
    ref = zarr.open_array(store, path="spatial_ref", mode="r+")
    ref.update_attributes({"GeoTransform": "1 2 3"})
    zarr.consolidate_metadata(store)  # the reader reads the consolidated copy
    with pytest.raises(CorruptFileError, match=r"geo\.zarr: malformed Zarr attributes: "
                                               r"spatial_ref\.GeoTransform"):
        open_reader(store)


def _ct(tmp_path: Path, **changes: object) -> Path:
    ds = pydicom.dcmread(DATA / "dicom" / "CT_small.dcm")
    for key, value in changes.items():
        setattr(ds, key, value)
    path = tmp_path / "ct.dcm"
    ds.save_as(path)
    return path


def test_one_value_pixel_spacing_is_invalid_data_before_training(tmp_path, capsys, trained):
    src = _ct(tmp_path, PixelSpacing=[0.5])
    code, err, _ = run_cli(capsys, "upscale", src, tmp_path / "o.dcm", "--scale", "2", *TINY)
    assert code == EXIT["data"] and "ct.dcm: PixelSpacing '0.5' is not two positive" in err
    assert trained == [] and not (tmp_path / "o.dcm").exists()


def test_zero_orientation_is_named_not_reported_as_a_duplicate(tmp_path, capsys, trained):
    import shutil

    series = tmp_path / "series"
    shutil.copytree(DATA / "dicom" / "series", series)
    for path in series.iterdir():
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = [0, 0, 0, 0, 0, 0]
        ds.save_as(path)
    code, err, _ = run_cli(capsys, "upscale", series, tmp_path / "out", "--scale", "2", *TINY)
    assert code == EXIT["data"] and "ImageOrientationPatient" in err
    assert "orthogonal unit" in err and "duplicate" not in err
    assert trained == []


def test_newline_in_a_file_name_stays_on_the_one_error_line(tmp_path, capsys, trained):
    src = tmp_path / "two\nlines.png"
    src.write_bytes(SMALL.read_bytes())
    code, err, _ = run_cli(capsys, "upscale", src, tmp_path / "out\nx.zzz", "--scale", "2",
                           *TINY)
    assert code == EXIT["format"] and "out\\nx.zzz: cannot write .zzz outputs" in err
    assert trained == []


def test_one_line_escapes_every_control_character():
    assert one_line("a\nb\rc\x00d\te\x7f é") == "a\\nb\\rc\\x00d\\te\\x7f é"


def test_dicom_without_sop_instance_uid_is_refused_before_training(tmp_path, capsys, trained):
    """A derived DICOM references its source by SOPInstanceUID: a source without one is
    refused when the writer is planned (it failed after the compute with an
    AttributeError text), and NIfTI is named as the way out."""
    ds = pydicom.dcmread(DATA / "dicom" / "CT_small.dcm")
    del ds.SOPInstanceUID
    src = tmp_path / "nouid.dcm"
    ds.save_as(src)
    before = src.read_bytes()
    code, err, _ = run_cli(capsys, "upscale", src, tmp_path / "out.dcm", "--scale", "2", *TINY)
    assert code == EXIT["data"], err
    assert err.startswith(f"zssr upscale: error: {src}: no SOPInstanceUID") and ".nii.gz" in err
    assert trained == [] and sorted(p.name for p in tmp_path.iterdir()) == ["nouid.dcm"]
    assert src.read_bytes() == before
