"""Slice and in-plane metadata scaling of volumes, against values computed here.

Unit tests (no pixels, no training) for the through-plane DICOM rule
(``io_adapters._dicom_slices.scale_dicom_slices``) and the NIfTI affine rules
(``io_adapters.nifti.scale_nifti_metadata`` / ``scale_nifti_slices``), written to kill
their mutants (issue 14; BENCHMARKS.md section 9).  Expected positions and affines are
built from the geometry by hand, never by the function under test.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from io_adapters._dicom_frames import DicomFrame
from io_adapters._dicom_slices import (
    _code,
    _reference,
    scale_dicom_slices,
    set_slice_attributes,
    slice_file_names,
)
from io_adapters.base import MedicalInfo, Metadata
from io_adapters.errors import InvalidDataError
from io_adapters.nifti import scale_nifti_metadata, scale_nifti_slices

C, S = math.cos(0.4), math.sin(0.4)
ORIENT = (C, S, 0.0, 0.0, 0.0, -1.0)  # an oblique (coronal-ish) plane
NORMAL = np.array([-S, C, 0.0])  # row x column, by hand: (S*-1 - 0, 0 - C*-1, 0)
P0 = np.array([12.0, -7.5, 30.0])
DZ = 3.0


def _frames(count: int = 5, *, step: float = DZ, slope: float = 1.0,
            intercept: float = 0.0) -> list[DicomFrame]:
    return [DicomFrame(source=k, index=0, position=tuple(float(v) for v in P0 + k * step * NORMAL),
                       orientation=ORIENT, spacing=(0.7, 0.9), slice_thickness=abs(step),
                       slope=slope, intercept=intercept) for k in range(count)]


def _meta(frames, *, fmt: str = "dicom", layout: str = "series") -> Metadata:
    sources = tuple(f"/in/IM{k:04d}.dcm" for k in range(len(frames)))
    med = MedicalInfo("CT", "MONOCHROME2", (0.7, 0.9), DZ, ORIENT,
                      positions=tuple(f.position for f in frames), sources=sources)
    return Metadata(path=Path("/in"), format=fmt, bands=1, rows=6, cols=5,
                    dtype=np.dtype(np.int16), frames=len(frames), medical=med,
                    extra={"dicom_frames": tuple(frames), "layout": layout})


@pytest.mark.parametrize("step", [DZ, -DZ], ids=["ascending", "descending"])
def test_thin_slices_lie_on_the_normal_at_the_new_spacing(step):
    out = scale_dicom_slices(_meta(_frames(step=step)), 2.5, 11)
    assert out.frames == 11 and (out.rows, out.cols) == (6, 5)
    new = out.extra["dicom_frames"]
    assert len(new) == 11
    for j, f in enumerate(new):
        want = P0 + j * (step / 2.5) * NORMAL  # 1.2 mm apart, the first on the first slice
        np.testing.assert_allclose(f.position, want, atol=1e-9)
        assert all(type(v) is float for v in f.position)
        assert f.slice_thickness == pytest.approx(1.2, rel=1e-12)
        assert f.index == 0 and f.orientation == ORIENT and f.spacing == (0.7, 0.9)
        assert f.source == min(round(j / 2.5 + 1e-12), 4)  # the nearest old slice's file
    assert out.medical.positions == tuple(f.position for f in new)
    assert out.medical.slice_thickness == pytest.approx(1.2, rel=1e-12)
    tp = out.extra["through_plane"]
    assert tp["factor"] == 2.5 and type(tp["factor"]) is float
    assert tp["spacing"] == pytest.approx(1.2) and tp["old_spacing"] == pytest.approx(DZ)
    # new slice j at old index j / 2.5: on an old slice -> that one, else the two around it
    assert tp["references"][:6] == ((0,), (0, 1), (0, 1), (1, 2), (1, 2), (2,))
    assert tp["references"][10] == (4,)
    assert out.extra["layout"] == "series"  # the rest of extra is kept


def test_slices_past_the_last_old_slice_refer_to_it_alone():
    out = scale_dicom_slices(_meta(_frames(3)), 2, 7)  # j = 5, 6 lie beyond old slice 2
    assert out.extra["through_plane"]["references"] == (
        (0,), (0, 1), (1,), (1, 2), (2,), (2,), (2,))
    # the nearest old slice's file; Python's round: the ties at 0.5 and 1.5 go to even
    assert [f.source for f in out.extra["dicom_frames"]] == [0, 0, 1, 2, 2, 2, 2]
    np.testing.assert_allclose(out.extra["dicom_frames"][6].position, P0 + 6 * 1.5 * NORMAL)


def test_integer_factor_and_two_slices():
    out = scale_dicom_slices(_meta(_frames(2)), 3, 4)
    assert out.extra["through_plane"]["factor"] == 3.0
    assert [f.slice_thickness for f in out.extra["dicom_frames"]] == pytest.approx([1.0] * 4)
    assert out.extra["through_plane"]["references"] == ((0,), (0, 1), (0, 1), (1,))


def test_a_slice_within_the_shear_tolerance_is_accepted():
    frames = _frames()
    row = np.array(ORIENT[:3])
    nudged = tuple(float(v) for v in np.array(frames[2].position) + 0.5 * (1e-3 * DZ) * row)
    frames[2] = replace(frames[2], position=nudged)
    out = scale_dicom_slices(_meta(frames), 2, 9)
    np.testing.assert_allclose(out.extra["dicom_frames"][8].position, P0 + 8 * 1.5 * NORMAL,
                               atol=1e-9)


@pytest.mark.parametrize("off", [2e-3 * DZ, 0.5])
def test_a_slice_off_the_normal_is_refused_naming_its_file(off):
    frames = _frames()
    row = np.array(ORIENT[:3])
    frames[3] = replace(frames[3], position=tuple(float(v) for v in
                                                  np.array(frames[3].position) + off * row))
    with pytest.raises(InvalidDataError, match=r"^/in/IM0003\.dcm: slice lies .* off the slice"):
        scale_dicom_slices(_meta(frames), 2, 9)


def test_refusal_in_a_multiframe_file_names_the_frame():
    frames = [replace(f, source=0, index=k) for k, f in enumerate(_frames())]
    frames[1] = replace(frames[1], position=tuple(float(v) for v in
                                                  np.array(frames[1].position) + [0, 0, 1.0]))
    meta = _meta(frames, layout="file")
    meta = replace(meta, medical=replace(meta.medical, sources=("/in/mf.dcm",)))
    with pytest.raises(InvalidDataError, match=r"^/in/mf\.dcm \(frame 2\): slice lies"):
        scale_dicom_slices(meta, 2, 9)


@pytest.mark.parametrize(("change", "message"), [
    ({"slope": 2.0}, r"^/in/IM0002\.dcm: RescaleSlope/Intercept 2/0, the first slice has 1/0"),
    ({"intercept": -1024.0}, r"^/in/IM0002\.dcm: RescaleSlope/Intercept 1/-1024, the first"),
])
def test_a_slice_with_another_rescale_is_refused(change, message):
    frames = _frames()
    frames[2] = replace(frames[2], **change)
    with pytest.raises(InvalidDataError, match=message):
        scale_dicom_slices(_meta(frames), 2, 9)


def test_a_rescale_within_isclose_is_accepted():
    frames = _frames()
    frames[4] = replace(frames[4], slope=1.0 + 1e-9, intercept=1e-9)
    assert scale_dicom_slices(_meta(frames), 2, 9).frames == 9


@pytest.mark.parametrize("missing", ["position", "orientation"])
def test_a_slice_without_geometry_is_refused(missing):
    frames = _frames()
    frames[1] = replace(frames[1], **{missing: None})
    with pytest.raises(InvalidDataError, match=r"^/in/IM0001\.dcm: no ImagePositionPatient"):
        scale_dicom_slices(_meta(frames), 2, 9)


def test_not_a_stack_is_refused():
    frames = [replace(f, position=tuple(P0)) for f in _frames()]
    with pytest.raises(InvalidDataError, match="share a position along the slice normal"):
        scale_dicom_slices(_meta(frames), 2, 9)


@pytest.mark.parametrize("case", ["format", "one slice", "no frames"])
def test_not_a_dicom_volume_is_refused(case):
    meta = _meta(_frames())
    if case == "format":
        meta = replace(meta, format="nifti")
    elif case == "one slice":
        meta = replace(meta, extra={**meta.extra, "dicom_frames": tuple(_frames(1))})
    else:
        meta = replace(meta, extra={})
    with pytest.raises(InvalidDataError, match=r"^/in: not a DICOM volume of at least 2"):
        scale_dicom_slices(meta, 2, 9)


# --- NIfTI ---------------------------------------------------------------------------

ROT = np.array([[0.0, -1.0, 0.0], [0.8, 0.0, -0.6], [0.6, 0.0, 0.8]])
AFFINE = np.eye(4)
AFFINE[:3, :3] = ROT * np.array([0.9, 0.8, 3.0])
AFFINE[:3, 3] = [10.0, -5.0, 7.0]
LPS = np.array([-1.0, -1.0, 1.0])


def _nifti(*, medical: bool = True) -> Metadata:
    med = MedicalInfo("MR", "MONOCHROME2", (0.8, 0.9), 3.0, None, rescale_slope=2.0,
                      rescale_intercept=-5.0, sources=("/in/v.nii",)) if medical else None
    return Metadata(path=Path("/in/v.nii"), format="nifti", bands=1, rows=11, cols=13,
                    dtype=np.dtype(np.int16), frames=4, medical=med,
                    extra={"nifti_affine": AFFINE.tolist(), "keep": 1})


def _centre(affine, i, j, k) -> np.ndarray:
    return (np.asarray(affine) @ np.array([i, j, k, 1.0]))[:3]


@pytest.mark.parametrize(("scale", "shape"), [((2, 3), (22, 39)), (1.5, (17, 20))])
def test_nifti_in_plane_voxel_centres(scale, shape):
    sy, sx = scale if isinstance(scale, tuple) else (scale, scale)
    out = scale_nifti_metadata(_nifti(), scale)
    assert (out.rows, out.cols, out.frames) == shape + (4,)
    new = np.asarray(out.extra["nifti_affine"])
    for i, j, k in [(0, 0, 0), (5, 3, 2), (shape[1] - 1, shape[0] - 1, 3)]:
        # new voxel centre (i, j) is old voxel ((i + 1/2) / sx - 1/2, (j + 1/2) / sy - 1/2)
        old = _centre(AFFINE, (i + 0.5) / sx - 0.5, (j + 0.5) / sy - 0.5, k)
        np.testing.assert_allclose(_centre(new, i, j, k), old, atol=1e-12)
    med = out.medical
    assert med.pixel_spacing == pytest.approx((0.8 / sy, 0.9 / sx), rel=1e-12)
    assert med.slice_thickness == pytest.approx(3.0)
    np.testing.assert_allclose(med.orientation, [*(ROT[:, 0] * LPS), *(ROT[:, 1] * LPS)],
                               atol=1e-12)
    for k in range(4):
        np.testing.assert_allclose(med.positions[k], _centre(new, 0, 0, k) * LPS, atol=1e-12)
    assert (med.rescale_slope, med.rescale_intercept, med.modality) == (2.0, -5.0, "MR")
    assert out.extra["keep"] == 1


def test_nifti_without_medical_info_gets_only_the_affine():
    out = scale_nifti_metadata(_nifti(medical=False), 2)
    assert out.medical is None and (out.rows, out.cols) == (22, 26)
    np.testing.assert_allclose(np.asarray(out.extra["nifti_affine"])[:3, 0], AFFINE[:3, 0] / 2)


def test_nifti_slices_keep_the_first_and_thin_the_step():
    out = scale_nifti_slices(_nifti(), 2.5, 9)
    assert (out.rows, out.cols, out.frames) == (11, 13, 9)
    new = np.asarray(out.extra["nifti_affine"])
    for k in (0, 3, 8):
        np.testing.assert_allclose(_centre(new, 4, 2, k), _centre(AFFINE, 4, 2, k / 2.5),
                                   atol=1e-12)
    assert out.medical.slice_thickness == pytest.approx(1.2)
    assert len(out.medical.positions) == 9
    assert (out.medical.rescale_slope, out.medical.rescale_intercept) == (2.0, -5.0)
    assert scale_nifti_slices(_nifti(), 1e-3, 1).frames == 1  # the smallest legal call


@pytest.mark.parametrize(("factor", "slices"), [(0, 9), (-2, 9), (math.nan, 9), (2, 0),
                                                (2, -1)])
def test_nifti_slices_refuse_a_bad_factor_or_count(factor, slices):
    message = (f"/in/v.nii: through-plane factor {factor} and {slices} slices: expected a "
               "factor > 0 and at least one slice")
    with pytest.raises(InvalidDataError, match=f"^{re.escape(message)}$"):
        scale_nifti_slices(_nifti(), factor, slices)


# --- exact refusals, file names and the per-slice attributes (issue 14, second pass) ------

def _refusal(meta: Metadata, factor: float = 2, slices: int = 9) -> str:
    with pytest.raises(InvalidDataError) as info:
        scale_dicom_slices(meta, factor, slices)
    return str(info.value)


def test_refusal_messages_in_full():
    frames = _frames()
    frames[2] = replace(frames[2], slope=2.0)
    assert _refusal(_meta(frames)) == (
        "/in/IM0002.dcm: RescaleSlope/Intercept 2/0, the first slice has 1/0; through-plane "
        "SR needs one rescale for the whole series")
    assert _refusal(replace(_meta(_frames()), format="nifti")) == (
        "/in: not a DICOM volume of at least 2 slices from DicomReader")
    frames = _frames()
    frames[1] = replace(frames[1], position=None)
    assert _refusal(_meta(frames)) == (
        "/in/IM0001.dcm: no ImagePositionPatient/ImageOrientationPatient; through-plane SR "
        "needs every slice's position and orientation")
    frames = [replace(f, position=tuple(P0)) for f in _frames()]
    assert _refusal(_meta(frames)) == (
        "/in: the first and last slices share a position along the slice normal; "
        "through-plane SR needs a stack")
    frames = _frames()
    frames[3] = replace(frames[3], position=tuple(float(v) for v in np.array(
        frames[3].position) + 0.5 * np.array(ORIENT[:3])))
    assert _refusal(_meta(frames)) == (
        "/in/IM0003.dcm: slice lies 0.5 mm off the slice normal of ImageOrientationPatient "
        "(gantry tilt or a shifted slice); through-plane SR needs slices stacked along "
        "their normal")


def test_refusal_names_the_volume_without_a_file_for_the_slice():
    frames = _frames()
    frames[1] = replace(frames[1], orientation=None)
    meta = _meta(frames)
    no_medical = replace(meta, medical=None)  # no sources at all: the volume's path
    assert _refusal(no_medical).startswith("/in: no ImagePositionPatient/")
    short = replace(meta, medical=replace(meta.medical, sources=("/in/a.dcm",)))
    assert _refusal(short).startswith("/in: no ImagePositionPatient/")  # source 1 of 1 file


def _axial(count: int, dz: float) -> list[DicomFrame]:
    return [DicomFrame(source=k, index=0, position=(0.0, 0.0, k * dz),
                       orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), spacing=(1.0, 1.0),
                       slice_thickness=dz) for k in range(count)]


def test_a_stack_thinner_than_1_mm_is_accepted():
    out = scale_dicom_slices(_meta(_axial(5, 0.5)), 2, 9)
    assert out.extra["through_plane"]["old_spacing"] == 0.5
    assert out.extra["dicom_frames"][8].position == (0.0, 0.0, 2.0)


def test_a_shift_exactly_at_the_shear_tolerance_is_accepted():
    frames = _axial(5, 1.0)
    limit = 1e-3 * 1.0 + 1e-4  # _SHEAR_TOLERANCE * |dz| + 1e-4: refused only above it
    frames[2] = replace(frames[2], position=(limit, 0.0, 2.0))
    assert scale_dicom_slices(_meta(frames), 2, 9).frames == 9
    frames[2] = replace(frames[2], position=(limit * 1.01, 0.0, 2.0))
    assert _refusal(_meta(frames)).startswith("/in/IM0002.dcm: slice lies 0.001111 mm off")


def test_the_normal_is_the_first_slices():
    frames = _frames()
    frames[1] = replace(frames[1], orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    out = scale_dicom_slices(_meta(frames), 2, 9)  # slice 1's own normal would be z
    np.testing.assert_allclose(out.extra["dicom_frames"][8].position, P0 + 4 * DZ * NORMAL,
                               atol=1e-9)


def test_a_new_slice_1e_6_off_an_old_one_lies_between_two():
    out = scale_dicom_slices(_meta(_frames(2)), 1e6, 2)  # slice 1 at old index 1e-6
    assert out.extra["through_plane"]["references"] == ((0,), (0, 1))


def test_new_slices_of_a_multiframe_file_restart_the_frame_index():
    frames = [replace(f, source=0, index=k) for k, f in enumerate(_frames())]
    out = scale_dicom_slices(_meta(frames, layout="file"), 2, 9)
    assert [f.index for f in out.extra["dicom_frames"]] == [0] * 9


def test_slice_file_names():
    assert slice_file_names(3) == ["IM0001.dcm", "IM0002.dcm", "IM0003.dcm"]
    assert slice_file_names(0) == []
    names = slice_file_names(10000)
    assert names[0] == "IM00001.dcm" and names[9999] == "IM10000.dcm"
    assert slice_file_names(9999)[-1] == "IM9999.dcm"


CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
OLD_UIDS = ("1.2.826.0.1.3680043.2.1.1", "1.2.826.0.1.3680043.2.1.2",
            "1.2.826.0.1.3680043.2.1.3")
LOCALIZER = "1.2.826.0.1.3680043.2.1.99"


def _headers(*, location: bool = True) -> tuple[Dataset, ...]:
    headers = []
    for k, uid in enumerate(OLD_UIDS):
        h = Dataset()
        h.SOPClassUID, h.SOPInstanceUID = CT_STORAGE, uid
        if location:
            h.SliceLocation = 10.0 + 3.0 * k
        headers.append(h)
    return tuple(headers)


def _slice_meta(headers: tuple[Dataset, ...]) -> Metadata:
    return Metadata(path=Path("/in"), format="dicom", bands=1, rows=6, cols=5,
                    dtype=np.dtype(np.int16), frames=5, medical=None,
                    extra={"datasets": headers, "through_plane": {
                        "factor": 2.0, "spacing": 1.5, "old_spacing": 3.0,
                        "references": ((0,), (0, 1), (1,), (1, 2), (2,))}})


def _items(sequence) -> list[tuple]:
    """(class UID, instance UID, purpose codes) of each item, as plain strings."""
    return [(item.get("ReferencedSOPClassUID"), item.get("ReferencedSOPInstanceUID"),
             [(c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning)
              for c in item.get("PurposeOfReferenceCodeSequence") or ()]
             if "PurposeOfReferenceCodeSequence" in item else None) for item in sequence]


PURPOSE = [("121322", "DCM", "Source image for image processing operation")]


def test_code_and_reference_items():
    code = _code("121322", "Source image for image processing operation")
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == PURPOSE[0]
    header = _headers()[1]
    assert _items([_reference(header, purpose=True)]) == [(CT_STORAGE, OLD_UIDS[1], PURPOSE)]
    plain = _reference(header, purpose=False)
    assert _items([plain]) == [(CT_STORAGE, OLD_UIDS[1], None)]
    assert "PurposeOfReferenceCodeSequence" not in plain


def test_slice_attributes_between_two_old_slices_keep_a_localizer():
    ds = Dataset()
    ds.SliceLocation = 10.0
    ds.ImagesInAcquisition = 3
    localizer, old, bare = Dataset(), Dataset(), Dataset()
    localizer.ReferencedSOPClassUID, localizer.ReferencedSOPInstanceUID = CT_STORAGE, LOCALIZER
    old.ReferencedSOPClassUID, old.ReferencedSOPInstanceUID = CT_STORAGE, OLD_UIDS[2]
    bare.ReferencedFrameNumber = 1  # no instance UID: not one of the old slices, kept
    ds.ReferencedImageSequence = Sequence([localizer, old, bare])
    set_slice_attributes(ds, 1, _slice_meta(_headers()))
    assert ds.InstanceNumber == 2
    assert (str(ds.SliceThickness), str(ds.SpacingBetweenSlices)) == ("1.5", "1.5")
    assert float(ds.SliceLocation) == 11.5  # 10 + 0.5 * (16 - 10) / 2
    assert ds.ImagesInAcquisition == 5
    assert _items(ds.SourceImageSequence) == [(CT_STORAGE, OLD_UIDS[0], PURPOSE),
                                              (CT_STORAGE, OLD_UIDS[1], PURPOSE)]
    refs = ds.ReferencedImageSequence
    assert _items(refs) == [(CT_STORAGE, LOCALIZER, None), (None, None, None),
                            (CT_STORAGE, OLD_UIDS[0], None), (CT_STORAGE, OLD_UIDS[1], None)]
    assert refs[1].ReferencedFrameNumber == 1


def test_slice_attributes_on_an_old_slice_without_locations():
    ds = Dataset()
    ds.SliceLocation = 10.0  # the old slices have none: the new one gets none either
    set_slice_attributes(ds, 2, _slice_meta(_headers(location=False)))
    assert "SliceLocation" not in ds and "ImagesInAcquisition" not in ds
    assert ds.InstanceNumber == 3
    assert _items(ds.SourceImageSequence) == [(CT_STORAGE, OLD_UIDS[1], PURPOSE)]
    assert _items(ds.ReferencedImageSequence) == [(CT_STORAGE, OLD_UIDS[1], None)]
    bare = Dataset()  # and none to remove: no error
    set_slice_attributes(bare, 4, _slice_meta(_headers(location=False)))
    assert "SliceLocation" not in bare
    assert _items(bare.ReferencedImageSequence) == [(CT_STORAGE, OLD_UIDS[2], None)]
