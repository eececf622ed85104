"""``--transfer-syntax`` in ``zssr run`` and ``transfer_syntax`` in a ``zssr batch`` job
(issue 18.5): the run's DICOM outputs written RLE Lossless decode to exactly the pixels
the uncompressed run writes (same seeded training), an in-plane image and a through-plane
series alike; a run's other outputs are left as they are; a ``--format`` that writes no
DICOM and an unknown name in a job are refused in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from _dicom_fixtures import DICOM, thick_series
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from pipeline.cli.main import main
from pipeline.errors import UsageError
from pipeline.image.job import dicom_writer_options
from workflows.batch import run_job
from workflows.jobspec import job_from_dict

TINY = {"train.max_iters": 2, "train.crop_size": 16, "net.depth": 2, "net.width": 4,
        "infer.back_projection_iters": 0, "train.eval_windows": 1}
FLAGS = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")] + ["-q"]


def _run(inputs: list[Path], out: Path, *extra: str) -> int:
    return main(["run", *map(str, inputs), "--out", str(out), "--scheduler", "synchronous",
                 *extra, *FLAGS])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One DICOM and one PNG input, run uncompressed and with ``--transfer-syntax rle``."""
    root = tmp_path_factory.mktemp("ts")
    shutil.copy(DICOM / "MR_small.dcm", root / "mr.dcm")
    from PIL import Image

    Image.fromarray((np.random.default_rng(3).random((24, 20)) * 255).astype(np.uint8)).save(
        root / "flat.png")
    inputs = [root / "mr.dcm", root / "flat.png"]
    assert _run(inputs, root / "plain", "--scale", "2") == 0
    assert _run(inputs, root / "rle", "--scale", "2", "--transfer-syntax", "rle") == 0
    return root


def test_run_writes_rle_that_decodes_to_the_uncompressed_pixels(runs) -> None:
    plain = pydicom.dcmread(runs / "plain" / "outputs" / "mr_x2.dcm")
    rle = pydicom.dcmread(runs / "rle" / "outputs" / "mr_x2.dcm")
    assert plain.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert rle.file_meta.TransferSyntaxUID == RLELossless
    assert rle.pixel_array.shape == (128, 128) and rle.pixel_array.std() > 0
    np.testing.assert_array_equal(rle.pixel_array, plain.pixel_array)
    png = [(runs / r / "outputs" / "flat_x2.png").read_bytes() for r in ("plain", "rle")]
    assert png[0] == png[1]  # not a DICOM output: as it was


def test_batch_job_transfer_syntax(runs, tmp_path) -> None:
    shutil.copy(DICOM / "MR_small.dcm", tmp_path / "mr.dcm")
    spec = job_from_dict({"inputs": ["mr.dcm"], "output": "out", "scale": 2, "set": TINY,
                          "scheduler": "synchronous", "transfer_syntax": "rle"},
                         base=tmp_path)
    assert spec.transfer_syntax == "rle"
    summary = run_job(spec)
    assert summary.counts["processed"] == 1, summary
    out = pydicom.dcmread(tmp_path / "out" / "mr_x2.dcm")
    assert out.file_meta.TransferSyntaxUID == RLELossless
    plain = pydicom.dcmread(runs / "plain" / "outputs" / "mr_x2.dcm")
    np.testing.assert_array_equal(out.pixel_array, plain.pixel_array)


def test_through_plane_run_writes_rle_slices(tmp_path) -> None:
    series = thick_series(tmp_path, oblique=False)["path"]
    tp = ["--through-plane", "--scale-z", "2"]
    assert main(["upscale", str(series), str(tmp_path / "thin"), *tp, *FLAGS]) == 0
    assert _run([series], tmp_path / "r", *tp, "--transfer-syntax", "rle") == 0
    plain = sorted((tmp_path / "thin").iterdir())
    rle = sorted((tmp_path / "r" / "outputs" / "thick_axial_z2").iterdir())
    assert [p.name for p in rle] == [p.name for p in plain] and len(rle) == 9
    for a, b in zip(plain, rle, strict=True):
        ds = pydicom.dcmread(b)
        assert ds.file_meta.TransferSyntaxUID == RLELossless
        np.testing.assert_array_equal(ds.pixel_array, pydicom.dcmread(a).pixel_array)


def test_refusals_in_one_line(tmp_path, capsys) -> None:
    shutil.copy(DICOM / "MR_small.dcm", tmp_path / "mr.dcm")
    assert _run([tmp_path / "mr.dcm"], tmp_path / "r", "--scale", "2", "--format", "png",
                "--transfer-syntax", "rle") == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("--transfer-syntax rle: --format png writes no DICOM; drop one of "
                        "them") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r").exists()
    with pytest.raises(UsageError, match=r"^job: 'transfer_syntax' = 'jpeg-ls'; expected one "
                       r"of explicit-little, rle, jpeg2000-lossless$"):
        job_from_dict({"inputs": ["mr.dcm"], "output": "out", "scale": 2,
                       "transfer_syntax": "jpeg-ls"}, base=tmp_path)


def test_writer_options_only_for_dicom_outputs() -> None:
    assert dicom_writer_options(Path("a/sr.dcm"), False, "rle") == {"transfer_syntax": "rle"}
    assert dicom_writer_options(Path("a/series"), True, "rle") == {
        "deidentify": True, "transfer_syntax": "rle"}
    assert dicom_writer_options(Path("a/sr.png"), True, "rle") == {}
    assert dicom_writer_options(Path("a/sr.dcm"), False, "explicit-little") == {}
