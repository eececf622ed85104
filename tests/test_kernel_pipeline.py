"""``--kernel estimate`` on files (issue 16): zssr upscale, zssr run and the run folder.

The LR image is Set5's bird degraded here with a known anisotropic Gaussian (the same
helpers and tolerance as tests/test_kernel_estimation.py); the engine-level estimate is
checked there, the wiring here: the estimated kernel is the one SR uses, the run
estimates in its own task and keeps the choice, nodata never enters, and an unusable
estimate falls back to the preset's kernel.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import DATA
from PIL import Image
from test_kernel_estimation import KERNEL_TOL, TRUTH, _degrade, _err, _rgb

from io_adapters.detect import open_reader
from pipeline.cli.main import main
from pipeline.image.kernel_estimate import estimate_file_kernel, load_choice
from pipeline.source import sample_stats
from zssr.config import config_from_dict
from zssr.kernel_estimation import estimate_kernel

TINY = ["--set", "train.max_iters=8", "--set", "train.crop_size=24", "--set", "net.depth=3",
        "--set", "net.width=8", "--set", "infer.back_projection_iters=2", "--seed", "0", "-q"]
CFG = config_from_dict({"train": {"max_iters": 8, "crop_size": 24},
                        "net": {"depth": 3, "width": 8}, "infer": {"back_projection_iters": 2},
                        "seed": 0})


def _pixels(path: Path) -> np.ndarray:
    with open_reader(path) as r:
        return r.read()


@pytest.fixture(scope="module")
def bird(tmp_path_factory) -> Path:
    """Bird (288 x 288 HR) degraded by TRUTH: a 144 x 144 RGB PNG."""
    path = tmp_path_factory.mktemp("blind") / "bird_lr.png"
    Image.fromarray(np.moveaxis(_degrade(_rgb("bird_HR.png"), TRUTH), 0, -1)).save(path)
    return path


def test_upscale_estimates_the_kernel_and_sr_uses_it(bird, tmp_path, capsys):
    with open_reader(bird) as reader:
        choice = estimate_file_kernel(reader, scale=2, config=CFG, where=str(bird))
    assert choice.used == "estimated" and _err(choice.kernel, TRUTH) < KERNEL_TOL
    assert choice.info["widths_px"][0] > choice.info["widths_px"][1]  # anisotropic
    out = tmp_path / "est.png"
    assert main(["upscale", str(bird), str(out), "--scale", "2", "--kernel", "estimate",
                 *TINY[:-1]]) == 0
    assert "kernel estimated Gaussian, widths" in capsys.readouterr().out
    # the same SR with the estimate given as a file: the estimate is what SR used
    np.save(tmp_path / "k.npy", choice.kernel)
    given = tmp_path / "given.png"
    assert main(["upscale", str(bird), str(given), "--scale", "2", "--kernel",
                 str(tmp_path / "k.npy"), *TINY]) == 0
    np.testing.assert_array_equal(_pixels(out), _pixels(given))
    bicubic = tmp_path / "bicubic.png"
    assert main(["upscale", str(bird), str(bicubic), "--scale", "2", *TINY]) == 0
    assert not np.array_equal(_pixels(out), _pixels(bicubic))


def test_run_estimates_in_its_own_task_keeps_it_and_equals_upscale(bird, tmp_path,
                                                                   monkeypatch):
    import pipeline.runs.tasks

    up = tmp_path / "up.png"
    assert main(["upscale", str(bird), str(up), "--scale", "2", "--kernel", "estimate",
                 *TINY]) == 0
    run_dir = tmp_path / "run"
    args = ["run", str(bird), "--out", str(run_dir), "--scale", "2", "--kernel", "estimate",
            "--scheduler", "synchronous", *TINY]
    assert main(args) == 0
    out = next((run_dir / "outputs").iterdir())
    np.testing.assert_array_equal(_pixels(out), _pixels(up))
    saved = list((run_dir / "kernels").glob("*.npz"))
    assert len(saved) == 1 and load_choice(saved[0]).used == "estimated"
    entry = json.loads(next((run_dir / "entries").iterdir()).read_text())
    assert entry["kernel"]["used"] == "estimated"
    assert entry["kernel"]["description"].startswith("estimated Gaussian")
    assert (run_dir / entry["assets"]["kernel"]).is_file()
    assert "estimated kernel: estimated Gaussian" in (run_dir / "report.html").read_text()
    # resumed: the saved choice is read back, never estimated again
    out.unlink()
    for p in (run_dir / "weights").iterdir():
        p.unlink()

    def refuse(*a, **k):
        raise AssertionError("estimated again on resume")

    monkeypatch.setattr(pipeline.runs.tasks, "estimate_file_kernel", refuse)
    assert main(args) == 0
    np.testing.assert_array_equal(_pixels(next((run_dir / "outputs").iterdir())), _pixels(up))


def test_nodata_never_enters_the_estimate(bird, tmp_path):
    """A uint16 GeoTIFF with a nodata block: the file-side estimate equals the engine's
    in-memory estimate with that block masked out."""
    luma = np.asarray(Image.open(bird).convert("L"), np.float64)
    img = (luma * 200 + 1000).astype(np.uint16)
    img[100:, :50] = 0  # nodata: a hard-edged hole in one corner of the scene
    path = tmp_path / "nodata.tif"
    with rasterio.open(path, "w", driver="GTiff", width=img.shape[1], height=img.shape[0],
                       count=1, dtype="uint16", nodata=0) as ds:
        ds.write(img, 1)
    with open_reader(path) as reader:
        choice = estimate_file_kernel(reader, scale=2, config=CFG, where=str(path))
        stats = sample_stats(reader, [0], CFG.norm)
        work = stats.normalizer.forward(reader.read())
    valid = img != 0
    direct = estimate_kernel(work, scale=2, mask=valid, seed=CFG.seed)
    assert choice.info["windows"] == direct.windows
    np.testing.assert_allclose(choice.info["covariance"], np.round(direct.covariance, 4))
    # were nodata read as data, the zero block's edges would change the spectrum
    unmasked = estimate_kernel(work, scale=2, seed=CFG.seed)
    assert unmasked.windows > direct.windows


def test_unusable_estimate_falls_back_to_the_presets_kernel(tmp_path, capsys, caplog):
    src = DATA / "io" / "plain" / "bridge_40x48.png"  # smaller than one 64 x 64 window
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["upscale", str(src), str(a), "--scale", "2", "--kernel", "estimate",
                 "--kernel-sigma", "1.0", *TINY[:-1]]) == 0
    captured = capsys.readouterr()
    assert "kernel fallback to the preset's Gaussian (estimate unusable: too small" \
        in captured.out
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and str(src) in warned[0]  # one line, naming the file
    assert "kernel estimation unusable (too small" in warned[0]
    assert main(["upscale", str(src), str(b), "--scale", "2", "--kernel-sigma", "1.0",
                 *TINY]) == 0
    np.testing.assert_array_equal(_pixels(a), _pixels(b))


def test_estimate_refuses_other_scales_with_one_line(bird, tmp_path, capsys):
    code = main(["upscale", str(bird), str(tmp_path / "o.png"), "--scale", "3", "--kernel",
                 "estimate", *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code not in (0, 10) and len(err) == 1
    assert str(bird) in err[0] and "supports scales 2 and 4" in err[0]
    assert not (tmp_path / "o.png").exists()
