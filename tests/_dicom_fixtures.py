"""Small DICOM inputs built in a test's tmp_path from tests/data/dicom (shared by the tests)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.valuerep import format_number_as_ds

DICOM = Path(__file__).resolve().parent / "data" / "dicom"
SERIES_NAMES = ("IM_c.dcm", "IM_a.dcm", "IM_b.dcm")  # anatomical order (see make_dicom_series.py)

# Errors dciodvfy reports although PS3.3 allows the attribute: the MR Pulse Sequence and
# Bulk Motion Synchronization attributes are "Required if Image Type Value 1 is ORIGINAL or
# MIXED. May be present otherwise." (C.8.13.4), but dicom3tools' conditions lack "may be
# present otherwise", so every DERIVED Enhanced MR keeping them is flagged.
DCIODVFY_FALSE_POSITIVES = re.compile(
    r"Attribute present when condition unsatisfied .*Module=<(MRPulseSequence|"
    r"BulkMotionSynchronization)>")


def enhanced_with_groups(folder: Path) -> Path:
    """emri_small.dcm plus functional groups: shared spacing/orientation, per-frame
    position and rescale (slope 1 + 0.5 i, intercept -i) and MR frame type."""
    ds = pydicom.dcmread(DICOM / "emri_small.dcm")
    measures = Dataset()
    measures.PixelSpacing = [0.5, 0.6]
    measures.SliceThickness = 1.2
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    items = []
    for i in range(int(ds.NumberOfFrames)):
        plane, rescale, frame_type = Dataset(), Dataset(), Dataset()
        plane.ImagePositionPatient = [-10.0, -20.0, 1.2 * i]
        rescale.RescaleSlope = 1 + 0.5 * i
        rescale.RescaleIntercept = -i
        rescale.RescaleType = "US"
        frame_type.FrameType = ["ORIGINAL", "PRIMARY", "T1", "NONE"]
        item = Dataset()
        item.PlanePositionSequence = Sequence([plane])
        item.PixelValueTransformationSequence = Sequence([rescale])
        item.MRImageFrameTypeSequence = Sequence([frame_type])
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(items)
    path = folder / "enhanced.dcm"
    ds.save_as(path)
    return path


def copy_series(folder: Path) -> Path:
    out = folder / "series"
    shutil.copytree(DICOM / "series", out)
    return out


def add_slice(series: Path, name: str, *, z: float, **changes: object) -> Path:
    """A new slice in ``series`` cloned from IM_c at height ``z`` with ``changes``."""
    ds = pydicom.dcmread(series / "IM_c.dcm")
    position = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [position[0], position[1], z]
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(series / name)
    return series / name


def upsample(array: np.ndarray, sy: int, sx: int) -> np.ndarray:
    """Nearest-neighbour upsampling of ``(bands, rows, cols)`` stored values."""
    return np.repeat(np.repeat(array, sy, axis=1), sx, axis=2)


def dciodvfy_errors(path: Path) -> set[str]:
    """dciodvfy errors of one file, normalised (values, lengths and paths stripped).

    Raises ``RuntimeError`` when dciodvfy did not verify the file: a missing or crashed
    tool, no output, or a file it could not read ("Abort", "dataset read failed").  It
    exits 0 for a clean file and 1 when it reports errors, so the exit status alone does
    not tell; an empty error set from a tool that never ran must not pass as "no errors".
    """
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False,
                         timeout=120)
    text = run.stdout + run.stderr
    unread = ("Abort -" in text or "Dicom dataset read failed" in text
              or "Information Object Not found" in text)
    if run.returncode not in (0, 1) or not text.strip() or unread:
        raise RuntimeError(f"dciodvfy did not verify {path} (exit {run.returncode}): "
                           f"{text.strip()[:300]!r}")
    errors = set()
    for line in text.splitlines():
        if not line.startswith("Error") or DCIODVFY_FALSE_POSITIVES.search(line):
            continue
        line = line.replace(str(path), "<file>")
        line = re.sub(r" = <[^>]*>", "", line)
        line = re.sub(r"\d+ dec", "N dec", line)
        errors.add(" ".join(line.split()))
    return errors


#: Orientation of the oblique thick series: the patient axes turned 0.5 rad about
#: (1, 2, 3), so the slice normal is none of x, y, z and a wrong normal cannot pass.
OBLIQUE_AXIS, OBLIQUE_ANGLE = (1.0, 2.0, 3.0), 0.5
THICK_NAMES = ("S3.dcm", "S0.dcm", "S4.dcm", "S1.dcm", "S2.dcm")  # slice k in "S{k}.dcm"


def rotation(axis: tuple[float, float, float], angle: float) -> np.ndarray:
    """Rodrigues' rotation matrix: its columns are the row, column and normal directions."""
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def thick_series(folder: Path, *, oblique: bool = True, rows: int = 24, cols: int = 20,
                 spacing: float = 3.0, pixel_spacing: tuple[float, float] = (0.7, 0.8),
                 origin: tuple[float, float, float] = (-12.5, 30.25, 101.0)) -> dict:
    """A thick-slice CT series of ``len(THICK_NAMES)`` slices from CT_small.dcm's header.

    Slice k holds a ``rows x cols`` window of CT_small's pixels moved by 3 k rows (distinct,
    real CT values) at ``origin + k * spacing * normal``; SliceThickness and
    SpacingBetweenSlices are ``spacing``; UIDs are seeded.  File names are not in slice
    order.  Returns the folder and the geometry the test checks against: ``origin``,
    ``row``/``col``/``normal`` (unit vectors), ``spacing``, ``pixel_spacing``, ``uids``
    (SOP Instance UIDs in slice order), ``series_uid``, ``frame_uid``, ``series_number``.
    """
    seed = f"zssr-pipeline thick_series oblique={oblique}"
    axes = rotation(OBLIQUE_AXIS, OBLIQUE_ANGLE) if oblique else np.eye(3)
    row, col, normal = axes[:, 0], axes[:, 1], axes[:, 2]
    source = pydicom.dcmread(DICOM / "CT_small.dcm")
    pixels = source.pixel_array
    out = folder / ("thick_oblique" if oblique else "thick_axial")
    out.mkdir()
    series_uid = pydicom.uid.generate_uid(entropy_srcs=[seed, "series"])
    uids = [pydicom.uid.generate_uid(entropy_srcs=[seed, str(k)]) for k in range(5)]
    for name in THICK_NAMES:
        k = int(name[1])
        ds = pydicom.dcmread(DICOM / "CT_small.dcm")
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, uids[k]
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.Rows, ds.Columns = rows, cols
        ds.PixelSpacing = list(pixel_spacing)
        ds.ImageOrientationPatient = [format_number_as_ds(float(v)) for v in (*row, *col)]
        position = np.asarray(origin) + k * spacing * normal
        ds.ImagePositionPatient = [format_number_as_ds(float(v)) for v in position]
        ds.SliceLocation = format_number_as_ds(float(np.dot(position, normal)))
        ds.SliceThickness = ds.SpacingBetweenSlices = spacing
        ds.PixelData = np.ascontiguousarray(
            pixels[30 + 3 * k:30 + 3 * k + rows, 50:50 + cols]).tobytes()
        ds.save_as(out / name, enforce_file_format=True)
    return {"path": out, "origin": np.asarray(origin, float), "row": row, "col": col,
            "normal": normal, "spacing": spacing, "pixel_spacing": pixel_spacing,
            "uids": uids, "series_uid": series_uid, "frame_uid": str(source.FrameOfReferenceUID),
            "series_number": int(source.SeriesNumber)}


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def thick_enhanced(folder: Path, *, oblique: bool = True, descending: bool = False,
                   rows: int = 24, cols: int = 20, spacing: float = 3.0,
                   pixel_spacing: tuple[float, float] = (0.7, 0.8),
                   origin: tuple[float, float, float] = (-12.5, 30.25, 101.0)) -> dict:
    """A thick-slice Enhanced MR file of 5 frames from emri_small.dcm's header.

    Slice k (``origin + k * spacing * normal``, the orientation of :func:`thick_series`)
    holds a ``rows x cols`` window of emri_small's frame 2 k (12-bit MR values); the file
    stores the slices in order, or from the last to the first with ``descending``.  The
    functional groups are what a scanner writes: shared Pixel Measures (thickness =
    ``spacing``), Plane Orientation, Pixel Value Transformation and MR Image Frame Type;
    per frame Plane Position and Frame Content (StackID "1", InStackPositionNumber k + 1,
    DimensionIndexValues ``[1, k + 1]`` for the Dimension Index Sequence (StackID,
    InStackPositionNumber)).  UIDs are seeded.  Returns the path and the geometry the
    tests check against (``positions`` in file frame order, ``uid``, ``frame_uid``,
    ``series_uid``, ``series_number``, ``stack``: the slice k of each frame).
    """
    seed = f"zssr-pipeline thick_enhanced oblique={oblique} descending={descending}"
    axes = rotation(OBLIQUE_AXIS, OBLIQUE_ANGLE) if oblique else np.eye(3)
    row, col, normal = axes[:, 0], axes[:, 1], axes[:, 2]
    ds = pydicom.dcmread(DICOM / "emri_small.dcm")
    source = ds.pixel_array
    stack = [4 - i for i in range(5)] if descending else list(range(5))
    uid = lambda name: pydicom.uid.generate_uid(entropy_srcs=[seed, name])  # noqa: E731
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid("sop")
    ds.SeriesInstanceUID, ds.FrameOfReferenceUID = uid("series"), uid("frame of reference")
    ds.Manufacturer = ds.ManufacturerModelName = ds.DeviceSerialNumber = "zssr-fixture"
    ds.NumberOfFrames, ds.Rows, ds.Columns = 5, rows, cols
    ds.SpacingBetweenSlices = spacing
    ds.DimensionOrganizationSequence = Sequence([_item(DimensionOrganizationUID=uid("dims"))])
    ds.DimensionIndexSequence = Sequence([
        _item(DimensionOrganizationUID=uid("dims"), DimensionIndexPointer=pointer,
              FunctionalGroupPointer=0x00209111) for pointer in (0x00209056, 0x00209057)])
    frame_type = _item(FrameType=["ORIGINAL", "PRIMARY", "T1", "NONE"],
                       PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME",
                       VolumeBasedCalculationTechnique="NONE", ComplexImageComponent="MAGNITUDE",
                       AcquisitionContrast="T1")
    ds.SharedFunctionalGroupsSequence = Sequence([_item(
        PixelMeasuresSequence=Sequence([_item(PixelSpacing=list(pixel_spacing),
                                              SliceThickness=spacing)]),
        PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=[
            format_number_as_ds(float(v)) for v in (*row, *col)])]),
        PixelValueTransformationSequence=Sequence([_item(
            RescaleSlope=1, RescaleIntercept=0, RescaleType="US")]),
        MRImageFrameTypeSequence=Sequence([frame_type]))])
    positions, items = [], []
    for k in stack:
        position = np.asarray(origin) + k * spacing * normal
        positions.append(np.asarray([float(format_number_as_ds(float(v))) for v in position]))
        content = _item(FrameAcquisitionNumber=1, FrameReferenceDateTime="20000101120000",
                        FrameAcquisitionDateTime="20000101120000", FrameAcquisitionDuration=1.0,
                        StackID="1", InStackPositionNumber=k + 1, DimensionIndexValues=[1, k + 1])
        items.append(_item(
            FrameContentSequence=Sequence([content]),
            PlanePositionSequence=Sequence([_item(ImagePositionPatient=[
                format_number_as_ds(float(v)) for v in position])])))
    ds.PerFrameFunctionalGroupsSequence = Sequence(items)
    ds.PixelData = np.ascontiguousarray(np.stack(
        [source[2 * k, 20:20 + rows, 22:22 + cols] for k in stack])).tobytes()
    path = folder / ("enhanced_oblique.dcm" if oblique else "enhanced_axial.dcm")
    ds.save_as(path, enforce_file_format=True)
    return {"path": path, "positions": positions, "row": row, "col": col, "normal": normal,
            "spacing": spacing, "pixel_spacing": pixel_spacing, "uid": str(ds.SOPInstanceUID),
            "series_uid": str(ds.SeriesInstanceUID), "frame_uid": str(ds.FrameOfReferenceUID),
            "series_number": int(ds.SeriesNumber), "stack": stack}


def enhanced_as_series(path: Path, folder: Path) -> Path:
    """The frames of an enhanced file from :func:`thick_enhanced` as a folder of
    single-frame MR slices (MR_small.dcm's header) with the same stored values, pixel
    module, geometry and rescale: the same volume for the folder-series path."""
    enhanced = pydicom.dcmread(path)
    shared = enhanced.SharedFunctionalGroupsSequence[0]
    measures = shared.PixelMeasuresSequence[0]
    out = folder / "series"
    out.mkdir()
    series_uid = pydicom.uid.generate_uid(entropy_srcs=[str(path), "series"])
    for i, item in enumerate(enhanced.PerFrameFunctionalGroupsSequence):
        ds = pydicom.dcmread(DICOM / "MR_small.dcm")
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid(
            entropy_srcs=[str(path), str(i)])
        ds.SeriesInstanceUID, ds.InstanceNumber = series_uid, i + 1
        ds.FrameOfReferenceUID = enhanced.FrameOfReferenceUID
        ds.Rows, ds.Columns = enhanced.Rows, enhanced.Columns
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, enhanced.BitsStored, enhanced.HighBit
        ds.PixelRepresentation = enhanced.PixelRepresentation
        ds.PixelSpacing = measures.PixelSpacing
        ds.SliceThickness = ds.SpacingBetweenSlices = measures.SliceThickness
        ds.ImageOrientationPatient = shared.PlaneOrientationSequence[0].ImageOrientationPatient
        ds.ImagePositionPatient = item.PlanePositionSequence[0].ImagePositionPatient
        ds.PixelData = np.ascontiguousarray(enhanced.pixel_array[i]).tobytes()
        ds.save_as(out / f"F{i}.dcm", enforce_file_format=True)
    return out
