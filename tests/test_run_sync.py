"""``zssr run`` end to end on the synchronous scheduler, with tiny configs.

One batch (GeoTIFF + DICOM + PNG + a corrupt PNG + a missing file) runs once
per module and is run again to check resume; the other tests use one small
image each.  Inputs are the real crops in tests/data (see tests/data/README.md).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, require_tool

from io_adapters.detect import open_reader
from pipeline.cli.main import main
from pipeline.image.job import ImageJob
from pipeline.image.upscale import upscale_file

TINY = ["--set", "train.max_iters=5", "--set", "net.depth=3", "--set", "net.width=8",
        "--set", "infer.back_projection_iters=1", "--tile", "32"]
PNG = DATA / "io" / "plain" / "butterfly_48x64.png"
TIF = DATA / "io" / "geotiff" / "landsat_64x80.tif"
DCM = DATA / "dicom" / "CT_small.dcm"
MR = DATA / "dicom" / "MR_small.dcm"  # 64 x 64: 4 tiles of 32
BIRD = DATA / "tiles" / "bird_crop_122x61.png"  # 4 x 2 tiles of 32


def run(*args: str | Path) -> int:
    return main(["run", *map(str, args), "--scheduler", "synchronous", "-q", *TINY])


def pixels(path: Path) -> np.ndarray:
    with open_reader(path) as r:
        return np.stack([r.read(frame=f) for f in range(r.meta.frames)])


def manifest(root: Path) -> list[dict]:
    return [json.loads(x) for x in (root / "manifest.jsonl").read_text().splitlines()]


def summary(root: Path) -> dict:
    return json.loads((root / "report.json").read_text())["summary"]["counts"]


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("batch")
    corrupt = tmp / "corrupt.png"
    corrupt.write_bytes(PNG.read_bytes()[:300])  # a valid header, truncated pixel data
    out = tmp / "run"
    args = [PNG, TIF, DCM, corrupt, tmp / "missing.png", "--out", out, "--scale", "2"]
    threads = torch.get_num_threads()  # conftest's per-test setting is not active here
    torch.set_num_threads(1)
    try:
        rc1 = run(*args)
        first = {"rc": rc1, "report": json.loads((out / "report.json").read_text()),
                 "manifest": manifest(out), "html": (out / "report.html").read_text()}
        rc2 = run(*args)
    finally:
        torch.set_num_threads(threads)
    return {"out": out, "first": first, "rc2": rc2, "report2": json.loads(
        (out / "report.json").read_text()), "corrupt": corrupt}


def test_batch_writes_each_input_in_its_own_format(batch):
    outs = batch["out"] / "outputs"
    assert sorted(p.name for p in outs.iterdir()) == [
        "CT_small_x2.dcm", "butterfly_48x64_x2.png", "landsat_64x80_x2.tif"]
    with open_reader(outs / "landsat_64x80_x2.tif") as r, open_reader(TIF) as src:
        assert (r.meta.rows, r.meta.cols, r.meta.bands) == (128, 160, 4)
        assert r.meta.geo.crs_wkt == src.meta.geo.crs_wkt and r.meta.nodata == src.meta.nodata
        assert r.meta.geo.transform[0] == pytest.approx(src.meta.geo.transform[0] / 2)
        # nodata stays where the input had none, no valid pixel became nodata
        assert r.read_mask().mean() == pytest.approx(src.read_mask().mean(), abs=0.02)
    with open_reader(outs / "CT_small_x2.dcm") as r, open_reader(DCM) as src:
        assert (r.meta.rows, r.meta.cols) == (256, 256)
        assert r.meta.medical.pixel_spacing[0] == pytest.approx(
            src.meta.medical.pixel_spacing[0] / 2)
    assert pixels(outs / "butterfly_48x64_x2.png").shape == (1, 3, 96, 128)
    assert not list(outs.glob(".*"))  # no temporary left behind


def test_corrupt_and_missing_inputs_fail_alone(batch):
    first = batch["first"]
    assert first["rc"] == 1
    states = {e["name"]: e for e in first["report"]["images"]}
    assert [states[n]["state"] for n in ("butterfly_48x64", "landsat_64x80", "CT_small")] == \
        ["finalized"] * 3
    bad, missing = states["corrupt"], states["missing"]
    assert bad["state"] == "failed" and bad["error_class"] == "CorruptFileError"
    assert "corrupt.png" in bad["error"]
    assert missing["error_class"] == "InputNotFoundError" and missing["stage"] == "plan"
    failed = {r["input"]: r for r in first["manifest"] if r["state"] == "failed"}
    assert failed[str(batch["corrupt"])]["error_class"] == "CorruptFileError"
    assert "corrupt.png" in first["html"] and "CorruptFileError" in first["html"]
    assert first["report"]["summary"]["counts"]["failed"] == 2


def test_manifest_records_every_transition(batch):
    key = next(e["key"] for e in batch["first"]["report"]["images"] if e["name"] == "CT_small")
    states = [r["state"] for r in batch["first"]["manifest"] if r["key"] == key]
    assert states == ["queued", "trained", "inferred", "finalized"]
    log = [json.loads(x) for x in (batch["out"] / "log.jsonl").read_text().splitlines()]
    assert all({"time", "level", "message"} <= set(x) for x in log)
    assert any(x["message"] == "image finalized" and x["image"] == key for x in log)


def test_report_references_only_existing_files(batch):
    out = batch["out"]
    html = (out / "report.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sum(r.startswith("data:image/png;base64,") for r in refs) == 3 * 3  # crops + curves
    for ref in refs:
        if ref.startswith("data:"):
            assert base64.b64decode(ref.split(",", 1)[1])[:4] == b"\x89PNG"
        elif not ref.startswith("#"):
            assert (out / ref).is_file(), ref
    for entry in batch["report2"]["images"]:
        for rel in entry.get("assets", {}).values():
            assert (out / rel).is_file()
    done = next(e for e in batch["first"]["report"]["images"] if e["name"] == "landsat_64x80")
    assert set(done["seconds"]) == {"train", "infer", "write"}
    assert done["lr_consistency_db"] > 20 and done["history"]["iterations"] == 5
    assert done["crop"]["zoom"] == 2.0 and done["tiles"] == {"total": 6, "skipped": 0,
                                                             "inferred": 6}


def test_rerun_skips_finished_images(batch):
    counts = batch["report2"]["summary"]["counts"]
    assert batch["rc2"] == 1  # the corrupt file still fails
    assert counts["images_skipped"] == 3 and counts["tiles_inferred"] == 0
    assert counts["steps_trained"] == 0 and counts["failed"] == 2
    skipped = [e for e in batch["report2"]["images"] if e.get("skipped")]
    assert len(skipped) == 3 and all("lr_consistency_db" in e for e in skipped)


def test_run_equals_upscale_and_reports_progress(tmp_path: Path):
    from configs import resolve_config
    from pipeline.runs.progress import RunObserver
    from pipeline.runs.run import run_batch
    from pipeline.runs.settings import RunSettings

    class Recorder(RunObserver):
        def __init__(self):
            self.calls = []

        def train_event(self, image, msg):
            self.calls.append(("train", msg["iteration"]))

        def stage(self, image, step, total, *, done=0):
            self.calls.append(("stage", total, done))

        def tiles(self, image, n):
            self.calls.append(("tiles", n))

        def image_done(self, image, state):
            self.calls.append(("done", state))

    cfg, data = resolve_config(overrides=TINY[1:8:2])
    settings = RunSettings(out_dir=tmp_path / "run", scale=2.0, config=cfg, config_data=data,
                           tile=32, scheduler="synchronous", batch_tiles=1)
    rec = Recorder()
    result = run_batch([PNG], settings, observer=rec)
    assert result.exit_code == 0 and result.counts["tiles_inferred"] == 4
    assert ("stage", 4, 0) in rec.calls and rec.calls.count(("tiles", 1)) == 4
    assert rec.calls[-1] == ("done", "finalized") and ("train", 4) in rec.calls
    job = ImageJob(input=PNG, output=tmp_path / "single.png", scale=2.0, config=cfg, tile=32)
    upscale_file(job)
    np.testing.assert_array_equal(pixels(tmp_path / "run" / "outputs" / "butterfly_48x64_x2.png"),
                                  pixels(tmp_path / "single.png"))


def test_interrupted_run_resumes_without_redoing_tiles(tmp_path: Path, monkeypatch):
    import pipeline.image.job as job_mod

    real, calls = job_mod.infer_tile, []

    def crashing(*args, **kwargs):
        if len(calls) == 3:
            raise MemoryError("simulated crash after 3 tiles")
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(job_mod, "infer_tile", crashing)
    out = tmp_path / "run"
    assert run(BIRD, "--out", out, "--scale", "2", "--batch-tiles", "1") == 1
    assert manifest(out)[-1]["error_class"] == "MemoryError"
    key = manifest(out)[-1]["key"]
    store = out / "work" / key / "s0.zarr"
    chunks = sorted(p for p in store.rglob("c/*/*/*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in [store / "zarr.json", *chunks]}
    assert len(list((out / "tiles" / key / "s0").glob("*.done"))) == 3
    monkeypatch.setattr(job_mod, "infer_tile", real)
    assert run(BIRD, "--out", out, "--scale", "2", "--batch-tiles", "1") == 0
    counts = summary(out)
    assert counts["tiles_skipped"] == 3 and counts["tiles_inferred"] == 8 - 3
    assert counts["steps_resumed"] == 1 and counts["steps_trained"] == 0
    assert {p: p.stat().st_mtime_ns for p in before} == before  # finished work untouched
    assert run(BIRD, "--out", tmp_path / "clean", "--scale", "2") == 0
    np.testing.assert_array_equal(pixels(out / "outputs" / "bird_crop_122x61_x2.png"),
                                  pixels(tmp_path / "clean" / "outputs" /
                                         "bird_crop_122x61_x2.png"))


def test_changed_config_gets_a_new_key_and_needs_overwrite(tmp_path: Path):
    out = tmp_path / "run"
    target, dicom = out / "outputs" / "butterfly_48x64_x2.png", out / "outputs" / "MR_small_x2.dcm"
    assert run(PNG, MR, "--out", out, "--scale", "2") == 0
    first, first_dicom = pixels(target), pixels(dicom)
    assert run(PNG, MR, "--out", out, "--scale", "2", "--seed", "7") == 1
    failed = [r for r in manifest(out) if r["state"] == "failed"]
    assert len(failed) == 2 and all("pass --overwrite" in r["error"] for r in failed)
    assert len({r["key"] for r in manifest(out)}) == 4
    assert run(PNG, MR, "--out", out, "--scale", "2", "--seed", "7", "--overwrite") == 0
    assert not np.array_equal(pixels(target), first)
    assert not np.array_equal(pixels(dicom), first_dicom)
    assert run(PNG, MR, "--out", out, "--scale", "2", "--seed", "7", "--no-resume") == 0
    assert summary(out)["tiles_inferred"] == 4 + 4 and summary(out)["steps_trained"] == 2
    assert run(PNG, "--out", out, "--scale", "3") == 0  # a new scale is a new output
    assert (out / "outputs" / "butterfly_48x64_x3.png").is_file()


def test_an_edited_input_replaces_its_stale_output_but_a_changed_config_does_not(
        tmp_path: Path):
    """The same input path under the same settings, edited since its output was written:
    the run replaces its own stale output (issue 20: no stale result kept behind a
    refusal); other settings for that input still need --overwrite."""
    src = tmp_path / "in" / "a.png"
    src.parent.mkdir()
    shutil.copy(PNG, src)
    out = tmp_path / "run"
    target = out / "outputs" / "a_x2.png"
    assert run(src, "--out", out, "--scale", "2") == 0
    first = pixels(target)
    with open_reader(src) as r:
        edited = 255 - r.read()[:3]
    from PIL import Image
    Image.fromarray(np.moveaxis(edited, 0, -1).astype(np.uint8)).save(src)
    assert run(src, "--out", out, "--scale", "2") == 0
    second = pixels(target)
    assert not np.array_equal(second, first)
    keys = [r["key"] for r in manifest(out) if r["state"] == "finalized"]
    assert len(keys) == 2 and keys[0] != keys[1]  # the edit made a new key
    assert run(src, "--out", out, "--scale", "2", "--seed", "7") == 1  # other settings
    failed = [r for r in manifest(out) if r["state"] == "failed"]
    assert len(failed) == 1 and "pass --overwrite" in failed[0]["error"]
    assert np.array_equal(pixels(target), second)


def test_gradual_steps_match_upscale(tmp_path: Path):
    from configs import resolve_config

    assert run(BIRD, "--out", tmp_path / "run", "--scale", "2", "--set",
               "scale_steps=[1.5, 2.0]") == 0
    counts = summary(tmp_path / "run")
    assert counts["steps_trained"] == 2
    cfg, _ = resolve_config(overrides=[*TINY[1:8:2], "scale_steps=[1.5, 2.0]"])
    upscale_file(ImageJob(input=BIRD, output=tmp_path / "single.png", scale=2.0, config=cfg,
                          tile=32))
    out = pixels(tmp_path / "run" / "outputs" / "bird_crop_122x61_x2.png")
    np.testing.assert_array_equal(out, pixels(tmp_path / "single.png"))
    assert out.shape == (1, 3, 244, 122)  # the 4/3 step's 1-px overshoot is clipped
    assert abs(out.mean() - pixels(BIRD).mean()) < 5  # inverted to 8-bit units


def test_internal_mask_survives_the_intermediate_store(tmp_path: Path):
    import rasterio

    with rasterio.open(DATA / "io" / "geotiff" / "rgb_byte_96x128.tif") as src:
        profile = src.profile
        data = src.read(window=((0, 40), (0, 48)))
        transform = src.transform  # the window starts at (0, 0)
    profile.update(height=40, width=48, transform=transform, nodata=None, tiled=False)
    profile.pop("blockxsize", None), profile.pop("blockysize", None)
    path = tmp_path / "masked.tif"
    mask = np.full((40, 48), 255, np.uint8)
    mask[:10, :20] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.write_mask(mask)
    assert run(path, "--out", tmp_path / "run", "--scale", "2") == 0
    key = manifest(tmp_path / "run")[-1]["key"]
    assert (tmp_path / "run" / "work" / key / "s0_mask.zarr").is_dir()
    out = tmp_path / "run" / "outputs" / "masked_x2.tif"
    with open_reader(out) as r:
        valid = r.read_mask()
    assert not valid[:20, :40].any() and valid[20:, 40:].all()


def test_ground_truth_scores_and_mismatch(tmp_path: Path):
    from PIL import Image

    from zssr.protocol import make_lr

    hr = np.asarray(Image.open(DATA / "engine" / "bridge_47x53.png"))
    (tmp_path / "in").mkdir()
    (tmp_path / "gt").mkdir()
    Image.fromarray(make_lr(hr[None], 2)[0]).save(tmp_path / "in" / "bridge.png")
    Image.fromarray(hr).save(tmp_path / "gt" / "bridge.png")
    assert run(tmp_path / "in", "--out", tmp_path / "run", "--scale", "2", "--ground-truth",
               tmp_path / "gt") == 0
    entry = json.loads((tmp_path / "run" / "report.json").read_text())["images"][0]
    assert 25.2 < entry["psnr"] < 60 and 0 < entry["ssim"] <= 1  # bicubic 25.19, got 25.90
    assert "PSNR / SSIM" in (tmp_path / "run" / "report.html").read_text()
    shutil.copy(tmp_path / "gt" / "bridge.png", tmp_path / "gt" / "extra.png")
    assert run(tmp_path / "in", "--out", tmp_path / "run2", "--scale", "2", "--ground-truth",
               tmp_path / "gt") == 2


def test_locked_run_dir_and_usage_errors(tmp_path: Path, capsys):
    from pipeline.runs.driver import RunDir

    with RunDir(tmp_path / "run"):
        assert run(PNG, "--out", tmp_path / "run", "--scale", "2") == 9
    assert "another zssr run is using" in capsys.readouterr().err
    assert main(["run", str(PNG), "--out", str(tmp_path / "r"), "--scale", "2", "--scheduler",
                 "bogus", "-q"]) == 2
    assert "expected 'local', 'synchronous'" in capsys.readouterr().err
    assert run(PNG, "--out", tmp_path / "r", "--scale", "2", "--workers", "0") == 2
    assert main(["run", str(PNG), "--out", str(tmp_path / "r"), "--scale", "2", "--tile", "4",
                 "-q"]) == 2
    assert "--tile 4: expected 8 <= tile" in capsys.readouterr().err
    assert run(PNG, "--out", tmp_path / "r", "--scale", "2", "--retries", "-1") == 2
    assert run(PNG, "--out", tmp_path / "r", "--scale", "2", "--set", "scale_steps=[1.5]") == 2
    assert "the last step 1.5 must equal the requested scale 2.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(PNG, "--out", tmp_path / "r", "--scale", "2", "--format", "jpg")


def test_report_renders_in_headless_chromium(batch, tmp_path: Path):
    from PIL import Image

    chrome = require_tool("chromium", "chromium-browser", "google-chrome", "chrome")
    shot = tmp_path / "report.png"
    import subprocess

    # no network here: the background-networking flags keep Chromium from dialling out
    subprocess.run([chrome, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--no-first-run", "--disable-background-networking", "--disable-sync",
                    "--disable-component-update", f"--user-data-dir={tmp_path / 'profile'}",
                    f"--screenshot={shot}", "--window-size=1280,2400",
                    (batch["out"] / "report.html").as_uri()], check=True, timeout=90,
                   capture_output=True)
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    assert img.shape[:2] == (2400, 1280)
    assert img.std() > 10 and len(np.unique(img.reshape(-1, 3), axis=0)) > 1000  # pictures


def test_preset_chain_matches_upscale(tmp_path: Path):
    """The ``ct`` preset's chain (modality LUT, clip) runs around SR as in ``zssr upscale``."""
    assert run(DCM, "--out", tmp_path / "run", "--scale", "2", "--preset", "ct") == 0
    assert main(["upscale", str(DCM), str(tmp_path / "single.dcm"), "--scale", "2",
                 "--preset", "ct", "-q", *TINY]) == 0
    np.testing.assert_array_equal(pixels(tmp_path / "run" / "outputs" / "CT_small_x2.dcm"),
                                  pixels(tmp_path / "single.dcm"))


def test_warm_start_chains_compatible_images(tmp_path):
    """Opt-in warm start: the second PNG starts from the first's weights, fewer iterations."""
    import json as _json

    from pipeline.cli.main import main as cli

    a = tmp_path / "a.png"
    b = tmp_path / "b.png"
    src = Path(__file__).parent / "data/io/plain/butterfly_48x64.png"
    a.write_bytes(src.read_bytes())
    b.write_bytes(src.read_bytes())
    out = tmp_path / "run"
    code = cli(["run", str(a), str(b), "--out", str(out), "--scale", "2", "-q",
                "--scheduler", "synchronous", "--tile", "32",
                "--warm-start", "--set", "train.max_iters=12",
                "--set", "train.warm_max_iters=4", "--set", "net.depth=3",
                "--set", "net.width=8", "--set", "infer.back_projection_iters=1"])
    assert code == 0
    report = _json.loads((out / "report.json").read_text())
    hist = {Path(e["input"]).name: e["history"] for e in report["images"]}
    assert hist["a.png"]["iterations"] == 12 and not hist["a.png"]["warm_started"]
    assert hist["b.png"]["iterations"] == 4 and hist["b.png"]["warm_started"]
    assert "warm-started" in (out / "report.html").read_text()
