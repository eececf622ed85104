"""``zssr upscale --deidentify``: no planted identity survives, at any depth of nesting.

A copy of ``tests/data/dicom/CT_small.dcm`` gets patient identity, dates,
an institution, physicians, UIDs and private tags planted at the top level
and inside sequence items one, two and three levels deep (including an
``OriginalAttributesSequence`` holding a ``ModifiedAttributesSequence`` and a
``ReferencedPatientSequence``).  After the real CLI with ``--deidentify``, a
walk written here -- not the code under test -- visits every element at every
depth and looks for each planted value; the raw file bytes are searched too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pipeline.cli.main import main

DATA = Path(__file__).resolve().parent / "data"
TINY = ["--set", "train.max_iters=2", "--set", "net.depth=3", "--set", "net.width=4",
        "--set", "infer.back_projection_iters=0", "--set", "train.crop_size=16"]

NAME, PID, BIRTH = "Doe^Planted", "PLANTED-ID-4711", "19450312"
HOSPITAL, DOCTOR, PRIVATE = "Planted General Hospital", "Quack^Planted", "PLANTED-PRIVATE"
OTHER_NAME = "Secret^Reviewer"
PLANTED_TEXT = (NAME, PID, BIRTH, HOSPITAL, DOCTOR, PRIVATE, OTHER_NAME)


def _identity(item: Dataset, *, private_group: int) -> None:
    item.PatientName, item.PatientID, item.PatientBirthDate = NAME, PID, BIRTH
    item.InstitutionName, item.ReferringPhysicianName = HOSPITAL, DOCTOR
    block = item.private_block(private_group, "PLANTED CREATOR", create=True)
    block.add_new(0x01, "LO", PRIVATE)


def _modified_history() -> Sequence:
    """OriginalAttributesSequence > item > ModifiedAttributesSequence > item (identity)."""
    modified = Dataset()
    _identity(modified, private_group=0x0011)
    original = Dataset()
    original.ModifiedAttributesSequence = Sequence([modified])
    original.SourceOfPreviousValues = HOSPITAL
    return Sequence([original])


def _planted(src: Path, dst: Path) -> dict[str, str]:
    """Copy ``src`` to ``dst`` with identity planted at levels 0..3; returns its UIDs."""
    ds = pydicom.dcmread(src)
    uids = {k: str(ds[k].value) for k in ("StudyInstanceUID", "SeriesInstanceUID",
                                          "SOPInstanceUID", "FrameOfReferenceUID")}
    _identity(ds, private_group=0x0009)
    ds.OriginalAttributesSequence = _modified_history()
    patient_ref = Dataset()
    patient_ref.ReferencedSOPInstanceUID = uids["SOPInstanceUID"]
    _identity(patient_ref, private_group=0x0013)
    ds.ReferencedPatientSequence = Sequence([patient_ref])
    level3 = Dataset()  # kept sequences, cleaned item by item
    _identity(level3, private_group=0x0015)
    level3.StudyInstanceUID = uids["StudyInstanceUID"]
    level3.DateOfSecondaryCapture = BIRTH      # a date the profile subset does not name
    level3.SecondaryReviewerName = OTHER_NAME  # a person name it does not name
    level3.SpecimenUID = uids["FrameOfReferenceUID"]  # a UID it does not name
    level3.OriginalAttributesSequence = _modified_history()
    level3.CodeValue, level3.CodingSchemeDesignator, level3.CodeMeaning = "T-1", "SRT", "x"
    level2 = Dataset()
    _identity(level2, private_group=0x0017)
    level2.CodeValue, level2.CodingSchemeDesignator, level2.CodeMeaning = "T-2", "SRT", "y"
    level2.PrimaryAnatomicStructureSequence = Sequence([level3])
    level1 = Dataset()
    _identity(level1, private_group=0x0019)
    level1.CodeValue, level1.CodingSchemeDesignator, level1.CodeMeaning = "T-3", "SRT", "z"
    level1.AnatomicRegionModifierSequence = Sequence([level2])
    ds.AnatomicRegionSequence = Sequence([level1])
    ds.save_as(dst, enforce_file_format=True)
    return uids


def _walk(ds: Dataset, depth: int = 0) -> Iterator[tuple[int, pydicom.DataElement]]:
    """Every element of ``ds`` and of every sequence item below it, with its depth."""
    for elem in ds:
        yield depth, elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _walk(item, depth + 1)


def _text(elem: pydicom.DataElement) -> str:
    if elem.VR == "SQ" or elem.tag == 0x7FE00010:
        return ""
    return str(elem.value)


def test_no_planted_identity_survives_at_any_depth(tmp_path: Path) -> None:
    src, out = tmp_path / "ct.dcm", tmp_path / "sr.dcm"
    uids = _planted(DATA / "dicom" / "CT_small.dcm", src)
    before = list(_walk(pydicom.dcmread(src)))
    assert max(d for d, _ in before) >= 4  # the plant really is nested that deep
    assert sum(NAME in _text(e) for _, e in before) >= 6
    assert main(["upscale", str(src), str(out), "--scale", "2", "--deidentify", "-q",
                 *TINY]) == 0

    ds = pydicom.dcmread(out)
    elements = list(_walk(ds))
    elements += [(0, e) for e in ds.file_meta]
    leaks = [(d, e.keyword or str(e.tag), _text(e)) for d, e in elements
             if any(p in _text(e) for p in (*PLANTED_TEXT, *uids.values()))]
    assert leaks == []
    assert [e.tag for _, e in elements if e.tag.is_private] == []
    raw = out.read_bytes()
    for planted in (*PLANTED_TEXT, *uids.values()):
        assert planted.encode() not in raw, planted

    # Type 2 attributes stay, empty; the image is still one consistent object.
    assert "PatientName" in ds and not ds.PatientName and not ds.PatientID
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    new_study = ds.StudyInstanceUID
    assert new_study and new_study != uids["StudyInstanceUID"]
    nested = ds.AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0]
    level3 = nested.PrimaryAnatomicStructureSequence[0]
    assert level3.StudyInstanceUID == new_study  # replaced consistently, not dropped
    assert level3.CodeValue == "T-1"  # kept sequences keep their coded content
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SOPClassUID == pydicom.dcmread(src).SOPClassUID  # registered UIDs untouched
    assert (ds.Rows, ds.Columns) == (256, 256)
