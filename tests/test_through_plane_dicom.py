"""Through-plane SR to a derived DICOM series (issue 18 points 2 and 6).

A thick-slice CT series (tests/_dicom_fixtures.thick_series: 5 slices 3 mm apart, one
oblique and one axial orientation, file names out of order) goes through
``zssr upscale --through-plane --scale-z 2.5`` with a tiny net.  The output folder is read
back with pydicom and checked against geometry computed here from the fixture's own
rotation matrix, never from the code under test: slice k at ``origin + k * 1.2 mm * normal``
to 1e-4 mm, spacing and thickness 1.2 mm, UIDs, series number, references to the two old
slices each new one lies between; dciodvfy finds no new errors against the source slice
the output file was derived from; our own reader sees the right spacing and orientation.
"""

from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest
from _dicom_fixtures import dciodvfy_errors, enhanced_with_groups, thick_series
from conftest import require_tool

from io_adapters.detect import open_reader
from io_adapters.dicom_writer import DicomWriter
from io_adapters.errors import InvalidDataError, WriteError
from pipeline.image.volume import through_plane_metadata, volume_geometry

FACTOR, NEW_SLICES = 2.5, 11  # (5 - 1) * 2.5 + 1 slices, 3 mm / 2.5 = 1.2 mm apart
TINY = ["--set", "train.max_iters=2", "--set", "train.crop_size=16", "--set", "net.depth=2",
        "--set", "net.width=4", "--set", "train.eval_windows=1", "-q"]


def _upscale(series, out, *extra: str) -> int:
    from pipeline.cli.main import main

    return main(["upscale", str(series), str(out), "--through-plane", *extra, *TINY])


@pytest.fixture(scope="module", params=[True, False], ids=["oblique", "axial"])
def thin(request, tmp_path_factory):
    """(fixture geometry, output folder, output datasets in file-name order)."""
    geo = thick_series(tmp_path_factory.mktemp("tp"), oblique=request.param)
    out = geo["path"].parent / "thin"
    assert _upscale(geo["path"], out, "--scale-z", str(FACTOR)) == 0
    files = sorted(out.iterdir())
    return geo, out, [pydicom.dcmread(f) for f in files]


def test_positions_lie_on_the_independent_grid(thin) -> None:
    geo, _, slices = thin
    assert len(slices) == NEW_SLICES
    assert [int(ds.InstanceNumber) for ds in slices] == list(range(1, NEW_SLICES + 1))
    step = geo["spacing"] / FACTOR
    for k, ds in enumerate(slices):
        expect = geo["origin"] + k * step * geo["normal"]
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], expect,
                                   atol=1e-4, err_msg=f"slice {k}")
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient],
                                   [*geo["row"], *geo["col"]], atol=1e-9)
        assert math.isclose(float(ds.SliceThickness), step, rel_tol=1e-9)
        assert math.isclose(float(ds.SpacingBetweenSlices), step, rel_tol=1e-9)
        assert math.isclose(float(ds.SliceLocation),
                            float(np.dot(geo["origin"], geo["normal"])) + k * step,
                            abs_tol=1e-4)
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], geo["pixel_spacing"])
        assert ds.pixel_array.shape == (24, 20) and ds.pixel_array.dtype == np.int16


def test_identity_description_and_references(thin) -> None:
    geo, _, slices = thin
    sops = [str(ds.SOPInstanceUID) for ds in slices]
    assert len(set(sops)) == NEW_SLICES and not set(sops) & set(geo["uids"])
    assert {str(ds.SeriesInstanceUID) for ds in slices} != {geo["series_uid"]}
    assert len({str(ds.SeriesInstanceUID) for ds in slices}) == 1
    for k, ds in enumerate(slices):
        assert str(ds.file_meta.MediaStorageSOPInstanceUID) == sops[k]
        assert str(ds.FrameOfReferenceUID) == geo["frame_uid"]
        assert int(ds.SeriesNumber) == geo["series_number"] + 1000
        assert ds.SeriesDescription.startswith("ZSSR thin 1.2mm x2.5")
        assert "through-plane x2.5" in ds.DerivationDescription
        assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        t = k / FACTOR  # old slices the new one lies between (one when on an old slice)
        expect = {geo["uids"][math.floor(t)], geo["uids"][math.ceil(t)]}
        for seq in (ds.SourceImageSequence, ds.ReferencedImageSequence):
            assert {str(item.ReferencedSOPInstanceUID) for item in seq} == expect, k
            assert {str(item.ReferencedSOPClassUID) for item in seq} == {str(ds.SOPClassUID)}
        purpose = ds.SourceImageSequence[0].PurposeOfReferenceCodeSequence[0]
        assert purpose.CodeValue == "121322"


def test_reread_as_a_volume(thin) -> None:
    geo, out, _ = thin
    with open_reader(out) as reader:
        meta = reader.meta
        assert meta.frames == NEW_SLICES and meta.extra["layout"] == "series"
        dz, dr, dc, thickness = volume_geometry(meta)
        assert math.isclose(dz, geo["spacing"] / FACTOR, rel_tol=1e-6)
        assert math.isclose(thickness, dz, rel_tol=1e-9)
        assert (dr, dc) == geo["pixel_spacing"]
        np.testing.assert_allclose(meta.medical.orientation, [*geo["row"], *geo["col"]],
                                   atol=1e-9)
        np.testing.assert_allclose(meta.medical.positions[-1], geo["origin"] + 4 * geo[
            "spacing"] * geo["normal"], atol=1e-4)  # the last new slice on the last old one
        assert reader.read(frame=NEW_SLICES - 1).shape == (1, 24, 20)


def test_dciodvfy_finds_no_new_errors(thin) -> None:
    require_tool("dciodvfy")
    geo, _, slices = thin
    by_uid = {}
    for path in geo["path"].iterdir():
        by_uid[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path
    for k, ds in enumerate(slices):
        after = geo["path"].parent / "thin" / f"IM{k + 1:04d}.dcm"
        assert str(pydicom.dcmread(after).SOPInstanceUID) == str(ds.SOPInstanceUID)
        before = by_uid[geo["uids"][round(k / FACTOR)]]  # the header it was derived from
        new = dciodvfy_errors(after) - dciodvfy_errors(before)
        assert not new, f"{after}: new dciodvfy errors: {sorted(new)}"


# ------------------------------------------------------------------ the writer alone


def _thin_meta(series):
    with open_reader(series) as reader:
        return through_plane_metadata(reader.meta, FACTOR, NEW_SLICES)


def test_writer_is_atomic(tmp_path, monkeypatch) -> None:
    """A failure on the 4th slice leaves no folder and no temporary behind."""
    import io_adapters.dicom_writer as dw

    meta = _thin_meta(thick_series(tmp_path)["path"])
    real = dw.set_slice_attributes

    def failing(ds, j, *args, **kwargs):
        if j == 3:
            raise OSError("disk full")
        real(ds, j, *args, **kwargs)

    monkeypatch.setattr(dw, "set_slice_attributes", failing)
    before = set(tmp_path.iterdir())
    writer = DicomWriter(tmp_path / "thin", meta)
    for k in range(3):  # saved to disk as they arrive, in a temporary
        writer.write(np.zeros((1, 24, 20), np.int16), _full(meta), frame=k)
    assert not (tmp_path / "thin").exists()
    with pytest.raises(WriteError, match="disk full"):
        writer.write(np.zeros((1, 24, 20), np.int16), _full(meta), frame=3)
    assert set(tmp_path.iterdir()) == before


def _full(meta):
    from io_adapters.base import Window

    return Window(0, 0, meta.cols, meta.rows)


def test_multiframe_input_with_per_frame_rescales_is_refused(tmp_path) -> None:
    """Per-frame rescales are refused; without them the enhanced file is written as one
    enhanced file (tests/test_through_plane_enhanced.py), not as a folder series."""
    path = enhanced_with_groups(tmp_path)  # per-frame rescales: refused for a volume
    with open_reader(path) as reader, pytest.raises(
            InvalidDataError, match=r"enhanced.dcm \(frame 2\): RescaleSlope/Intercept 1.5/-1"):
        through_plane_metadata(reader.meta, 2.0, 19)
    ds = pydicom.dcmread(path)
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.PixelValueTransformationSequence
    ds.save_as(path)
    with open_reader(path) as reader:
        meta = through_plane_metadata(reader.meta, 2.0, 19)
    with pytest.raises(WriteError, match="thin: is a folder; give a .dcm file name"):
        (tmp_path / "thin").mkdir()
        DicomWriter(tmp_path / "thin", meta)
    DicomWriter(tmp_path / "thin.dcm", meta).abort()


# ------------------------------------------------------------------ bad input (issue 18.6)


def _edit(series, name, **changes):
    ds = pydicom.dcmread(series / name)
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(series / name)


def _tilted(series):
    for k in range(5):  # each slice 0.5 mm further along the row direction: a gantry tilt
        ds = pydicom.dcmread(series / f"S{k}.dcm")
        row = np.array([float(v) for v in ds.ImageOrientationPatient[:3]])
        ds.ImagePositionPatient = [float(v) for v in
                                   np.array(ds.ImagePositionPatient, float) + 0.5 * k * row]
        ds.save_as(series / f"S{k}.dcm")


def _duplicate(series):
    ds = pydicom.dcmread(series / "S1.dcm")  # S1's position under another UID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(series / "dup.dcm")


def _single(series):
    for k in range(1, 5):
        (series / f"S{k}.dcm").unlink()


def _no_spacing(series):
    for k in range(5):
        _edit(series, f"S{k}.dcm", PixelSpacing=None)


BAD = {
    "mixed orientations": (lambda s: _edit(s, "S2.dcm", ImageOrientationPatient=[
        0, 1, 0, 0, 0, -1]), "S2.dcm has ImageOrientationPatient"),
    "duplicate positions": (_duplicate, "share the position"),
    "a gap": (lambda s: (s / "S2.dcm").unlink(), "irregular slice spacing"),
    "a single slice": (_single, "has 1 slice"),
    "no pixel spacing": (_no_spacing, "no pixel spacing"),
    "zero pixel spacing": (lambda s: _edit(s, "S3.dcm", PixelSpacing=[0, 0.8]),
                           "S3.dcm: PixelSpacing \\[0.0, 0.8\\] is not two positive"),
    "gantry tilt": (_tilted, "S4.dcm: slice lies .* off the slice normal"),
    "rescale differs": (lambda s: _edit(s, "S1.dcm", RescaleIntercept=-1000),
                        "S1.dcm: RescaleSlope/Intercept 1/-1000"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_series_is_one_line_naming_the_file(tmp_path, capsys, case) -> None:
    import re

    series = thick_series(tmp_path)["path"]
    spoil, message = BAD[case]
    spoil(series)
    out = tmp_path / "thin"
    rc = _upscale(series, out, "--scale-z", "2")
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1, err
    assert re.search(message, err) and str(series) in err, err
    assert not out.exists()


def test_oblique_series_to_nifti_affine(tmp_path) -> None:
    """The same grid through NIfTI: nibabel's affine maps voxel (i, j, k) to the
    independently computed LPS point, turned to RAS."""
    import nibabel as nib

    geo = thick_series(tmp_path)
    out = tmp_path / "thin.nii.gz"
    assert _upscale(geo["path"], out, "--slice-spacing", "1.2") == 0
    img = nib.load(out)
    assert img.shape == (20, 24, NEW_SLICES)
    dr, dc = geo["pixel_spacing"]
    for i, j, k in [(0, 0, 0), (19, 23, 10), (7, 11, 4)]:
        lps = geo["origin"] + i * dc * geo["row"] + j * dr * geo["col"] + k * 1.2 * geo["normal"]
        np.testing.assert_allclose((img.affine @ [i, j, k, 1])[:3], lps * [-1, -1, 1],
                                   atol=1e-4)
    np.testing.assert_allclose(img.header.get_sform(), img.header.get_qform(), atol=1e-5)
