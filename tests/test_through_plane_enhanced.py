"""Through-plane SR of an enhanced multi-frame DICOM to one enhanced file (issue 18.2).

A thick-slice Enhanced MR (tests/_dicom_fixtures.thick_enhanced: 5 frames 3 mm apart,
oblique with its frames in slice order, axial with its frames stored last slice first)
goes through ``zssr upscale --through-plane --scale-z 2.5`` with a tiny net.  The output
file is read back with pydicom and checked against what is computed here from the
fixture, never from the code under test: frame j at the first frame's position plus
j / 10 of the way to the last frame's (the old frames' own positions, 1e-4 mm), the step
1.2 mm along the fixture's normal, the new grid's thickness and spacing, frame numbers
and dimension indices in the source's direction, references to the old frames each new
one lies between, UIDs and the series; dciodvfy finds no new errors against the input;
our reader sees a volume of the right spacing.  The same volume as a folder of
single-frame slices (``enhanced_as_series``) through the series path gives the same
stored values, slice for slice: one engine, two writers.
"""

from __future__ import annotations

import datetime
import math

import numpy as np
import pydicom
import pytest
from _dicom_fixtures import dciodvfy_errors, enhanced_as_series, thick_enhanced
from conftest import require_tool

from io_adapters.detect import open_reader
from io_adapters.dicom_writer import DicomWriter
from io_adapters.errors import InvalidDataError
from pipeline.image.volume import through_plane_metadata, volume_geometry

FACTOR, OLD, NEW = 2.5, 5, 11  # 3 mm / 2.5 = 1.2 mm; (5 - 1) * 2.5 + 1 frames
STEP = 3.0 / FACTOR
TINY = ["--set", "train.max_iters=2", "--set", "train.crop_size=16", "--set", "net.depth=2",
        "--set", "net.width=4", "--set", "train.eval_windows=1", "-q"]
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


def _upscale(source, out, *extra: str) -> int:
    from pipeline.cli.main import main

    return main(["upscale", str(source), str(out), "--through-plane", "--scale-z",
                 str(FACTOR), *extra, *TINY])


@pytest.fixture(scope="module", params=[(True, False), (False, True)],
                ids=["oblique", "axial-descending"])
def thin(request, tmp_path_factory):
    """(fixture geometry, output path, output dataset)."""
    oblique, descending = request.param
    geo = thick_enhanced(tmp_path_factory.mktemp("tpe"), oblique=oblique,
                         descending=descending)
    out = geo["path"].parent / "thin.dcm"
    assert _upscale(geo["path"], out) == 0
    return geo, out, pydicom.dcmread(out)


def _frames(ds):
    return list(ds.PerFrameFunctionalGroupsSequence)


def test_frames_lie_on_the_independent_grid(thin) -> None:
    geo, _, ds = thin
    first, last = geo["positions"][0], geo["positions"][-1]
    direction = -1.0 if geo["stack"][0] > geo["stack"][-1] else 1.0
    assert int(ds.NumberOfFrames) == NEW and len(_frames(ds)) == NEW
    assert ds.pixel_array.shape == (NEW, 24, 20)
    for j, item in enumerate(_frames(ds)):
        got = np.array([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
        np.testing.assert_allclose(got, first + j / (NEW - 1) * (last - first), atol=1e-4,
                                   err_msg=f"frame {j}")
        np.testing.assert_allclose(got, first + direction * j * STEP * geo["normal"],
                                   atol=1e-4, err_msg=f"frame {j}")
    shared = ds.SharedFunctionalGroupsSequence[0]
    measures = shared.PixelMeasuresSequence[0]
    assert math.isclose(float(measures.SliceThickness), STEP, rel_tol=1e-9)
    assert math.isclose(float(measures.SpacingBetweenSlices), STEP, rel_tol=1e-9)
    assert [float(v) for v in measures.PixelSpacing] == list(geo["pixel_spacing"])
    np.testing.assert_allclose(
        [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
        [*geo["row"], *geo["col"]], atol=1e-9)
    assert math.isclose(float(ds.SpacingBetweenSlices), STEP, rel_tol=1e-9)


def test_frame_content_counts_the_new_stack_in_the_source_direction(thin) -> None:
    geo, _, ds = thin
    descending = geo["stack"][0] > geo["stack"][-1]
    for j, item in enumerate(_frames(ds)):
        content = item.FrameContentSequence[0]
        number = NEW - j if descending else j + 1  # the source's: slice k is k + 1
        assert int(content.InStackPositionNumber) == number, j
        assert list(content.DimensionIndexValues) == [1, number], j
        assert content.StackID == "1"
    numbers = [int(i.FrameContentSequence[0].InStackPositionNumber) for i in _frames(ds)]
    assert sorted(numbers) == list(range(1, NEW + 1))


def test_identity_series_and_references(thin) -> None:
    geo, _, ds = thin
    assert str(ds.SOPClassUID) == ENHANCED_MR == str(ds.file_meta.MediaStorageSOPClassUID)
    assert str(ds.SOPInstanceUID) != geo["uid"]
    assert str(ds.file_meta.MediaStorageSOPInstanceUID) == str(ds.SOPInstanceUID)
    assert str(ds.SeriesInstanceUID) != geo["series_uid"]
    assert str(ds.FrameOfReferenceUID) == geo["frame_uid"]
    assert int(ds.SeriesNumber) == geo["series_number"] + 1000
    assert ds.SeriesDescription.startswith("ZSSR thin 1.2mm x2.5")
    today = datetime.date.today().strftime("%Y%m%d")
    assert ds.ContentDate == ds.SeriesDate == today
    assert list(ds.ImageType[:2]) == ["DERIVED", "PRIMARY"]
    equipment = ds.ContributingEquipmentSequence[-1]
    assert equipment.Manufacturer == "zssr-pipeline"
    assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    assert ds.Manufacturer == "zssr-fixture"  # the scanner's equipment is kept
    evidence = ds.SourceImageEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == geo["series_uid"]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == geo["uid"]
    for j, item in enumerate(_frames(ds)):
        derivation = item.DerivationImageSequence[0]
        assert "through-plane x2.5" in derivation.DerivationDescription
        assert derivation.DerivationCodeSequence[0].CodeValue == "113085"
        t = j / FACTOR  # old frames (1-based) the new one lies between, one when on it
        expect = {math.floor(t) + 1, math.ceil(t) + 1}
        sources = derivation.SourceImageSequence
        assert {int(s.ReferencedFrameNumber) for s in sources} == expect, j
        assert {str(s.ReferencedSOPInstanceUID) for s in sources} == {geo["uid"]}
        assert sources[0].PurposeOfReferenceCodeSequence[0].CodeValue == "121322"


def test_reread_as_a_volume(thin) -> None:
    geo, out, _ = thin
    with open_reader(out) as reader:
        meta = reader.meta
        assert meta.frames == NEW and meta.extra["layout"] == "multiframe"
        dz, dr, dc, thickness = volume_geometry(meta)
        assert math.isclose(dz, STEP, rel_tol=1e-6) and math.isclose(thickness, STEP)
        assert (dr, dc) == geo["pixel_spacing"]
        np.testing.assert_allclose(meta.medical.positions[-1], geo["positions"][-1],
                                   atol=1e-4)  # the last new frame on the last old one


def test_dciodvfy_finds_no_new_errors(thin) -> None:
    require_tool("dciodvfy")
    geo, out, _ = thin
    new = dciodvfy_errors(out) - dciodvfy_errors(geo["path"])
    assert not new, f"{out}: new dciodvfy errors: {sorted(new)}"


def test_same_pixels_as_the_single_frame_series_path(tmp_path) -> None:
    """The enhanced file and the same volume as a folder series, through one engine."""
    geo = thick_enhanced(tmp_path)
    series = enhanced_as_series(geo["path"], tmp_path)
    assert _upscale(geo["path"], tmp_path / "thin.dcm") == 0
    assert _upscale(series, tmp_path / "thin") == 0
    frames = pydicom.dcmread(tmp_path / "thin.dcm").pixel_array
    slices = sorted((tmp_path / "thin").iterdir())
    assert len(slices) == NEW
    for j, path in enumerate(slices):
        ds = pydicom.dcmread(path)
        np.testing.assert_allclose(
            [float(v) for v in ds.ImagePositionPatient],
            [float(v) for v in pydicom.dcmread(tmp_path / "thin.dcm").
             PerFrameFunctionalGroupsSequence[j].PlanePositionSequence[0].ImagePositionPatient],
            atol=1e-6)
        np.testing.assert_array_equal(ds.pixel_array, frames[j], err_msg=f"slice {j}")
    assert frames.std() > 0


def test_rle_output_decodes_to_the_uncompressed_frames(thin, tmp_path) -> None:
    geo, _, ds = thin
    with open_reader(geo["path"]) as reader:
        meta = through_plane_metadata(reader.meta, FACTOR, NEW)
    from io_adapters.base import Window

    writer = DicomWriter(tmp_path / "rle.dcm", meta, transfer_syntax="rle")
    for j in range(NEW):
        writer.write(ds.pixel_array[j][None], Window(0, 0, 20, 24), frame=j)
    rle = pydicom.dcmread(writer.commit())
    assert rle.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
    np.testing.assert_array_equal(rle.pixel_array, ds.pixel_array)


def test_a_multiframe_file_without_per_frame_groups_is_refused(tmp_path) -> None:
    geo = thick_enhanced(tmp_path)
    with open_reader(geo["path"]) as reader:
        meta = through_plane_metadata(reader.meta, FACTOR, NEW)
    header = meta.extra["datasets"][0].copy()
    del header.PerFrameFunctionalGroupsSequence
    meta.extra["datasets"] = (header,)
    with pytest.raises(InvalidDataError, match=r"enhanced_oblique.dcm: a multi-frame file "
                       r"without PerFrameFunctionalGroupsSequence .* write NIfTI"):
        DicomWriter(tmp_path / "thin.dcm", meta)
    assert not (tmp_path / "thin.dcm").exists()


def test_zssr_run_writes_the_same_enhanced_file_as_upscale(thin, tmp_path) -> None:
    """``zssr run`` names it ``<name>_z2p5.dcm``, computed as ``zssr upscale`` does."""
    from pipeline.cli.main import main

    geo, _, ds = thin
    out = tmp_path / "r"
    assert main(["run", str(geo["path"]), "--out", str(out), "--through-plane", "--scale-z",
                 str(FACTOR), "--scheduler", "synchronous", *TINY]) == 0
    written = sorted((out / "outputs").iterdir())
    assert [p.name for p in written] == [geo["path"].stem + "_z2p5.dcm"], written
    run = pydicom.dcmread(written[0])
    assert str(run.SOPClassUID) == ENHANCED_MR and int(run.NumberOfFrames) == NEW
    np.testing.assert_array_equal(run.pixel_array, ds.pixel_array)


def test_a_position_dimension_is_renumbered_like_the_stack(tmp_path) -> None:
    """A Dimension Index Sequence that indexes ImagePositionPatient (Plane Position)
    instead of InStackPositionNumber: its index counts the new frames, in the source's
    direction (here the file stores the last slice first: 11, 10, ... 1)."""
    from io_adapters.base import Window

    geo = thick_enhanced(tmp_path, oblique=False, descending=True)
    ds = pydicom.dcmread(geo["path"])
    ds.DimensionIndexSequence[1].DimensionIndexPointer = 0x00200032
    ds.DimensionIndexSequence[1].FunctionalGroupPointer = 0x00209113
    ds.save_as(geo["path"])
    with open_reader(geo["path"]) as reader:
        meta = through_plane_metadata(reader.meta, FACTOR, NEW)
    writer = DicomWriter(tmp_path / "thin.dcm", meta)
    for j in range(NEW):
        writer.write(np.full((1, 24, 20), j, np.uint16), Window(0, 0, 20, 24), frame=j)
    out = pydicom.dcmread(writer.commit())
    for j, item in enumerate(_frames(out)):
        assert list(item.FrameContentSequence[0].DimensionIndexValues) == [1, NEW - j], j
    assert [int(v) for v in out.pixel_array[:, 0, 0]] == list(range(NEW))
