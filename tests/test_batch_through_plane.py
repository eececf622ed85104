"""``zssr batch`` with ``through_plane: true`` (issue 18.1): a job's volumes made thin.

One job over a NIfTI volume and the thick-slice CT series of
tests/_dicom_fixtures.thick_series, with a tiny net: each output equals ``zssr upscale
--through-plane`` of that input with the same settings (pixels, NIfTI affine, DICOM
positions and thickness), named ``{stem}_{scale}{suffix}`` with ``{scale}`` = ``z2p5``;
a rerun skips both, an edited job (another ``scale_z``) redoes both, and bad keys fail in
one line before anything is written.  The preset ``ct-thin`` implies the mode, as in
``zssr run``.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import yaml
from _dicom_fixtures import thick_series
from test_run_through_plane import _nifti, _series

from pipeline.cli.main import main
from workflows.batch import STATE_FILE

SET = {"train.max_iters": 2, "train.crop_size": 16, "net.depth": 2, "net.width": 4,
       "train.eval_windows": 1}
TINY = [a for k, v in SET.items() for a in ("--set", f"{k}={v}")] + ["-q"]


def _job(tmp, **keys) -> str:
    job = tmp / "job.yaml"
    job.write_text(yaml.safe_dump({"inputs": ["in/head.nii.gz", "in/thick_axial"],
                                   "output": "out", "scheduler": "synchronous", "set": SET,
                                   **keys}))
    return str(job)


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batch")
    (tmp / "in").mkdir()
    _nifti(tmp / "in" / "head.nii.gz", 4)
    series = thick_series(tmp / "in", oblique=False)["path"]
    assert series == tmp / "in" / "thick_axial"
    job = _job(tmp, through_plane=True, scale_z=2.5)
    assert main(["batch", job, "-q"]) == 0  # one torch thread: conftest's session fixture
    return tmp, series, job


def test_batch_outputs_equal_upscale_through_plane(batch, tmp_path) -> None:
    tmp, series, _ = batch
    out = tmp / "out"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "head_z2p5.nii.gz", "thick_axial_z2p5"]
    nii_one, dcm_one = tmp_path / "head.nii.gz", tmp_path / "thin_series"
    assert main(["upscale", str(tmp / "in" / "head.nii.gz"), str(nii_one), "--through-plane",
                 "--scale-z", "2.5", *TINY]) == 0
    assert main(["upscale", str(series), str(dcm_one), "--through-plane", "--scale-z", "2.5",
                 *TINY]) == 0
    a, b = nib.load(out / "head_z2p5.nii.gz"), nib.load(nii_one)
    assert a.shape == (18, 16, 8) and np.array_equal(a.get_fdata(), b.get_fdata())
    np.testing.assert_array_equal(a.affine, b.affine)
    ran, one = _series(out / "thick_axial_z2p5"), _series(dcm_one)
    assert len(ran) == len(one) == 11
    for x, y in zip(ran, one, strict=True):
        assert np.array_equal(x.pixel_array, y.pixel_array)
        assert x.ImagePositionPatient == y.ImagePositionPatient
        assert x.SliceThickness == y.SliceThickness == pytest.approx(1.2)
    state = json.loads((out / STATE_FILE).read_text())["inputs"]
    assert sorted(r["output"] for r in state.values()) == [
        str(out / "head_z2p5.nii.gz"), str(out / "thick_axial_z2p5")]


def test_rerun_skips_and_an_edited_job_redoes(batch, capsys) -> None:
    tmp, _, job = batch
    out = tmp / "out"
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if not p.name.startswith(".")}
    capsys.readouterr()
    assert main(["batch", job]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()
            if not p.name.startswith(".")} == before
    assert "0 processed, 2 done earlier, 0 failed" in capsys.readouterr().out
    edited = _job(tmp, through_plane=True, scale_z=2.5, slice_profile=1.5)  # same names
    capsys.readouterr()
    assert main(["batch", edited]) == 0
    assert "2 processed, 0 done earlier" in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if not p.name.startswith(".")}
    assert after.keys() == before.keys() and all(after[k] != before[k] for k in after)
    spaced = _job(tmp, through_plane=True, slice_spacing=1.5)  # another grid, other names
    assert main(["batch", spaced, "-q"]) == 0
    assert nib.load(out / "head_1p5mm.nii.gz").shape == (18, 16, 7)  # 3 mm -> 1.5 mm
    assert len(list((out / "thick_axial_1p5mm").iterdir())) == 9  # 3 mm -> 1.5 mm, 5 -> 9
    capsys.readouterr()
    assert main(["batch", spaced]) == 0  # and that is remembered too
    assert "0 processed, 2 done earlier" in capsys.readouterr().out


def test_a_thin_preset_implies_through_plane(tmp_path) -> None:
    (tmp_path / "in").mkdir()
    _nifti(tmp_path / "in" / "head.nii.gz", 3)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"inputs": ["in/head.nii.gz"], "output": "out",
                                   "preset": "ct-thin", "scale_z": 2,
                                   "scheduler": "synchronous", "set": SET}))
    assert main(["batch", str(job), "-q"]) == 0
    assert nib.load(tmp_path / "out" / "head_z2.nii.gz").shape == (18, 16, 5)


@pytest.mark.parametrize("keys, message", [
    ({"through_plane": True}, "takes one of 'scale_z' and 'slice_spacing'"),
    ({"through_plane": True, "scale_z": 2, "slice_spacing": 1.0},
     "takes one of 'scale_z' and 'slice_spacing', not both"),
    ({"through_plane": True, "scale_z": 0.5}, "'through_plane.scale_z': invalid value 0.5"),
    ({"through_plane": True, "scale_z": 2, "scale": 2}, "'scale' is not used by a "
     "through-plane job"),
    ({"through_plane": True, "scale_z": 2, "preset": "ct"}, "'chain' is not used"),
    ({"through_plane": True, "scale_z": 2, "ground_truth": "in"}, "'ground_truth' is not"),
    ({"through_plane": "yes", "scale_z": 2}, "'through_plane'"),
    ({"scale_z": 2, "scale": 2}, "'scale_z' goes with 'through_plane: true'"),
    ({"through_plane": True, "scale_z": 2, "slab": 3}, "unknown key 'slab'"),
    ({"preset": "ct-thin"}, "takes one of 'scale_z' and 'slice_spacing'"),
    ({}, "missing key 'scale'"),
])
def test_bad_keys_fail_in_one_line(tmp_path, capsys, keys, message) -> None:
    (tmp_path / "in").mkdir()
    _nifti(tmp_path / "in" / "head.nii.gz", 3)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"inputs": ["in/head.nii.gz"], "output": "out", **keys}))
    capsys.readouterr()
    assert main(["batch", str(job)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()
