"""Through-plane DICOM: the thin-slice derived series of a thick-slice series.

Private helper of :mod:`io_adapters.dicom_writer`.  Two pieces, one per stage:

* :func:`scale_dicom_slices` (metadata, before any compute) places ``slices`` new slices
  ``dz / factor`` apart along the slice normal ``row x column`` of
  ``ImageOrientationPatient``, the first on the first old slice: new slice ``j`` lies at
  ``p0 + j * (dz / factor) * normal``, where ``dz`` is the mean step of the old positions
  projected on the normal.  Slices stacked off their normal (gantry tilt, a shifted
  slice), a missing orientation or slices with different rescales are refused with one
  line naming the file: the result would be placed or scaled wrongly.
* :func:`set_slice_attributes` (per output file, after :func:`derive_dataset`) writes
  what a new thin slice says about itself: ``InstanceNumber`` in slice order,
  ``SliceThickness`` and ``SpacingBetweenSlices`` of the new grid, ``SliceLocation``
  interpolated, and ``SourceImageSequence`` / ``ReferencedImageSequence`` naming the old
  slices the new one lies between (one when it lies on an old slice).  The series'
  new ``SeriesNumber``, description and dates are :func:`derive_dataset`'s, as for
  in-plane outputs (:mod:`io_adapters._dicom_derive`).
* :func:`derive_thin_frames` (an enhanced multi-frame input) writes the same thin slices
  as one multi-frame file of the source's SOP class: the per-frame functional groups of
  each new frame copied from its nearest old frame, then ``PlanePositionSequence`` on the
  new grid, ``PixelMeasuresSequence`` SliceThickness/SpacingBetweenSlices of the new grid,
  ``FrameContentSequence`` InStackPositionNumber and the slice's DimensionIndexValues
  renumbered 1..N in the source's direction, and each frame's
  ``DerivationImageSequence`` naming the old frames it lies between (ReferencedFrameNumber).

``meta.extra["through_plane"]`` carries the factor, the new spacing and those
references from the first stage to the second; it pickles.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.valuerep import format_number_as_ds

from ._dicom_derive import DerivedSeries, derive_dataset
from ._dicom_frames import DicomFrame, slice_normal
from .base import Metadata
from .errors import InvalidDataError

__all__ = ["check_thin_frames", "derive_thin_frames", "scale_dicom_slices",
           "set_slice_attributes", "slice_file_names"]

# A step off the slice normal larger than this share of the spacing is a tilted stack.
_SHEAR_TOLERANCE = 1e-3
_PURPOSE = ("121322", "Source image for image processing operation")  # DCM, CID 7202


def _where(meta: Metadata, frame: DicomFrame) -> str:
    """The file of ``frame``, and the frame number inside a multi-frame file."""
    sources = meta.medical.sources if meta.medical else ()
    where = sources[frame.source] if frame.source < len(sources) else str(meta.path)
    return where if meta.extra.get("layout") == "series" else f"{where} (frame {frame.index + 1})"


def _check_rescale(meta: Metadata, frames: tuple[DicomFrame, ...]) -> None:
    first = frames[0]
    for frame in frames[1:]:
        if not np.isclose(frame.slope, first.slope) or not np.isclose(frame.intercept,
                                                                      first.intercept):
            raise InvalidDataError(
                f"{_where(meta, frame)}: RescaleSlope/Intercept {frame.slope:g}/"
                f"{frame.intercept:g}, the first slice has {first.slope:g}/{first.intercept:g};"
                " through-plane SR needs one rescale for the whole series")


def scale_dicom_slices(meta: Metadata, factor: float, slices: int) -> Metadata:
    """Metadata of ``slices`` thin slices ``factor`` times closer (see the module doc)."""
    frames: tuple[DicomFrame, ...] = meta.extra.get("dicom_frames") or ()
    if meta.format != "dicom" or len(frames) < 2:
        raise InvalidDataError(f"{meta.path}: not a DICOM volume of at least 2 slices from "
                               "DicomReader")
    missing = next((f for f in frames if f.position is None or f.orientation is None), None)
    if missing is not None:
        raise InvalidDataError(
            f"{_where(meta, missing)}: no ImagePositionPatient/ImageOrientationPatient; "
            "through-plane SR needs every slice's position and orientation")
    _check_rescale(meta, frames)
    normal = slice_normal(frames[0].orientation)  # type: ignore[arg-type]
    positions = np.asarray([f.position for f in frames], dtype=float)
    depth = (positions - positions[0]) @ normal
    dz = float(depth[-1] / (len(frames) - 1))  # signed: a series is sorted along the normal
    off = positions - positions[0] - np.outer(depth, normal)
    worst = int(np.argmax(np.linalg.norm(off, axis=1)))
    if not abs(dz) > 0:
        raise InvalidDataError(f"{meta.path}: the first and last slices share a position "
                               "along the slice normal; through-plane SR needs a stack")
    if np.linalg.norm(off[worst]) > _SHEAR_TOLERANCE * abs(dz) + 1e-4:
        raise InvalidDataError(
            f"{_where(meta, frames[worst])}: slice lies {np.linalg.norm(off[worst]):.4g} mm "
            "off the slice normal of ImageOrientationPatient (gantry tilt or a shifted "
            "slice); through-plane SR needs slices stacked along their normal")
    step = abs(dz) / float(factor)
    new = []
    references = []
    for j in range(slices):
        t = j / float(factor)  # the new slice's place in old slice indices
        lo = min(int(np.floor(t + 1e-9)), len(frames) - 1)
        refs = (lo,) if abs(t - lo) < 1e-6 or lo + 1 >= len(frames) else (lo, lo + 1)
        references.append(refs)
        position = tuple(float(v) for v in positions[0] + j * (dz / factor) * normal)
        new.append(replace(frames[min(int(round(t)), len(frames) - 1)], index=0,
                           position=position, slice_thickness=step))  # type: ignore[arg-type]
    medical = replace(meta.medical, positions=tuple(f.position for f in new),
                      slice_thickness=step)
    extra = {**meta.extra, "dicom_frames": tuple(new), "through_plane": {
        "factor": float(factor), "spacing": step, "old_spacing": abs(dz),
        "references": tuple(references), "old_frames": tuple(f.index for f in frames)}}
    return replace(meta, frames=slices, medical=medical, extra=extra)


def slice_file_names(count: int) -> list[str]:
    """``IM0001.dcm`` ... in slice order (at least 4 digits, so names sort like slices)."""
    width = max(4, len(str(count)))
    return [f"IM{j + 1:0{width}d}.dcm" for j in range(count)]


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def _reference(header: Dataset, *, purpose: bool, frame: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = header.SOPClassUID
    item.ReferencedSOPInstanceUID = header.SOPInstanceUID
    if frame is not None:
        item.ReferencedFrameNumber = frame
    if purpose:
        item.PurposeOfReferenceCodeSequence = Sequence([_code(*_PURPOSE)])
    return item


def _slice_location(headers: tuple[Dataset, ...], t: float) -> float | None:
    """SliceLocation at old index ``t``, linear between the first and last old slice."""
    try:
        first, last = (float(h.SliceLocation) for h in (headers[0], headers[-1]))
    except (AttributeError, TypeError, ValueError):
        return None
    return first + t * (last - first) / (len(headers) - 1)


def set_slice_attributes(ds: Dataset, j: int, meta: Metadata) -> None:
    """The attributes of new slice ``j`` of a through-plane series (see the module doc)."""
    info = meta.extra["through_plane"]
    headers: tuple[Dataset, ...] = meta.extra["datasets"]
    spacing = format_number_as_ds(float(info["spacing"]))
    ds.InstanceNumber = j + 1
    ds.SliceThickness = spacing
    ds.SpacingBetweenSlices = spacing
    location = _slice_location(headers, j / info["factor"])
    if location is None:
        ds.pop("SliceLocation", None)
    else:
        ds.SliceLocation = format_number_as_ds(location)
    if "ImagesInAcquisition" in ds:
        ds.ImagesInAcquisition = meta.frames
    sources = [headers[i] for i in info["references"][j]]
    ds.SourceImageSequence = Sequence([_reference(h, purpose=True) for h in sources])
    uids = {str(h.SOPInstanceUID) for h in headers}
    kept = [item for item in ds.get("ReferencedImageSequence") or ()
            if str(item.get("ReferencedSOPInstanceUID", "")) not in uids]  # e.g. a localizer
    ds.ReferencedImageSequence = Sequence([*kept, *(_reference(h, purpose=False)
                                                    for h in sources)])



# Dimension indices that count slices along the stack: renumbered for the new frames.
_SLICE_DIMENSIONS = (0x00209057, 0x00200032)  # InStackPositionNumber, ImagePositionPatient
# A concatenation's parts are one instance split in files; the output is one whole file.
_CONCATENATION = ("ConcatenationUID", "InConcatenationNumber", "InConcatenationTotalNumber",
                  "ConcatenationFrameOffsetNumber", "SOPInstanceUIDOfConcatenationSource")


def check_thin_frames(meta: Metadata) -> None:
    """Refuse, before any compute, a multi-frame source that is not an enhanced object
    (no per-frame functional groups to hold the new frames' positions)."""
    header: Dataset = meta.extra["datasets"][0]
    if not header.get("PerFrameFunctionalGroupsSequence"):
        raise InvalidDataError(
            f"{meta.path}: a multi-frame file without PerFrameFunctionalGroupsSequence (not "
            "an enhanced object): its through-plane result is not written as DICOM; write "
            "NIfTI (.nii.gz) or Zarr (.zarr)")


def _frame_content(item: Dataset) -> Dataset | None:
    seq = item.get("FrameContentSequence")
    return seq[0] if seq else None


def _slice_ordinal(old: list[int | None], j: int, count: int) -> int:
    """New frame ``j``'s number 1..count, growing the way ``old`` (the old frames' numbers
    in frame order) grows: 1 first when the first old frame's is the smaller."""
    first, last = old[0], old[-1]
    return count - j if first is not None and last is not None and first > last else j + 1


def _renumber(items: list[Dataset], old: list[Dataset], pointers: list[int]) -> None:
    """InStackPositionNumber and the slice dimensions' DimensionIndexValues of the new
    frames ``items``, in the direction of the ``old`` frames'."""
    count = len(items)
    contents = [_frame_content(item) for item in old]
    stack = [c.get("InStackPositionNumber") if c else None for c in contents]
    values = [list(c.DimensionIndexValues) if c and "DimensionIndexValues" in c and len(
        c.DimensionIndexValues) == len(pointers) else None for c in contents]
    for j, item in enumerate(items):
        content = _frame_content(item)
        if content is None:
            continue
        if "InStackPositionNumber" in content:
            content.InStackPositionNumber = _slice_ordinal(stack, j, count)
        if values[0] is None or "DimensionIndexValues" not in content:
            continue
        index = list(content.DimensionIndexValues)
        for d, pointer in enumerate(pointers):
            if pointer in _SLICE_DIMENSIONS:
                index[d] = _slice_ordinal([v[d] if v else None for v in values], j, count)
        content.DimensionIndexValues = index


def _thin_header(header: Dataset, meta: Metadata) -> Dataset:
    """``header`` with one per-frame functional-groups item per new frame (copied from the
    new frame's nearest old frame, renumbered) and the new grid's slice spacing."""
    info = meta.extra["through_plane"]
    ds = copy.deepcopy(header)
    old = list(header.PerFrameFunctionalGroupsSequence)
    nearest = [min(int(round(j / info["factor"])), len(old) - 1) for j in range(meta.frames)]
    items = [copy.deepcopy(old[k]) for k in nearest]
    pointers = [int(d.DimensionIndexPointer) for d in ds.get("DimensionIndexSequence") or ()
                if "DimensionIndexPointer" in d]
    _renumber(items, old, pointers)
    ds.PerFrameFunctionalGroupsSequence = Sequence(items)
    ds.NumberOfFrames = meta.frames
    spacing = format_number_as_ds(float(info["spacing"]))
    for item in [*(ds.get("SharedFunctionalGroupsSequence") or ()), *items]:
        for measures in item.get("PixelMeasuresSequence") or ():
            measures.SliceThickness = spacing
            measures.SpacingBetweenSlices = spacing
    if "SpacingBetweenSlices" in ds:
        ds.SpacingBetweenSlices = spacing
    if "RepresentativeFrameNumber" in ds:  # the new frame on the same old one
        old_frame = min(max(int(ds.RepresentativeFrameNumber) - 1, 0), len(old) - 1)
        ds.RepresentativeFrameNumber = min(int(round(old_frame * info["factor"])),
                                           meta.frames - 1) + 1
    for keyword in _CONCATENATION:
        ds.pop(keyword, None)
    return ds


def derive_thin_frames(header: Dataset, pixels: np.ndarray | None, meta: Metadata, *,
                       series: DerivedSeries) -> Dataset:
    """The thin slices of an enhanced multi-frame source as one derived multi-frame
    dataset of its SOP class (see the module doc); ``pixels`` ``(frames, bands, rows,
    cols)``, or None for a dataset without PixelData (:func:`derive_dataset`)."""
    check_thin_frames(meta)
    info = meta.extra["through_plane"]
    frames: tuple[DicomFrame, ...] = meta.extra["dicom_frames"]
    ds = derive_dataset(_thin_header(header, meta), pixels, list(frames), meta, series=series)
    old_frames = info.get("old_frames") or range(len(header.PerFrameFunctionalGroupsSequence))
    for j, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        for derivation in item.DerivationImageSequence:  # derive_dataset's: frame j + 1
            derivation.SourceImageSequence = Sequence([
                _reference(header, purpose=True, frame=old_frames[k] + 1)
                for k in info["references"][j]])
    return ds
