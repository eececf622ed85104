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

import logging
import threading
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import RLELossless

from ._common import NoNodataMasks, check_frame, select_bands
from ._dicom_frames import (
    DicomFrame,
    frames_of,
    from_real_units,
    order_series,
    stored_range,
    to_real_units,
)
from ._dicom_header import (
    _boundless,
    _check_decodable,
    _folder_files,
    _is_part10,
    _one_line,
    _pixel_module,
    header_of,
    read_dataset,
    sniff_dicom,
)
from .base import MedicalInfo, Metadata, Window
from .dicom_writer import TRANSFER_SYNTAXES, DicomWriter, scale_dicom_metadata
from .errors import CorruptFileError, InvalidDataError, IOAdapterError, UnsupportedFormatError

__all__ = [
    "DicomFrame", "DicomReader", "DicomWriter", "TRANSFER_SYNTAXES", "from_real_units", "open_dicom",
    "scale_dicom_metadata", "sniff_dicom", "stored_range", "to_real_units",
]

logger = logging.getLogger(__name__)

def open_dicom(path: str | Path) -> DicomReader:
    """Open a DICOM file or a folder of slices (the entry point for format detection)."""
    return DicomReader(path)


class DicomReader(NoNodataMasks):
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
