"""With ``--kernel estimate`` the provenance names the kernel SR *used* (issue 16/17).

The COG's ``ZSSR_KERNEL`` tag and the STAC Item's ``processing:lineage`` must name the
chosen kernel (``<rows>x<cols> sha256:<hex of the float64 taps> (<how chosen>)``, per
band group with ``kernel_groups``), not the word ``estimate``: a reader of the output
must be able to tell which kernel made it.  Expected labels are built here from the
kernel files the run folder keeps, hashed by this test.

The input is tests/test_kernel_groups.py's stack (the real Landsat 8 B2-B5 window,
bands 1-2 and 3-4 degraded by two different kernels).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import rasterio
from test_kernel_groups import GROUPS, stack  # noqa: F401 - stack: the module's fixture
from test_kernel_pipeline import TINY

from pipeline.catalog.stac import item_path
from pipeline.cli.main import main
from pipeline.image.kernel_estimate import load_choice

RUN = ["--scheduler", "synchronous"]


def _label(kernel: np.ndarray | None, used: str) -> str:
    if kernel is None:
        return f"bicubic ({used})"
    k = np.ascontiguousarray(kernel, np.float64)
    return f"{k.shape[0]}x{k.shape[1]} sha256:{hashlib.sha256(k.tobytes()).hexdigest()} ({used})"


def _tag(path: Path) -> str:
    with rasterio.open(path) as ds:
        return ds.tags()["ZSSR_KERNEL"]


def _lineage(output: Path) -> str:
    return json.loads(item_path(output).read_text())["properties"]["processing:lineage"]


def _run(src: Path, run_dir: Path, *extra: str) -> tuple[Path, str]:
    assert main(["run", str(src), "--out", str(run_dir), "--scale", "2", "--kernel",
                 "estimate", "--stac-item", *RUN, *extra, *TINY]) == 0
    out = next(p for p in (run_dir / "outputs").iterdir() if p.suffix == ".tif")
    key = json.loads(next((run_dir / "entries").iterdir()).read_text())["key"]
    return out, key


def test_one_estimated_kernel_is_named_in_tags_and_item(stack, tmp_path):  # noqa: F811
    out, key = _run(stack, tmp_path / "run")
    choice = load_choice(tmp_path / "run" / "kernels" / f"{key}.npz")
    expected = _label(choice.kernel, choice.used)
    assert _tag(out) == expected
    assert f"kernel {expected}," in _lineage(out)
    # zssr upscale: the same estimate, the same label, in the tag and the Item
    up = tmp_path / "up.tif"
    assert main(["upscale", str(stack), str(up), "--scale", "2", "--kernel", "estimate",
                 "--stac-item", *TINY]) == 0
    assert _tag(up) == expected
    assert f"kernel {expected}," in _lineage(up)


def test_grouped_kernels_are_named_in_the_item(stack, tmp_path):  # noqa: F811
    out, key = _run(stack, tmp_path / "run", *GROUPS)
    choices = [load_choice(tmp_path / "run" / "kernels" / f"{key}_g{g}.npz") for g in (0, 1)]
    expected = "; ".join(f"bands {b}: {_label(c.kernel, c.used)}"
                         for b, c in zip(("1,2", "3,4"), choices, strict=True))
    assert _tag(out) == expected
    assert f"kernel {expected}," in _lineage(out)
    up = tmp_path / "up.tif"
    assert main(["upscale", str(stack), str(up), "--scale", "2", "--kernel", "estimate",
                 "--stac-item", *GROUPS, *TINY]) == 0
    assert f"kernel {expected}," in _lineage(up)


def test_batch_item_names_the_kernel_its_output_records(stack, tmp_path):  # noqa: F811
    """``zssr batch`` writes its Items after the run, from the job alone: the Item takes
    the kernel the output records, the one chosen (the run's, hashed here)."""
    import yaml

    from workflows.batch import run_job_file

    _, key = _run(stack, tmp_path / "run")
    choice = load_choice(tmp_path / "run" / "kernels" / f"{key}.npz")
    expected = _label(choice.kernel, choice.used)
    job = tmp_path / "job.yaml"
    tiny = {"train.max_iters": 8, "train.crop_size": 24, "net.depth": 3, "net.width": 8,
            "infer.back_projection_iters": 2, "seed": 0, "kernel": "estimate"}
    job.write_text(yaml.safe_dump({"inputs": [str(stack)], "output": "out", "scale": 2,
                                   "set": tiny, "stac_items": True,
                                   "scheduler": "synchronous"}))
    summary = run_job_file(job)
    assert summary.counts == {"processed": 1, "skipped": 0, "failed": 0}, summary.failed
    out = Path(summary.processed[0]["output"])
    assert _tag(out) == expected
    assert f"kernel {expected}," in _lineage(out)


def test_run_folder_kernel_npy_reused_with_kernel_file(stack, tmp_path):  # noqa: F811
    """The estimated kernel is in the run folder as ``.npy`` (the issue's "the .npy is in
    the run folder"): ``--kernel that.npy`` on the same image gives the same output as the
    estimate, and ``--no-resume`` forgets it."""
    out, key = _run(stack, tmp_path / "run")
    npy = tmp_path / "run" / "kernels" / f"{key}.npy"
    choice = load_choice(tmp_path / "run" / "kernels" / f"{key}.npz")
    assert choice.used == "estimated"
    np.testing.assert_array_equal(np.load(npy), choice.kernel)
    again = tmp_path / "again.tif"
    assert main(["upscale", str(stack), str(again), "--scale", "2", "--kernel", str(npy),
                 *TINY]) == 0
    with rasterio.open(out) as a, rasterio.open(again) as b:
        np.testing.assert_array_equal(a.read(), b.read())
    from pipeline.runs.rundir import RunPaths

    RunPaths(tmp_path / "run").clear_work(key)
    assert not npy.exists()
