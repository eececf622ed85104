"""Build the derived DICOM dataset of one output file (private helper of the writer).

:func:`derive_dataset` copies a source header and changes only what the
resampling changes: identity (new SOP Instance UID, fresh file meta), the new
series (:class:`DerivedSeries`: Series Instance UID, :func:`new_series_number`,
SeriesDescription, series and content date/time, the creating software as
Contributing Equipment), Image/Frame Type, geometry (rows, columns, spacing,
positions, ultrasound regions; overlays dropped), derivation references and the
pixel data, in the transfer syntax asked for (:mod:`io_adapters._dicom_encode`).
Patient and study attributes, and the General / Enhanced General Equipment of the
source (the scanner whose acquisition the header still describes), are never touched.
"""

from __future__ import annotations

import copy
import datetime
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from geometry import Scale, as_scale, output_size

from ._dicom_encode import encode_pixels, native_bytes
from ._dicom_frames import DicomFrame
from .base import Metadata

__all__ = ["DerivedSeries", "derive_dataset", "new_series_number", "pixel_data_vr"]

_SPACING_KEYWORDS = ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing")
# Attributes whose values describe the source pixels and would be wrong after resampling.
_STALE_KEYWORDS = ("SmallestImagePixelValue", "LargestImagePixelValue",
                   "SmallestPixelValueInSeries", "LargestPixelValueInSeries",
                   "ExtendedOffsetTable", "ExtendedOffsetTableLengths",
                   "FloatPixelData", "DoubleFloatPixelData")
# Transfer syntaxes that are always lossy -> Lossy Image Compression Method (PS3.3 C.7.6.1.1.5).
_LOSSY_SYNTAXES = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",  # JPEG Extended
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",  # JPEG-LS Near-Lossless
}


@dataclass(frozen=True)
class DerivedSeries:
    """What every file of one derived series says about the series and what made it.

    ``description`` is the SeriesDescription (LO: at most 64 characters),
    ``derivation`` the DerivationDescription; ``software`` and ``version`` name the
    creating software in the Contributing Equipment Sequence; ``transfer_syntax`` is a
    name of :data:`io_adapters._dicom_encode.TRANSFER_SYNTAXES`.
    """

    uid: str
    number: int
    description: str
    derivation: str
    now: datetime.datetime
    software: str
    version: str
    transfer_syntax: str = "explicit-little"


def new_series_number(header: Dataset) -> int:
    """The derived series' number: the source's + 1000 (1000 without one), kept in IS range."""
    try:
        old = int(header.get("SeriesNumber") or 0)
    except (TypeError, ValueError):
        old = 0
    number = old + 1000
    return number if -(2**31) <= number < 2**31 else 1000


def _ds_number(value: float) -> str:
    return format_number_as_ds(float(value))


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def _group_items(ds: Dataset) -> Iterator[tuple[int | None, Dataset]]:
    """``(frame or None for shared, item)`` of every functional-group item."""
    for item in ds.get("SharedFunctionalGroupsSequence") or ():
        yield None, item
    for i, item in enumerate(ds.get("PerFrameFunctionalGroupsSequence") or ()):
        yield i, item


def _is_enhanced(ds: Dataset) -> bool:
    """Enhanced multi-frame objects use the common Image Type rules (PS3.3 C.8.16.1)."""
    sop = getattr(ds.get("SOPClassUID"), "name", "")
    return "SharedFunctionalGroupsSequence" in ds or "Enhanced" in sop


def _derived_type(values: object, *, enhanced: bool) -> list[str]:
    """Value 1 DERIVED; value 2 SECONDARY, but PRIMARY (the only enumerated value) for
    enhanced objects; further values kept."""
    rest = list(values)[2:] if isinstance(values, list | tuple | pydicom.multival.MultiValue) \
        else []
    return ["DERIVED", "PRIMARY" if enhanced else "SECONDARY", *rest]


def _set_image_type(ds: Dataset) -> None:
    enhanced = _is_enhanced(ds)
    ds.ImageType = _derived_type(ds.get("ImageType") or [], enhanced=enhanced)
    for _, item in _group_items(ds):
        for elem in list(item):
            if elem.VR == "SQ" and elem.keyword.endswith("FrameTypeSequence"):
                for sub in elem.value:
                    if "FrameType" in sub:
                        sub.FrameType = _derived_type(sub.FrameType, enhanced=True)


def _scale_spacing(holder: Dataset, sy: float, sx: float) -> None:
    for keyword in _SPACING_KEYWORDS:
        value = holder.get(keyword)
        if value is not None and len(value) == 2:
            holder[keyword].value = [_ds_number(float(value[0]) / sy),
                                     _ds_number(float(value[1]) / sx)]


def _scale_us_regions(ds: Dataset, scale: Scale) -> None:
    """Ultrasound calibration regions are in pixel units: scale bounds and deltas.

    A region of pixels ``[lo, hi]`` becomes ``[floor(lo * s), output_size(hi + 1, s) - 1]``.
    """
    sy, sx = scale.floats
    for region in ds.get("SequenceOfUltrasoundRegions") or ():
        for lo, hi, s in (("RegionLocationMinX0", "RegionLocationMaxX1", scale.cols),
                          ("RegionLocationMinY0", "RegionLocationMaxY1", scale.rows)):
            if lo in region and hi in region:
                region[lo].value = math.floor(region[lo].value * s)
                region[hi].value = output_size(region[hi].value + 1, s) - 1
        for keyword, s in (("ReferencePixelX0", sx), ("ReferencePixelY0", sy)):
            if keyword in region:
                region[keyword].value = round((region[keyword].value + 0.5) * s - 0.5)
        for keyword, s in (("PhysicalDeltaX", sx), ("PhysicalDeltaY", sy)):
            if keyword in region:
                region[keyword].value = region[keyword].value / s


def _set_geometry(ds: Dataset, frames: list[DicomFrame], meta: Metadata) -> None:
    sy, sx = meta.extra.get("scale", (1.0, 1.0))
    ds.Rows, ds.Columns = meta.rows, meta.cols
    _scale_spacing(ds, sy, sx)
    if sy != sx and "PixelAspectRatio" in ds:
        del ds.PixelAspectRatio
    if "ImagePositionPatient" in ds and frames[0].position is not None:
        ds.ImagePositionPatient = [_ds_number(v) for v in frames[0].position]
    for frame, item in _group_items(ds):
        for measures in item.get("PixelMeasuresSequence") or ():
            _scale_spacing(measures, sy, sx)
        position = frames[0 if frame is None else frame].position
        for plane in item.get("PlanePositionSequence") or ():
            if position is not None:
                plane.ImagePositionPatient = [_ds_number(v) for v in position]
    _scale_us_regions(ds, as_scale((sy, sx)))
    for tag in [t for t in ds.keys() if 0x6000 <= t.group <= 0x601E and t.group % 2 == 0]:
        del ds[tag]  # overlays are drawn in source pixel units


def _reference(source: tuple[str, str], frame_number: int | None = None, *,
               purpose: bool = True) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = source
    if frame_number is not None:
        item.ReferencedFrameNumber = frame_number
    if purpose:
        item.PurposeOfReferenceCodeSequence = Sequence(
            [_code("121322", "Source image for image processing operation")])
    return item


def _set_source_evidence(ds: Dataset, source: tuple[str, str], source_series: str) -> None:
    """Enhanced objects list the instances they reference: Source Image Evidence
    (Hierarchical SOP Instance Reference macro) and Common Instance Reference modules."""
    sop = Dataset()
    sop.ReferencedSOPClassUID, sop.ReferencedSOPInstanceUID = source
    series = Dataset()
    series.SeriesInstanceUID = source_series
    series.ReferencedSOPSequence = Sequence([sop])
    evidence = Dataset()
    evidence.StudyInstanceUID = ds.get("StudyInstanceUID", "")
    evidence.ReferencedSeriesSequence = Sequence([series])
    ds.SourceImageEvidenceSequence = Sequence([evidence])
    common = Dataset()
    common.SeriesInstanceUID = source_series
    common.ReferencedInstanceSequence = Sequence([copy.deepcopy(sop)])
    others = [item for item in ds.get("ReferencedSeriesSequence") or ()
              if item.get("SeriesInstanceUID") != source_series]
    ds.ReferencedSeriesSequence = Sequence([*others, common])


def _set_derivation(ds: Dataset, description: str, source: tuple[str, str],
                    source_series: str) -> None:

    code = _code("113085", "Spatial resampling")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame:
        for item in ds.SharedFunctionalGroupsSequence or ():
            if "DerivationImageSequence" in item:
                del item.DerivationImageSequence
        for i, item in enumerate(per_frame):
            derivation = Dataset()
            derivation.DerivationDescription = description
            derivation.DerivationCodeSequence = Sequence([copy.deepcopy(code)])
            derivation.SourceImageSequence = Sequence([_reference(source, i + 1)])
            item.DerivationImageSequence = Sequence([derivation])
        _set_source_evidence(ds, source, source_series)
        return
    ds.DerivationDescription = description
    ds.DerivationCodeSequence = Sequence([code])
    ds.SourceImageSequence = Sequence([_reference(source)])


def _set_pixel_module(ds: Dataset, bands: int) -> None:
    """What the new pixels change besides PixelData: stale value attributes dropped, RGB
    samples interleaved."""
    for keyword in _STALE_KEYWORDS:
        if keyword in ds:
            delattr(ds, keyword)
    if bands == 3:
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0


def pixel_data_vr(ds: Dataset) -> str:
    """The VR of native PixelData: OB for 8-bit samples, else OW."""
    return "OB" if int(ds.BitsAllocated) == 8 else "OW"


def _set_pixels(ds: Dataset, pixels: np.ndarray) -> None:
    """``pixels`` ``(frames, bands, rows, cols)`` as native little-endian PixelData."""
    _set_pixel_module(ds, pixels.shape[1])
    data = native_bytes(pixels)
    if len(data) % 2:
        data += b"\x00"
    ds.add_new(0x7FE00010, pixel_data_vr(ds), data)


def _set_lossy_history(ds: Dataset, source_syntax: str) -> None:
    """Once lossy, always marked lossy: record the source's lossy compression if unmarked."""
    method = _LOSSY_SYNTAXES.get(str(source_syntax))
    if method and "LossyImageCompression" not in ds:
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = method


def _set_identity(ds: Dataset, series: DerivedSeries) -> None:
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series.uid
    date, time = series.now.strftime("%Y%m%d"), series.now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.SeriesNumber = series.number
    ds.SeriesDescription = series.description
    ds.SeriesDate, ds.SeriesTime = date, time  # the derived series is made now
    ds.ContentDate, ds.ContentTime = date, time  # and so is its content (C.7.6.1)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]
    ds.file_meta = meta


def _set_contributing_equipment(ds: Dataset, series: DerivedSeries) -> None:
    """zssr as Processing Equipment (DCM 109102, CID 7005: "processed composite instances
    to create new composite instances") in the Contributing Equipment Sequence of the SOP
    Common Module (PS3.3 C.12.1), after the equipment the source already lists."""
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = Sequence([_code("109102", "Processing Equipment")])
    item.Manufacturer = series.software[:64]
    item.ManufacturerModelName = series.software[:64]
    item.SoftwareVersions = series.version[:64]
    item.ContributionDateTime = series.now.strftime("%Y%m%d%H%M%S")
    item.ContributionDescription = series.derivation[:1024]
    ds.ContributingEquipmentSequence = Sequence(
        [*(ds.get("ContributingEquipmentSequence") or ()), item])


def derive_dataset(header: Dataset, pixels: np.ndarray | None, frames: list[DicomFrame],
                   meta: Metadata, *, series: DerivedSeries) -> Dataset:
    """The derived dataset for one output file of ``series`` (``header`` is not modified).

    ``pixels`` ``(frames, bands, rows, cols)`` become its PixelData, in the series'
    transfer syntax; with None the dataset is made without PixelData (its pixel module
    set for ``meta.bands``) for a writer that streams the frames itself
    (:func:`io_adapters._dicom_encode.pixel_data_value`)."""
    ds = copy.deepcopy(header)
    source = (str(ds.SOPClassUID), str(ds.SOPInstanceUID))
    source_series = str(ds.get("SeriesInstanceUID", ""))
    _set_lossy_history(ds, header.file_meta.get("TransferSyntaxUID", ""))
    _set_identity(ds, series)
    _set_contributing_equipment(ds, series)
    _set_image_type(ds)
    _set_geometry(ds, frames, meta)
    _set_derivation(ds, series.derivation, source, source_series)
    if pixels is None:
        _set_pixel_module(ds, meta.bands)
        return ds
    _set_pixels(ds, pixels)
    encode_pixels(ds, series.transfer_syntax)
    return ds
