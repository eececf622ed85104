"""INPUT expansion, output naming and ground-truth pairing of ``zssr run``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import DATA

from pipeline.errors import UsageError
from pipeline.runs.inputs import InputItem, expand_inputs, output_names, pair_ground_truth

PNG = DATA / "io" / "plain" / "butterfly_48x64.png"
TIF = DATA / "io" / "geotiff" / "landsat_64x80.tif"
SERIES = DATA / "dicom" / "series"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "batch"
    d.mkdir()
    shutil.copy(PNG, d / "b.png")
    shutil.copy(TIF, d / "a.tif")
    shutil.copytree(SERIES, d / "ct_series")
    (d / "README.txt").write_text("not an image")
    (d / ".hidden.png").write_bytes(PNG.read_bytes())
    (d / "broken.png").write_bytes(b"garbage, not a PNG at all")
    (d / "other").mkdir()  # a plain sub-folder: not scanned
    return d


def test_folder_scan_keeps_images_and_series_and_fails_broken_image_files(folder: Path):
    items = expand_inputs([folder])
    names = [it.path.name for it in items]
    assert names == ["a.tif", "b.png", "broken.png", "ct_series"]
    broken = items[2]
    assert not broken.ok and broken.error_class == "UnsupportedFormatError"
    assert "broken.png" in broken.error
    assert all(it.ok for it in items if it is not broken)
    assert items[3].stem == "ct_series"


def test_dicom_series_folder_is_one_input():
    items = expand_inputs([SERIES])
    assert len(items) == 1 and items[0].path == SERIES.resolve() and items[0].ok


def test_glob_order_dedupe_and_missing(folder: Path, tmp_path: Path):
    items = expand_inputs([folder / "b.png", str(folder / "*.png"), folder / "b.png",
                           tmp_path / "missing.tif", str(tmp_path / "nothing*.png")])
    assert [it.path.name for it in items] == ["b.png", "broken.png", "missing.tif",
                                              "nothing*.png"]
    missing, nomatch = items[2], items[3]
    assert missing.error_class == "InputNotFoundError" and "no such file" in missing.error
    assert nomatch.error_class == "InputNotFoundError" and "matches no file" in nomatch.error


def test_output_names_disambiguate_equal_stems(tmp_path: Path):
    a, b = tmp_path / "x" / "scene.tif", tmp_path / "y" / "scene.png"
    items = [InputItem(a, "a"), InputItem(b, "b"), InputItem(tmp_path / "other.png", "c")]
    names = output_names(items)
    assert names[tmp_path / "other.png"] == "other"
    assert names[a] != names[b] and names[a].startswith("scene_")


def test_ground_truth_pairs_by_stem(tmp_path: Path):
    gt = tmp_path / "gt"
    gt.mkdir()
    (gt / "a.png").write_bytes(b"x")
    (gt / "b.tif").write_bytes(b"x")
    items = [InputItem(tmp_path / "a.tif", "a"), InputItem(tmp_path / "b.png", "b")]
    pairs = pair_ground_truth(items, gt)
    assert pairs == {tmp_path / "a.tif": gt / "a.png", tmp_path / "b.png": gt / "b.tif"}


def test_ground_truth_mismatch_names_missing_and_extra(tmp_path: Path):
    gt = tmp_path / "gt"
    gt.mkdir()
    (gt / "a.png").write_bytes(b"x")
    (gt / "zzz.png").write_bytes(b"x")
    items = [InputItem(tmp_path / "a.tif", "a"), InputItem(tmp_path / "b.png", "b")]
    with pytest.raises(UsageError, match=r"no ground truth for b\.png.*without an input: zzz"):
        pair_ground_truth(items, gt)


def test_ground_truth_ambiguous_and_not_a_folder(tmp_path: Path):
    gt = tmp_path / "gt"
    gt.mkdir()
    (gt / "a.png").write_bytes(b"x")
    (gt / "a.tif").write_bytes(b"x")
    with pytest.raises(UsageError, match="ambiguous ground truth for a.tif"):
        pair_ground_truth([InputItem(tmp_path / "a.tif", "a")], gt)
    with pytest.raises(UsageError, match="not a folder"):
        pair_ground_truth([], tmp_path / "nope")
    twins = [InputItem(tmp_path / "x" / "a.tif", "a"), InputItem(tmp_path / "y" / "a.tif", "b")]
    with pytest.raises(UsageError, match="several inputs are named 'a'"):
        pair_ground_truth(twins, gt)
