"""Job specs and ``zssr batch``: idempotence by content + config hash, the lock, examples."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from rasterio.windows import Window

from io_adapters.detect import open_reader
from pipeline.cli.main import main
from pipeline.errors import EXIT, LockedError, UsageError
from workflows.batch import (
    LOCK_FILE,
    STATE_FILE,
    BatchLock,
    content_hash,
    run_job,
    run_job_file,
)
from workflows.jobspec import JOB_KEYS, job_from_dict, load_job

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
EXAMPLES = ROOT / "workflows" / "examples"
TINY = {"train.max_iters": 5, "net.depth": 3, "net.width": 8, "infer.back_projection_iters": 1}
LANDSAT = DATA / "io" / "geotiff" / "landsat_64x80.tif"


def _crop(dst: Path, window: Window) -> None:
    """A window of the real Landsat fixture as its own GeoTIFF (CRS, transform, nodata kept)."""
    with rasterio.open(LANDSAT) as ds:
        prof = ds.profile.copy()
        prof.update(width=int(window.width), height=int(window.height),
                    transform=ds.transform @ Affine.translation(window.col_off, window.row_off),
                    blockxsize=16, blockysize=16)
        with rasterio.open(dst, "w", **prof) as out:
            out.write(ds.read(window=window))


@pytest.fixture
def satellite_job(tmp_path) -> Path:
    shutil.copy(EXAMPLES / "satellite.yaml", tmp_path)
    (tmp_path / "scenes").mkdir()
    _crop(tmp_path / "scenes" / "a.tif", Window(0, 0, 40, 64))
    _crop(tmp_path / "scenes" / "b.tif", Window(40, 0, 40, 64))
    (tmp_path / "scenes" / "notes.txt").write_text("not an image: skipped\n")
    return tmp_path / "satellite.yaml"


@pytest.fixture
def dicom_job(tmp_path) -> Path:
    shutil.copy(EXAMPLES / "dicom.yaml", tmp_path)
    study = tmp_path / "study"
    study.mkdir()
    shutil.copy(DATA / "dicom" / "CT_small.dcm", study)
    shutil.copy(DATA / "dicom" / "series" / "IM_a.dcm", study)
    return tmp_path / "dicom.yaml"


def _run(job: Path, **kw):
    return run_job_file(job, set_overrides=TINY, scheduler="synchronous", **kw)


def test_satellite_example_is_idempotent(satellite_job):
    root = satellite_job.parent
    first = _run(satellite_job)
    assert first.counts == {"processed": 2, "skipped": 0, "failed": 0}
    out = root / "sr" / "a_x2.tif"
    with open_reader(out) as r, open_reader(root / "scenes" / "a.tif") as src:
        assert r.meta.dtype == np.uint16 and r.meta.shape == (4, 128, 80)
        assert r.meta.nodata == 0 and r.meta.geo.crs_wkt == src.meta.geo.crs_wkt
    assert _run(satellite_job).counts == {"processed": 0, "skipped": 2, "failed": 0}
    _crop(root / "scenes" / "c.tif", Window(0, 0, 80, 32))
    third = _run(satellite_job)
    assert third.counts == {"processed": 1, "skipped": 2, "failed": 0}
    assert [Path(p["input"]).name for p in third.processed] == ["c.tif"]
    state = json.loads((root / "sr" / STATE_FILE).read_text())
    assert len(state["inputs"]) == 3


def test_dicom_example_is_idempotent(dicom_job):
    root = dicom_job.parent
    assert _run(dicom_job).counts == {"processed": 2, "skipped": 0, "failed": 0}
    assert _run(dicom_job).counts == {"processed": 0, "skipped": 2, "failed": 0}
    shutil.copy(DATA / "dicom" / "series" / "IM_b.dcm", root / "study")
    again = _run(dicom_job)
    assert again.counts == {"processed": 1, "skipped": 2, "failed": 0}
    with open_reader(root / "sr" / "IM_b_x2.dcm") as r:
        assert r.meta.dtype == np.int16 and r.meta.rows == 256


def test_changed_config_or_content_is_processed_again(satellite_job):
    root = satellite_job.parent
    _run(satellite_job)
    other = run_job_file(satellite_job, set_overrides={**TINY, "seed": 1},
                         scheduler="synchronous")
    assert other.counts == {"processed": 2, "skipped": 0, "failed": 0}
    _crop(root / "scenes" / "a.tif", Window(0, 10, 40, 50))  # new content, same name
    assert _run(satellite_job).counts["processed"] == 2
    (root / "sr" / "b_x2.tif").unlink()  # a lost output is made again
    assert _run(satellite_job).counts == {"processed": 1, "skipped": 1, "failed": 0}
    (root / "sr" / STATE_FILE).write_text("{not json")
    assert _run(satellite_job).counts["processed"] == 2


def test_second_run_while_locked_exits_with_code_9(satellite_job, capsys):
    out = satellite_job.parent / "sr"
    out.mkdir()
    with BatchLock(out):
        with pytest.raises(LockedError, match="another zssr batch is running on this output "
                           r"folder \(pid \d+"):
            _run(satellite_job)
        assert main(["batch", str(satellite_job), "--scheduler", "synchronous"]) == 9
        assert "another zssr batch is running" in capsys.readouterr().err
        assert EXIT["locked"] == 9
    assert (out / LOCK_FILE).read_text() == ""  # released and emptied
    assert _run(satellite_job).counts["processed"] == 2


def test_batch_command_line(satellite_job, capsys):
    args = ["batch", str(satellite_job), "--scheduler", "synchronous"]
    for key, value in TINY.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0
    assert "2 processed, 0 done earlier, 0 failed" in capsys.readouterr().out
    assert main(args) == 0
    assert "0 processed, 2 done earlier" in capsys.readouterr().out
    assert main(["batch", str(satellite_job.parent / "missing.yaml")]) == 2


def test_plain_job_through_the_dask_run(tmp_path):
    """A job without a chain goes through pipeline.runs.run.run_batch (synchronous scheduler)."""
    (tmp_path / "in").mkdir()
    shutil.copy(DATA / "io" / "plain" / "bridge_40x48.png", tmp_path / "in")
    (tmp_path / "list.txt").write_text("# inputs\nin/bridge_40x48.png\n")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"inputs": ["list.txt"], "output": "out", "scale": 2,
                                   "name": "{parent}/{stem}-sr{suffix}", "preset": "fast",
                                   "set": TINY, "scheduler": "synchronous"}))
    first = run_job_file(job)
    assert first.counts == {"processed": 1, "skipped": 0, "failed": 0}
    out = tmp_path / "out" / "in" / "bridge_40x48-sr.png"
    assert out.is_file() and Path(first.processed[0]["output"]) == out
    assert run_job_file(job).counts == {"processed": 0, "skipped": 1, "failed": 0}


def test_failed_and_colliding_inputs_are_reported(tmp_path):
    (tmp_path / "in").mkdir()
    shutil.copy(DATA / "io" / "plain" / "bridge_40x48.png", tmp_path / "in")
    shutil.copy(DATA / "io" / "plain" / "butterfly_48x64.png", tmp_path / "in")
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    spec = job_from_dict({"inputs": ["in/", "missing/*.tif"], "output": "out", "scale": 2,
                          "name": "same{suffix}", "set": TINY, "scheduler": "synchronous"},
                         base=tmp_path)
    summary = run_job(spec)
    assert summary.counts == {"processed": 1, "skipped": 0, "failed": 3}
    errors = " ".join(f["error"] for f in summary.failed)
    assert "pattern matches no file" in errors and "is also the output of" in errors
    assert summary.exit_code == EXIT["batch"]


def test_content_hash_of_files_and_folders(tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(b"x" * 10)
    folder = tmp_path / "series"
    folder.mkdir()
    shutil.copy(a, folder / "1.dcm")
    h1 = content_hash(folder)
    assert content_hash(a) != h1 and len(h1) == 64
    (folder / "1.dcm").rename(folder / "2.dcm")
    assert content_hash(folder) != h1


def test_load_examples_and_template_rules(tmp_path):
    spec = load_job(EXAMPLES / "satellite.yaml")
    assert spec.preset == "sentinel2" and spec.output == EXAMPLES / "sr"
    assert spec.inputs == (str(EXAMPLES / "scenes" / "*.tif"),)
    assert load_job(EXAMPLES / "dicom.yaml").resolve().pipeline.chain.post[0].name \
        == "clip_to_input"
    assert set(JOB_KEYS) == {"inputs", "output", "name", "scale", "preset", "set", "chain",
                             "scheduler", "ground_truth", "output_prefix", "stac_items",
                             "transfer_syntax", "assets", "through_plane", "scale_z",
                             "slice_spacing", "slice_profile"}
    ok = job_from_dict({"inputs": "a.tif", "output": "o", "scale": 2, "name": "x/{stem}{suffix}",
                        "ground_truth": "gt"}, base=tmp_path)
    assert ok.ground_truth == tmp_path / "gt"
    assert dataclasses.replace(ok, set={"seed": 3}).resolve().engine.seed == 3


BASE = {"inputs": ["a/*.tif"], "output": "out", "scale": 2}


@pytest.mark.parametrize("change, match", [
    ({"outputs": "x"}, r"unknown key 'outputs'; allowed keys: inputs, output, scale, name, preset"),
    ({"inputs": None}, r"^job: 'inputs': expected a list, got None$"),
    ({"inputs": []}, r"'inputs' is empty; expected a list of globs, folders or list files"),
    ({"inputs": [1]}, r"^job: 'inputs': expected a string, got 1$"),
    ({"scale": 1}, r"'scale' = 1\.0; expected a number > 1"),
    ({"scale": 65}, r"'scale' = 65\.0; expected a number > 1 \(and <= 64\)"),
    ({"scale": "2"}, r"^job: 'scale': expected a number, got '2'$"),
    ({"scale": True}, r"^job: 'scale': expected a number, got True$"),
    ({"scale": float("inf")}, r"^job: 'scale': expected a finite number, got inf$"),
    ({"output": ""}, r"'output' = ''; expected a path"),
    ({"output": 3}, r"^job: 'output': expected a string, got 3$"),
    ({"set": ["train.max_iters=3"]}, r"^job: 'set': expected a mapping, got \[.*\]$"),
    ({"chain": ["clip"]}, r"^job: 'chain': expected a mapping, got \['clip'\]$"),
    ({"name": 3}, r"^job: 'name': expected a string, got 3$"),
    ({"preset": 3}, r"^job: 'preset': expected a string, got 3$"),
    ({"ground_truth": ""}, r"'ground_truth' = ''; expected a path"),
    ({"name": "../{stem}{suffix}"}, r"gives '../x.tif', which is not inside the output folder"),
    ({"name": "/tmp/{stem}{suffix}"}, r"which is not inside the output folder"),
    ({"name": "{stem}/.."}, r"which is not inside the output folder"),
    ({"name": "{date}{suffix}"}, r"unknown field \{date\}; allowed: \{stem\}, \{name\}"),
    ({"name": "{stem"}, r"name template '\{stem'"),
    ({"transfer_syntax": "jpeg"}, r"^job: 'transfer_syntax' = 'jpeg'; expected one of "
                                  r"explicit-little, rle, jpeg2000-lossless$"),
    ({"transfer_syntax": 3}, r"^job: 'transfer_syntax': expected a string, got 3$"),
])
def test_job_spec_errors(tmp_path, change, match):
    with pytest.raises(UsageError, match=match):
        job_from_dict({**BASE, **change}, base=tmp_path)


@pytest.mark.parametrize("drop", ["inputs", "output", "scale"])
def test_job_spec_missing_keys(tmp_path, drop):
    with pytest.raises(UsageError, match=f"missing key '{drop}'"):
        job_from_dict({k: v for k, v in BASE.items() if k != drop}, base=tmp_path)


def test_job_spec_config_errors_surface_at_load(tmp_path):
    from zssr.config import ConfigError

    with pytest.raises(ConfigError, match="unknown step 'clp'"):
        job_from_dict({**BASE, "chain": {"pre": ["clp"]}}, base=tmp_path)
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        job_from_dict({**BASE, "preset": "nope"}, base=tmp_path)
    with pytest.raises(UsageError, match="expected a mapping of inputs"):
        job_from_dict(["inputs"], base=tmp_path)
    with pytest.raises(UsageError, match="job file .* not found"):
        load_job(tmp_path / "none.yaml")


def test_ground_truth_pairs_only_this_runs_inputs(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "gt").mkdir()
    for name in ("bird", "head"):
        shutil.copy(DATA / "sr" / f"{name}_HR.png", tmp_path / "gt" / f"{name}.png")
    shutil.copy(DATA / "sr" / "bird_SRF_2_LR.png", tmp_path / "in" / "bird.png")
    spec = job_from_dict({"inputs": ["in/"], "output": "out", "scale": 2, "ground_truth": "gt",
                          "set": TINY, "scheduler": "synchronous"}, base=tmp_path)
    first = run_job(spec)
    assert first.counts["processed"] == 1 and first.processed[0]["psnr"] > 36.9  # bicubic 36.84
    shutil.copy(DATA / "sr" / "head_SRF_2_LR.png", tmp_path / "in" / "head.png")
    second = run_job(spec)  # bird is done: its reference must not count as unpaired
    assert second.counts == {"processed": 1, "skipped": 1, "failed": 0}
    assert Path(second.processed[0]["input"]).name == "head.png"
