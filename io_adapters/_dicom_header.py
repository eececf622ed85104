"""DICOM headers: recognising DICOM, reading a dataset safely, and checking its pixel module.

What :class:`io_adapters.dicom.DicomReader` needs before it decodes a pixel: Part 10
sniffing (files and folders of slices), ``read_dataset`` (deferred pixel data, truncation
and parse warnings turned into one-line errors), the pixel module's checks
(``_pixel_module``, ``_check_decodable``) and the pixel-free header copy (``header_of``).
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.errors
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.pixels.utils import get_expected_length

from ._common import as_window, inner_part
from .base import Window
from .errors import CorruptFileError, InvalidDataError, UnsupportedFormatError

__all__ = ["sniff_dicom", "read_dataset", "header_of"]

logger = logging.getLogger("io_adapters.dicom")

_PIXEL_TAGS = frozenset({0x7FE00001, 0x7FE00002, 0x7FE00008, 0x7FE00009, 0x7FE00010})
_MONOCHROME = frozenset({"MONOCHROME1", "MONOCHROME2"})
_COLOUR = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"})
_DEFER_BYTES = 64 * 1024  # larger elements (the pixel data) are read only when needed
_SNIFF_FOLDER_FILES = 32


def _is_part10(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _folder_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.name.upper() != "DICOMDIR")


def sniff_dicom(path: str | Path) -> bool:
    """True for a DICOM Part 10 file ('DICM' at byte 128) or a folder holding some."""
    path = Path(path)
    if path.is_dir():
        return any(_is_part10(p) for p in _folder_files(path)[:_SNIFF_FOLDER_FILES])
    return _is_part10(path)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _check_truncation(ds: Dataset, path: Path, size: int, warned: list[str]) -> None:
    """Raise if the file ends inside an element (pydicom reads such files silently)."""
    if any("end of file" in w.lower() or "EOF" in w for w in warned):
        raise CorruptFileError(f"{path}: truncated or damaged DICOM file (ends inside a sequence)")
    last_end = 0
    for tag in ds.keys():
        elem = ds.get_item(tag, keep_deferred=True)
        if not isinstance(elem, RawDataElement) or elem.length == 0xFFFFFFFF:
            continue
        end = elem.value_tell + elem.length
        if end > size:
            raise CorruptFileError(
                f"{path}: truncated or damaged DICOM file: element {tag} needs {end} bytes, "
                f"the file has {size}")
        last_end = max(last_end, end)
    if last_end and "PixelData" not in ds and 0 < size - last_end < 12:
        raise CorruptFileError(
            f"{path}: truncated or damaged DICOM file: it ends inside an element header")


def read_dataset(path: str | Path, *, defer: bool = True) -> Dataset:
    """``dcmread`` with our errors; large elements stay on disk when ``defer``.

    pydicom reads truncated files silently (short values, a warning for an
    unterminated sequence), so the parsed elements are checked against the file
    size and the warnings of this call are inspected.  ``warnings`` state is
    process-wide: open readers from one thread (reads are thread-safe).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, force=False, defer_size=_DEFER_BYTES if defer else None)
    except pydicom.errors.InvalidDicomError as exc:
        raise UnsupportedFormatError(
            f"{path}: not a DICOM Part 10 file (no 'DICM' marker at byte 128)") from exc
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot read DICOM file: {_one_line(exc)}") from exc
    except Exception as exc:  # pydicom raises many types on damaged headers
        raise CorruptFileError(f"{path}: damaged DICOM header: {_one_line(exc)}") from exc
    _check_truncation(ds, path, size, [str(w.message) for w in caught])
    try:
        _convert_header(ds)
    except Exception as exc:  # noqa: BLE001 - a damaged value: unknown VR, bad length...
        raise CorruptFileError(f"{path}: damaged DICOM header: {_one_line(exc)}") from exc
    return ds


def _convert_header(ds: Dataset) -> None:
    """Decode every header value now (pydicom decodes lazily, on first access), so a
    damaged element fails here with our error rather than later with pydicom's."""
    for tag in list(ds.keys()):
        if int(tag) in _PIXEL_TAGS:
            continue
        elem = ds[tag]
        if elem.VR == "SQ":
            for item in elem.value:
                _convert_header(item)


def _pixel_module(ds: Dataset, path: Path) -> tuple[int, int, int, int, np.dtype, str]:
    """``(bands, rows, cols, frames, dtype, photometric)`` of a dataset with pixel data."""
    if "PixelData" not in ds:
        kind = "float pixel data" if ("FloatPixelData" in ds or "DoubleFloatPixelData" in ds) \
            else "no PixelData (7FE0,0010)"
        sop = getattr(ds.get("SOPClassUID"), "name", "unknown SOP class")
        raise InvalidDataError(f"{path}: DICOM object ({sop}) has {kind}; it is not an image "
                               "we can super-resolve")
    missing = [k for k in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation")
               if ds.get(k) in (None, "")]
    if missing:
        raise InvalidDataError(f"{path}: image pixel module lacks {', '.join(missing)}")
    bits = int(ds.BitsAllocated)
    if bits not in (8, 16, 32):
        raise InvalidDataError(f"{path}: BitsAllocated {bits} is not supported (8, 16 or 32)")
    photometric = str(ds.PhotometricInterpretation).strip().upper()
    bands = int(ds.get("SamplesPerPixel") or 1)
    if not ((bands == 1 and photometric in _MONOCHROME) or
            (bands == 3 and photometric in _COLOUR)):
        raise InvalidDataError(
            f"{path}: PhotometricInterpretation {photometric} with {bands} samples is not "
            "supported (MONOCHROME1/2 or RGB/YBR); convert palette colour to RGB first")
    signed = bands == 1 and int(ds.get("PixelRepresentation") or 0) == 1
    dtype = np.dtype(f"{'int' if signed else 'uint'}{bits}")
    frames = int(ds.get("NumberOfFrames") or 1)
    rows, cols = int(ds.Rows), int(ds.Columns)
    if min(rows, cols, frames) < 1:
        raise InvalidDataError(f"{path}: empty image ({frames} frames of {rows}x{cols})")
    return bands, rows, cols, frames, dtype, ("RGB" if bands == 3 else photometric)


def _check_decodable(ds: Dataset, path: Path) -> None:
    """Raise unless pydicom can decode the transfer syntax and the data is long enough."""
    uid = ds.file_meta.get("TransferSyntaxUID")
    if not uid:
        raise InvalidDataError(f"{path}: file meta lacks TransferSyntaxUID")
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as exc:
        raise UnsupportedFormatError(
            f"{path}: transfer syntax {uid.name} ({uid}) cannot be decoded; supported: "
            "uncompressed, RLE, JPEG, JPEG-LS, JPEG 2000") from exc
    if not decoder.is_available:
        raise UnsupportedFormatError(
            f"{path}: no decoder installed for {uid.name}; install one of "
            f"{'; '.join(decoder.missing_dependencies)}")
    if decoder.is_native:
        elem = ds.get_item("PixelData", keep_deferred=True)
        have = elem.length if isinstance(elem, RawDataElement) else len(elem.value)
        need = get_expected_length(ds, unit="bytes")
        if have < need:
            raise CorruptFileError(
                f"{path}: truncated pixel data: {have} bytes, {need} expected")


def header_of(ds: Dataset) -> Dataset:
    """A deep copy of ``ds`` without pixel data, with its file meta (for the writer)."""
    header = Dataset()
    for tag in ds.keys():
        if int(tag) not in _PIXEL_TAGS:
            header.add(ds[tag])
    header.file_meta = copy.deepcopy(ds.file_meta)
    return copy.deepcopy(header)


def _boundless(data: np.ndarray, window: Window) -> np.ndarray:
    """``data[:, window]`` with zeros outside the array."""
    window = as_window(window, rows=data.shape[1], cols=data.shape[2])
    out = np.zeros((data.shape[0], int(window.height), int(window.width)), dtype=data.dtype)
    inner, (rs, cs) = inner_part(window, rows=data.shape[1], cols=data.shape[2])
    if inner is not None:
        out[:, rs, cs] = data[:, inner.toslices()[0], inner.toslices()[1]]
    return out
