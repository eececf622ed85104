"""``kernel_groups`` in ``zssr run`` and ``zssr batch`` (issue 16.2): one kernel task
estimating every group's kernel (kept in the run folder), one train task per group (its
own weights file), infer tasks running every group's network on each tile, written once.

The input is tests/test_kernel_groups.py's stack (the real Landsat 8 B2-B5 window, bands
1-2 degraded by KA, 3-4 by KB, 96 x 96 x 4 uint16).  The reference is ``zssr upscale``
with the same groups and settings, whose grouped output that module shows to equal the
stacked ``--bands`` runs of the groups: the run and the batch must give the same bytes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from test_kernel_groups import GROUPS, stack  # noqa: F401 - stack: the module's fixture
from test_kernel_pipeline import TINY, _pixels

import pipeline.runs.tasks
from pipeline.cli.main import main
from pipeline.image.kernel_estimate import load_choice
from workflows.batch import run_job_file
from zssr.config import ConfigError

TILE = ["--tile", "40"]  # 3 x 3 tiles with thin edge tiles, so batches span several tiles
RUN = ["--scheduler", "synchronous", "--batch-tiles", "4"]


def _upscale(src: Path, out: Path, *extra: str) -> Path:
    assert main(["upscale", str(src), str(out), "--scale", "2", "--kernel", "estimate",
                 *GROUPS, *extra, *TINY]) == 0
    return out


def _run(src: Path, run_dir: Path, *extra: str) -> int:
    return main(["run", str(src), "--out", str(run_dir), "--scale", "2", "--kernel",
                 "estimate", *GROUPS, *RUN, *extra, *TINY])


def _kernel_tag(path: Path) -> str:
    with rasterio.open(path) as ds:
        return ds.tags()["ZSSR_KERNEL"]


@pytest.fixture(scope="module")
def upscaled(stack, tmp_path_factory) -> Path:  # noqa: F811 - the imported fixture
    return _upscale(stack, tmp_path_factory.mktemp("up") / "grouped.tif", *TILE)


def test_run_equals_upscale_and_reports_each_groups_kernel(stack, upscaled,  # noqa: F811
                                                            tmp_path):
    run_dir = tmp_path / "run"
    assert _run(stack, run_dir, *TILE) == 0
    out = next((run_dir / "outputs").iterdir())
    np.testing.assert_array_equal(_pixels(out), _pixels(upscaled))
    # provenance: each group's kernel, the same text as zssr upscale writes
    label = _kernel_tag(out)
    assert label == _kernel_tag(upscaled)
    assert re.fullmatch(r"bands 1,2: \d+x\d+ sha256:[0-9a-f]{64} \(estimated\); "
                        r"bands 3,4: \d+x\d+ sha256:[0-9a-f]{64} \(estimated\)", label)
    # the run folder: a kernel and a weights file per group
    key = json.loads(next((run_dir / "entries").iterdir()).read_text())["key"]
    kernels = [load_choice(run_dir / "kernels" / f"{key}_g{g}.npz") for g in (0, 1)]
    assert [c.used for c in kernels] == ["estimated", "estimated"]
    assert not np.allclose(kernels[0].kernel, kernels[1].kernel)
    assert sorted(p.name for p in (run_dir / "weights").iterdir()) == [
        f"{key}_s0_g0.pt", f"{key}_s0_g1.pt"]
    # the report: each group's picture and label
    entry = json.loads((run_dir / "entries" / f"{key}.json").read_text())
    groups = entry["kernel"]["groups"]
    assert [g["bands"] for g in groups] == [[1, 2], [3, 4]]
    assert entry["kernel"]["description"].startswith("bands 1,2: estimated Gaussian")
    assert all((run_dir / g["asset"]).is_file() for g in groups)
    html = (run_dir / "report.html").read_text()
    for bands in ("1,2", "3,4"):
        assert f"estimated kernel, bands {bands}: estimated Gaussian" in html
    assert np.isfinite(entry["lr_consistency_db"])


def test_resume_reuses_the_groups_kernels_and_weights(stack, upscaled, tmp_path,  # noqa: F811
                                                      monkeypatch):
    run_dir = tmp_path / "run"
    assert _run(stack, run_dir, *TILE) == 0
    out = next((run_dir / "outputs").iterdir())
    first = _pixels(out)
    # interrupted after the kernel and train tasks: no tile, no output
    out.unlink()
    for marker in (run_dir / "tiles").rglob("*.done"):
        marker.unlink()

    def refuse(*a, **k):
        raise AssertionError("estimated or trained again on resume")

    for name in ("estimate_file_kernel", "estimate_group_kernel", "train_stage"):
        monkeypatch.setattr(pipeline.runs.tasks, name, refuse)
    assert _run(stack, run_dir, *TILE) == 0
    np.testing.assert_array_equal(_pixels(out), first)
    records = [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]
    trained = [r for r in records if r.get("state") == "trained"]
    pairs = [(r["group"], r["resumed"]) for r in trained]
    assert sorted(pairs[:2]) == [(0, False), (1, False)]  # the first run trained each group
    assert sorted(pairs[2:]) == [(0, True), (1, True)]  # the second loaded them
    inferred = [r for r in records if r.get("state") == "inferred"]
    assert inferred[-1]["tiles"] == 9  # every tile inferred again, with the saved weights


def test_batch_with_kernel_groups_equals_upscale(stack, tmp_path):  # noqa: F811
    up = _upscale(stack, tmp_path / "up.tif")  # the batch's default tile
    job = tmp_path / "job.yaml"
    tiny = {"train.max_iters": 8, "train.crop_size": 24, "net.depth": 3, "net.width": 8,
            "infer.back_projection_iters": 2, "seed": 0, "kernel": "estimate",
            "kernel_groups": [[1, 2], [3, 4]]}
    job.write_text(yaml.safe_dump({"inputs": [str(stack)], "output": "out", "scale": 2,
                                   "name": "{stem}-sr{suffix}", "set": tiny,
                                   "scheduler": "synchronous"}))
    summary = run_job_file(job)
    assert summary.counts == {"processed": 1, "skipped": 0, "failed": 0}, summary.failed
    out = Path(summary.processed[0]["output"])
    np.testing.assert_array_equal(_pixels(out), _pixels(up))
    assert _kernel_tag(out) == _kernel_tag(up)
    assert run_job_file(job).counts == {"processed": 0, "skipped": 1, "failed": 0}


@pytest.mark.parametrize("args, match", [
    (GROUPS, "one kernel per band group is estimated; add --kernel estimate"),
    (["--kernel", "estimate", "--set", "kernel_groups=[[1,2],[3]]"], "band 4 is in no group"),
    (["--kernel", "estimate", "--bands", "1,2,3", *GROUPS],
     r"band 4 is not among the bands read \(1, 2, 3\)"),
    (["--kernel", "estimate", *GROUPS, "--set", "scale_steps=[1.5, 2.0]"],
     "needs one x2 or x4 step, got 2 gradual steps"),
    (["--kernel", "estimate", "--set", "kernel_groups=[[1,2],[2,3]]"], "band 2 twice"),
])
def test_bad_groups_fail_the_run_in_one_line(stack, tmp_path, capsys, args,  # noqa: F811
                                             match):
    run_dir = tmp_path / "run"
    code = main(["run", str(stack), "--out", str(run_dir), "--scale", "2", *args, *RUN,
                 *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code not in (0, 10) and len(err) == 1 and "kernel_groups" in err[0], err
    assert re.search(match, err[0]), err[0]
    assert not any((run_dir / "outputs").glob("*")) and not (run_dir / "weights").exists()


def test_batch_refuses_bad_groups(stack, tmp_path):  # noqa: F811
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"inputs": [str(stack)], "output": "out", "scale": 2,
                                   "set": {"kernel_groups": [[1, 2], [3, 4]]},
                                   "scheduler": "synchronous"}))
    with pytest.raises(ConfigError, match="'kernel_groups'.*add --kernel estimate"):
        run_job_file(job)


def test_no_resume_forgets_every_groups_kernel_and_weights(tmp_path):
    from pipeline.runs.rundir import RunPaths

    paths, key = RunPaths(tmp_path), "img-0123"
    kept = [paths.weights("img-01234", 0), paths.kernel("img-01234", 0)]  # another key
    gone = [paths.weights(key, 0), paths.weights(key, 0, 1), paths.kernel(key),
            paths.kernel(key, 0), paths.kernel(key, 1)]
    for p in gone + kept:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert gone[1].name == f"{key}_s0_g1.pt" and gone[4].name == f"{key}_g1.npz"
    paths.clear_work(key)
    assert not any(p.exists() for p in gone) and all(p.exists() for p in kept)
