"""DICOM reader: single-frame files, multi-frame files and folders of slices.

``DicomReader(path)`` opens

* a single-frame image (``meta.frames == 1``);
* a multi-frame image, enhanced or legacy (``meta.frames = NumberOfFrames``);
  geometry and rescale come per frame from the functional groups;
* a folder of single-frame slices of one series, ordered along the slice
  normal (see :func:`io_adapters._dicom_frames.order_series`).

``read(window, frame=i)`` returns *stored* values ``(bands, rows, cols)`` in the
file's dtype (``bands = SamplesPerPixel``).  Real-world units (HU, ...) are
``to_real_units(stored, meta, frame=i)``; the exact inverse, with rounding and
clipping to the ``BitsStored`` range, is ``from_real_units``.  MONOCHROME1 is
recorded in ``meta.medical.photometric`` and never inverted here; YBR colour is
converted to RGB.  Frames are decoded one at a time (pylibjpeg plugins for
JPEG, JPEG-LS, JPEG 2000 and RLE) and kept in a small LRU cache.

``meta.extra`` holds ``"dataset"`` (header of the first file, no pixel data),
``"datasets"`` (one header per source file), ``"dicom_frames"``
(:class:`DicomFrame` per frame), ``"layout"`` (``"single"``, ``"multiframe"``
or ``"series"``) and ``"source_photometric"``; all of it pickles.
"""

from __future__ import annotations

import copy
import logging
import threading
import warnings
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pydicom.errors
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import RLELossless

from ._common import as_window, check_frame, inner_part, inside_mask, select_bands
from ._dicom_frames import (
    DicomFrame,
    frames_of,
    from_real_units,
    order_series,
    stored_range,
    to_real_units,
)
from .base import MedicalInfo, Metadata, Window
from .dicom_writer import DicomWriter, scale_dicom_metadata
from .errors import CorruptFileError, InvalidDataError, IOAdapterError, UnsupportedFormatError

__all__ = [
    "DicomFrame", "DicomReader", "DicomWriter", "from_real_units", "open_dicom",
    "scale_dicom_metadata", "sniff_dicom", "stored_range", "to_real_units",
]

logger = logging.getLogger(__name__)

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


def open_dicom(path: str | Path) -> DicomReader:
    """Open a DICOM file or a folder of slices (the entry point for format detection)."""
    return DicomReader(path)


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


class DicomReader:
    """Reader of a DICOM file or folder series (see the module docstring)."""

    def __init__(self, path: str | Path, *, cache_frames: int = 4) -> None:
        self.path = Path(path)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_frames = max(1, int(cache_frames))
        self._lock = threading.Lock()
        self._closed = False
        if not (self.path.is_dir() or self.path.is_file()):
            raise UnsupportedFormatError(f"{self.path}: no such DICOM file or folder")
        try:
            self.meta = self._open_series() if self.path.is_dir() else self._open_file()
        except IOAdapterError:
            raise
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
            # a damaged value of the right VR but wrong multiplicity or content
            raise CorruptFileError(
                f"{self.path}: damaged DICOM header value: {_one_line(exc)}") from exc

    # -- opening --------------------------------------------------------------
    def _open_file(self) -> Metadata:
        ds = read_dataset(self.path)
        bands, rows, cols, frames, dtype, photometric = _pixel_module(ds, self.path)
        _check_decodable(ds, self.path)
        self._dataset: Dataset | None = ds
        self._files = (self.path,)
        layout = "multiframe" if "NumberOfFrames" in ds else "single"
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        if per_frame is not None and len(per_frame) != frames:
            raise InvalidDataError(
                f"{self.path}: PerFrameFunctionalGroupsSequence has {len(per_frame)} items "
                f"for {frames} frames")
        return self._metadata(
            headers=(header_of(ds),), frames=frames_of(ds, source=0, frames=frames,
                                                  where=str(self.path)),
            shape=(bands, rows, cols, frames), dtype=dtype, photometric=photometric,
            layout=layout)

    def _open_series(self) -> Metadata:
        folder = self.path
        files = [p for p in _folder_files(folder) if _is_part10(p)]
        if not files:
            raise UnsupportedFormatError(f"{folder}: folder holds no DICOM Part 10 files")
        datasets = [read_dataset(p) for p in files]
        first = _pixel_module(datasets[0], files[0])
        if first[3] != 1:
            raise InvalidDataError(
                f"{folder}: {files[0].name} has {first[3]} frames; a folder series must hold "
                "single-frame slices (open the multi-frame file itself)")
        series = datasets[0].get("SeriesInstanceUID")
        for p, ds in zip(files, datasets, strict=True):
            got = _pixel_module(ds, p)
            if got[:5] != first[:5]:
                raise InvalidDataError(
                    f"{folder}: slice {p.name} is {got[3]} frame(s) of {got[1]}x{got[2]} "
                    f"{got[4]} x{got[0]}, {files[0].name} is {first[3]} of {first[1]}x"
                    f"{first[2]} {first[4]} x{first[0]}; all slices must match")
            if ds.get("SeriesInstanceUID") != series:
                raise InvalidDataError(
                    f"{folder}: slice {p.name} has SeriesInstanceUID {ds.get('SeriesInstanceUID')}"
                    f", {files[0].name} has {series}; a folder must hold one series")
            _check_decodable(ds, p)
        frames = [frames_of(ds, source=i, frames=1, where=str(p))[0]
                  for i, (p, ds) in enumerate(zip(files, datasets, strict=True))]
        names = [p.name for p in files]
        for name, frame in zip(names, frames, strict=True):
            if (frame.spacing is None) != (frames[0].spacing is None) or (
                    frame.spacing and not np.allclose(frame.spacing, frames[0].spacing,
                                                      rtol=1e-4)):
                raise InvalidDataError(
                    f"{folder}: slice {name} has pixel spacing {frame.spacing}, {names[0]} "
                    f"has {frames[0].spacing}; all slices must match")
        order = order_series(folder, names, datasets, frames)
        self._dataset = None
        self._files = tuple(files[i] for i in order)
        ordered = tuple(replace(frames[i], source=k) for k, i in enumerate(order))
        bands, rows, cols, _, dtype, photometric = first
        return self._metadata(
            headers=tuple(header_of(datasets[i]) for i in order), frames=ordered,
            shape=(bands, rows, cols, len(files)), dtype=dtype, photometric=photometric,
            layout="series")

    def _metadata(self, *, headers: tuple[Dataset, ...], frames: tuple[DicomFrame, ...],
                  shape: tuple[int, int, int, int], dtype: np.dtype, photometric: str,
                  layout: str) -> Metadata:
        bands, rows, cols, count = shape
        head, f0 = headers[0], frames[0]
        positions = tuple(f.position for f in frames)
        medical = MedicalInfo(
            modality=str(head.get("Modality", "")),
            photometric=photometric,
            pixel_spacing=f0.spacing,
            slice_thickness=f0.slice_thickness,
            orientation=f0.orientation,
            positions=positions if all(p is not None for p in positions) else (),  # type: ignore[arg-type]
            rescale_slope=f0.slope,
            rescale_intercept=f0.intercept,
            bits_stored=int(head.get("BitsStored") or dtype.itemsize * 8),
            sources=tuple(str(p) for p in self._files),
        )
        return Metadata(
            path=self.path, format="dicom", bands=bands, rows=rows, cols=cols, dtype=dtype,
            frames=count, band_names=("red", "green", "blue") if bands == 3 else ("gray",),
            medical=medical,
            extra={"dataset": head, "datasets": headers, "dicom_frames": frames,
                   "layout": layout,
                   "source_photometric": str(head.PhotometricInterpretation).strip()},
        )

    # -- pixels ---------------------------------------------------------------
    def _decode(self, frame: int) -> np.ndarray:
        info: DicomFrame = self.meta.extra["dicom_frames"][frame]
        path = self._files[info.source]
        ds = self._dataset if self._dataset is not None else read_dataset(path, defer=False)
        uid = ds.file_meta.TransferSyntaxUID
        decoder = get_decoder(uid)
        # pydicom's own RLE decoder: pylibjpeg-rle panics (Rust, on stderr) on damaged segments
        options = {"decoding_plugin": "pydicom"} if uid == RLELossless and \
            "pydicom" in decoder.available_plugins else {}
        try:
            array, _ = decoder.as_array(ds, index=info.index, **options)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - plugins raise anything, even Rust panics
            raise CorruptFileError(
                f"{path}: frame {info.index} cannot be decoded "
                f"({ds.file_meta.TransferSyntaxUID.name}): {_one_line(exc)}") from exc
        if array.ndim == 2:
            array = array[np.newaxis]
        else:
            array = np.moveaxis(array, -1, 0)
        expected = self.meta.shape
        if array.shape != expected:
            raise CorruptFileError(
                f"{path}: frame {info.index} decodes to {array.shape}, expected {expected}")
        array = np.ascontiguousarray(array, dtype=self.meta.dtype)
        array.flags.writeable = False
        return array

    def _frame(self, frame: int) -> np.ndarray:
        with self._lock:
            if self._closed:
                raise ValueError(f"{self.path}: reader is closed")
            frame = check_frame(frame, self.meta.frames, path=self.path)
            if frame in self._cache:
                self._cache.move_to_end(frame)
                return self._cache[frame]
            data = self._decode(frame)
            self._cache[frame] = data
            while len(self._cache) > self._cache_frames:
                self._cache.popitem(last=False)
            return data

    def read(self, window: Window | None = None, *, frame: int = 0,
             bands: list[int] | None = None) -> np.ndarray:
        """Stored values ``(bands, rows, cols)`` of ``frame``; zeros outside the image.

        ``bands`` are 0-based sample indices (``[0, 1, 2]`` for RGB).
        """
        data = self._frame(frame)
        if bands is not None:
            data = data[list(select_bands(bands, self.meta.bands, path=self.path))]
        if window is None:
            return np.array(data)
        return _boundless(data, window)

    def read_mask(self, window: Window | None = None, *, frame: int = 0) -> np.ndarray:
        """True inside the image (DICOM has no nodata), False outside."""
        check_frame(frame, self.meta.frames, path=self.path)
        window = as_window(window, rows=self.meta.rows, cols=self.meta.cols)
        return inside_mask(window, rows=self.meta.rows, cols=self.meta.cols)

    def read_masks(self, window: Window | None = None, *, frame: int = 0) -> np.ndarray:
        """Per-band validity ``(bands, rows, cols)``: :meth:`read_mask` for every band."""
        mask = self.read_mask(window, frame=frame)
        return np.broadcast_to(mask, (self.meta.bands, *mask.shape)).copy()

    def header(self, frame: int = 0) -> Dataset:
        """Header (no pixel data) of the file that holds ``frame``."""
        info: DicomFrame = self.meta.extra["dicom_frames"][frame]
        return self.meta.extra["datasets"][info.source]

    # -- lifetime ---------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._cache.clear()
            self._dataset = None

    def __enter__(self) -> DicomReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self):  # reopen by path in another process
        return (_reopen, (type(self), self.path, self._cache_frames))

    def __repr__(self) -> str:
        m = self.meta
        return (f"DicomReader({str(self.path)!r}, {m.extra['layout']}, {m.frames} x "
                f"{m.bands}x{m.rows}x{m.cols} {m.dtype})")


def _reopen(cls: type[DicomReader], path: Path, cache_frames: int) -> DicomReader:
    return cls(path, cache_frames=cache_frames)
