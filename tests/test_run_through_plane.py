"""``zssr run --through-plane`` (issue 18.1): each volume one task of the run's graph.

Two volumes (a NIfTI file, and the thick-slice CT series built by
tests/_dicom_fixtures.thick_series) and a bad one (a NIfTI of a single slice) in one run
with a tiny net: the two outputs equal ``zssr upscale --through-plane`` of each (same
seeded training, the same function), the bad volume fails alone with the usual FAILED
line, the manifest and report record each volume, and a second run skips both finished
volumes without writing them again.  Presets ct-thin / mr-thin imply --through-plane.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from _dicom_fixtures import thick_series

from pipeline.cli.main import main

TINY = ["--set", "train.max_iters=2", "--set", "train.crop_size=16", "--set", "net.depth=2",
        "--set", "net.width=4", "--set", "train.eval_windows=1", "-q"]


def _nifti(path, slices: int) -> None:
    data = (np.random.default_rng(slices).random((18, 16, slices)) * 200).astype(np.uint8)
    affine = np.diag([-0.9, 0.8, 3.0, 1.0])
    affine[:3, 3] = [-4.0, 6.0, 20.0]
    nib.save(nib.Nifti1Image(data, affine), path)


def _series(folder) -> list[pydicom.Dataset]:
    return sorted((pydicom.dcmread(p) for p in folder.iterdir()),
                  key=lambda d: int(d.InstanceNumber))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    _nifti(root / "head.nii.gz", 4)
    _nifti(root / "flat.nii", 1)
    series = thick_series(root, oblique=False)["path"]
    out = tmp_path_factory.mktemp("run") / "r"
    args = ["run", str(root / "head.nii.gz"), str(series), str(root / "flat.nii"),
            "--out", str(out), "--through-plane", "--scale-z", "2.5",
            "--scheduler", "synchronous", *TINY]
    return root, series, out, args


def test_run_gives_upscale_outputs_and_fails_the_bad_volume_alone(run, tmp_path,
                                                                  capsys) -> None:
    root, series, out, args = run
    capsys.readouterr()
    assert main(args[:-1]) == 1  # not quiet: the summary with its FAILED line
    printed = capsys.readouterr().out
    failed = [line for line in printed.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "flat.nii" in failed[0] and "has 1 slice" in failed[0]
    assert "2/3 images done" in printed

    nii_run, dcm_run = out / "outputs" / "head_z2p5.nii.gz", out / "outputs" / "thick_axial_z2p5"
    assert sorted(p.name for p in (out / "outputs").iterdir()) == [nii_run.name, dcm_run.name]
    nii_one, dcm_one = tmp_path / "head.nii.gz", tmp_path / "thin_series"
    assert main(["upscale", str(root / "head.nii.gz"), str(nii_one), "--through-plane",
                 "--scale-z", "2.5", *TINY]) == 0
    assert main(["upscale", str(series), str(dcm_one), "--through-plane", "--scale-z", "2.5",
                 *TINY]) == 0
    a, b = nib.load(nii_run), nib.load(nii_one)
    assert a.shape == (18, 16, 8) and np.array_equal(a.get_fdata(), b.get_fdata())
    np.testing.assert_array_equal(a.affine, b.affine)
    ran, one = _series(dcm_run), _series(dcm_one)
    assert len(ran) == len(one) == 11  # (5 - 1) * 2.5 + 1 slices
    for x, y in zip(ran, one, strict=True):
        assert np.array_equal(x.pixel_array, y.pixel_array)
        assert x.ImagePositionPatient == y.ImagePositionPatient
        assert x.SliceThickness == y.SliceThickness == pytest.approx(1.2)

    states = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    final = {s["input"]: s["state"] for s in states if s["state"] in ("finalized", "failed")}
    assert final == {str(root / "head.nii.gz"): "finalized", str(series): "finalized",
                     str(root / "flat.nii"): "failed"}
    report = json.loads((out / "report.json").read_text())
    by_state = sorted((e["state"], e.get("slices")) for e in report["images"])
    assert by_state == [("failed", None), ("finalized", [4, 8]), ("finalized", [5, 11])]


def test_rerun_skips_finished_volumes(run, capsys) -> None:
    _, _, out, args = run
    outputs = out / "outputs"
    if not (outputs / "head_z2p5.nii.gz").exists():  # run alone: make the first run
        main(args)
    before = {p.name: p.stat().st_mtime_ns for p in outputs.iterdir()}
    assert main(args) == 1  # the bad volume fails again; the others are not redone
    assert {p.name: p.stat().st_mtime_ns for p in outputs.iterdir()} == before
    counts = json.loads((out / "report.json").read_text())["summary"]["counts"]
    assert counts["images_skipped"] == 2 and counts["failed"] == 1
    assert counts["finalized"] == 0


def test_preset_implies_through_plane_and_flags_are_checked(tmp_path, capsys) -> None:
    _nifti(tmp_path / "v.nii", 4)
    out = tmp_path / "thin.nii"
    assert main(["upscale", str(tmp_path / "v.nii"), str(out), "--preset", "mr-thin",
                 "--scale-z", "2", *TINY]) == 0
    assert nib.load(out).shape == (18, 16, 7)
    for argv, message in [
        (["--scale", "2", "--scale-z", "2"], "--scale-z, --slice-spacing and --slice-profile "
         "go with --through-plane"),
        (["--preset", "ct-thin"], "takes one of --scale-z F and --slice-spacing MM"),
        (["--preset", "ct-thin", "--scale-z", "2", "--tile", "64"], "--tile: not used by"),
        (["--through-plane", "--scale-z", "2", "--preset", "ct"], "config 'chain': not used"),
    ]:
        capsys.readouterr()
        assert main(["upscale", str(tmp_path / "v.nii"), str(tmp_path / "o.nii"), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    capsys.readouterr()
    assert main(["run", str(tmp_path / "v.nii"), "--out", str(tmp_path / "r"), "--preset",
                 "ct-thin", "--scale-z", "2", "--ground-truth", str(tmp_path)]) == 2
    assert "--ground-truth: not used by --through-plane" in capsys.readouterr().err
    assert not (tmp_path / "o.nii").exists() and not (tmp_path / "r").exists()


def test_batch_refuses_scale_with_a_through_plane_preset_in_one_line(tmp_path, capsys) -> None:
    """A job with preset ct-thin is a through-plane job (tests/test_batch_through_plane.py):
    its in-plane ``scale`` is refused in one line, never run in-plane with the thin
    settings."""
    import yaml

    _nifti(tmp_path / "v.nii", 4)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"inputs": ["v.nii"], "output": "out", "scale": 2,
                                   "preset": "ct-thin", "scale_z": 2,
                                   "scheduler": "synchronous"}))
    capsys.readouterr()
    assert main(["batch", str(job)]) not in (0, 1)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'scale' is not used by a through-plane job" in err[0]
    assert not any((tmp_path / "out").rglob("*.nii*"))
