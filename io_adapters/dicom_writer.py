"""Derived-DICOM writer and the DICOM metadata scaling rule.

``scale_dicom_metadata(meta, 2)`` turns a reader's :class:`Metadata` into the
metadata of the super-resolved image: rows/columns times the scale, spacing
divided by it, every frame's ``ImagePositionPatient`` moved to the centre of
the old first pixel's top-left sub-pixel.  ``DicomWriter(path, scaled_meta)``
then takes ``write(stored, window, frame=i)`` calls and writes a derived image,
uncompressed (Explicit VR Little Endian) or, with
``transfer_syntax="rle"`` or ``"jpeg2000-lossless"``, lossless compressed
(:mod:`io_adapters._dicom_encode`):

* new SOP Instance UID and one new series per output: Series Instance UID,
  SeriesNumber (the source's + 1000), a SeriesDescription saying what was done
  (``ZSSR x2 <old description>``), series and content date/time of the write, and
  the creating software (``provenance.software``/``version``, else this package) as
  Processing Equipment in the Contributing Equipment Sequence;
  ImageType ``DERIVED\\SECONDARY\\<rest>``, derivation description/code and a
  reference to the source image (per frame for enhanced multi-frame);
* patient and study attributes copied untouched, stored values written in the
  source dtype with the source's rescale slope/intercept;
* a ``.dcm`` file for a single or multi-frame source, a folder with one file
  per slice (same file names) for a folder series;
* for metadata from :func:`scale_dicom_slices` (through-plane SR of a folder series:
  more, thinner slices), a folder ``IM0001.dcm``... of the new slices, each derived from
  the header of its nearest old slice, with the thin-slice attributes of
  :mod:`io_adapters._dicom_slices` (InstanceNumber, SliceThickness,
  SpacingBetweenSlices, references to the old slices it lies between) and a
  SeriesDescription ``ZSSR thin <spacing>mm x<factor> <old description>``; of an
  enhanced multi-frame file, one ``.dcm`` of the same SOP class whose frames are the new
  slices (per-frame functional groups of the new grid, references to the old frames);
* with ``deidentify=True``, patient-identifying attributes and private tags
  removed by :func:`io_adapters.deidentify.deidentify` (not a full
  de-identification profile: read its docstring).

Memory is bounded by the frames being filled, not by the output: a frame leaves memory
as soon as its last pixel is written, into a private temporary folder beside the
destination (``.<name>.tmp-<8 hex>``): a series' slice file at once; a multi-frame
file's frame as its PixelData bytes (native, or encoded and itemised) appended to a spool
file, from which ``commit()`` streams PixelData after the dataset
(:mod:`io_adapters._dicom_encode`).  The output appears atomically: on ``commit()`` the
folder (a series) or the file is renamed into place; ``abort()``, or any failure,
removes the temporary folder: nothing is left behind.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
from dataclasses import replace
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from geometry import ScaleLike, as_scale, output_shape

from ._common import (
    aborting,
    check_frame,
    check_region,
    new_temp_dir,
    remove_path,
    replace_into,
)
from ._dicom_derive import DerivedSeries, derive_dataset, new_series_number, pixel_data_vr
from ._dicom_encode import (
    TRANSFER_SYNTAXES,
    check_transfer_syntax,
    frame_payload,
    pixel_data_value,
)
from ._dicom_frames import DicomFrame, scaled_frame, stored_range
from ._dicom_slices import (
    check_thin_frames,
    derive_thin_frames,
    scale_dicom_slices,
    set_slice_attributes,
    slice_file_names,
)
from .base import AtomicWriterMixin, Metadata, Window, check_output_path
from .deidentify import deidentify
from .errors import InvalidDataError, WriteError

if TYPE_CHECKING:
    from .provenance import Provenance

__all__ = ["DicomWriter", "TRANSFER_SYNTAXES", "scale_dicom_metadata", "scale_dicom_slices"]

_SPOOL_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
SOFTWARE = "zssr-pipeline"  # the creating software without a provenance= keyword

logger = logging.getLogger(__name__)


def scale_dicom_metadata(meta: Metadata, scale: ScaleLike) -> Metadata:
    """Metadata of ``meta``'s image resampled by ``scale`` (a number or (rows, cols))."""
    if meta.format != "dicom" or meta.medical is None or "dicom_frames" not in meta.extra:
        raise InvalidDataError(f"{meta.path}: not DICOM metadata from DicomReader")
    sc = as_scale(scale)
    sy, sx = sc.floats
    frames = tuple(scaled_frame(f, row_scale=sy, col_scale=sx)
                   for f in meta.extra["dicom_frames"])
    medical = replace(
        meta.medical,
        pixel_spacing=frames[0].spacing,
        positions=tuple(f.position for f in frames) if meta.medical.positions else (),
    )
    prior = meta.extra.get("scale", (1.0, 1.0))
    extra = {**meta.extra, "dicom_frames": frames, "scale": (prior[0] * sy, prior[1] * sx)}
    rows, cols = output_shape((meta.rows, meta.cols), sc)
    return replace(meta, rows=rows, cols=cols, medical=medical, extra=extra)


def _software(provenance: Provenance | None) -> tuple[str, str]:
    """The creating software's name and version: the job's provenance, else this package."""
    if provenance is not None:
        return provenance.software, provenance.version
    try:
        return SOFTWARE, importlib_metadata.version(SOFTWARE)
    except importlib_metadata.PackageNotFoundError:
        return SOFTWARE, "unknown"


def _factor(meta: Metadata) -> str:
    """The in-plane scale as text: ``2``, ``1.5``, ``2x3`` (rows x columns)."""
    sy, sx = meta.extra.get("scale", (1.0, 1.0))
    return f"{sy:.4g}" if sy == sx else f"{sy:.4g}x{sx:.4g}"


def _default_description(meta: Metadata, software: tuple[str, str],
                         provenance: Provenance | None) -> str:
    name = " ".join(software)
    if provenance is not None:  # the resolved config that made it, as in COG/Zarr outputs
        name += f"; config sha256:{provenance.config_sha256}"
    if "through_plane" in meta.extra:
        tp = meta.extra["through_plane"]
        return (f"Zero-Shot Super-Resolution through-plane x{tp['factor']:.4g}: slices "
                f"{tp['old_spacing']:.4g} mm apart made {tp['spacing']:.4g} mm apart "
                f"(SMORE-style, {name})")
    return f"Zero-Shot Super-Resolution x{_factor(meta)} ({name})"


def _series_description(header: Dataset, meta: Metadata) -> str:
    """SeriesDescription (LO, 64 chars): what was done, first, then the source's."""
    old = str(header.get("SeriesDescription") or "").strip()
    if "through_plane" in meta.extra:
        tp = meta.extra["through_plane"]
        done = f"ZSSR thin {tp['spacing']:.3g}mm x{tp['factor']:.3g}"
    else:
        done = f"ZSSR x{_factor(meta)}"
    return f"{done} {old}"[:64].strip()


class DicomWriter(AtomicWriterMixin):
    """Derived-DICOM writer for metadata from :func:`scale_dicom_metadata`."""

    def __init__(self, path: str | Path, meta: Metadata, *, description: str | None = None,
                 inputs: tuple[Path, ...] = (), overwrite: bool = False,
                 deidentify: bool = False, provenance: Provenance | None = None,
                 transfer_syntax: str = "explicit-little") -> None:
        if meta.format != "dicom" or not meta.extra.get("datasets"):
            raise InvalidDataError(
                f"{path}: DicomWriter needs DICOM metadata from DicomReader "
                f"(got format {meta.format!r})")
        sources = tuple(Path(s) for s in (meta.medical.sources if meta.medical else ()))
        self.meta = meta
        self._series = meta.extra["layout"] == "series"
        if self._series and Path(path).exists() and not Path(path).is_dir():
            raise WriteError(f"{path}: a series is written as a folder, but a file "
                             "exists there; choose another output")
        if not self._series and Path(path).is_dir():
            raise WriteError(f"{path}: is a folder; give a .dcm file name")
        self.path = check_output_path(Path(path), inputs=(Path(meta.path), *sources, *inputs),
                                      overwrite=overwrite)
        if "through_plane" in meta.extra and not self._series:
            check_thin_frames(meta)  # an enhanced object: its thin slices in one file
        for i, header in enumerate(meta.extra["datasets"]):  # before any compute
            missing = [k for k in ("SOPClassUID", "SOPInstanceUID") if not header.get(k)]
            if missing:
                where = sources[i] if i < len(sources) else meta.path
                raise InvalidDataError(
                    f"{where}: no {' or '.join(missing)} (a required attribute): a derived "
                    "DICOM references its source by it; write NIfTI (.nii.gz) or Zarr (.zarr)")
        self.transfer_syntax = check_transfer_syntax(transfer_syntax, path=path,
                                                     shape=(meta.rows, meta.cols))
        self._software = _software(provenance)
        self.description = (description or _default_description(
            meta, self._software, provenance))[:1024]
        self._deidentify = bool(deidentify)  # io_adapters.deidentify on every output file
        self._pixels: dict[int, np.ndarray] = {}  # frames being filled, until complete
        self._written: dict[int, np.ndarray] = {}  # their filled pixels
        self._done: set[int] = set()  # frames already on disk
        self._parts: dict[int, tuple[int, int]] = {}  # one file: frame -> spool byte range
        self._spool: int | None = None  # one file: the frames' PixelData bytes, on disk
        self._spool_end = 0
        self._temp: Path | None = None  # private folder beside the output
        self._derived: DerivedSeries | None = None
        self._dataset: Dataset | None = None  # one file: the header, without PixelData
        self._lock = threading.Lock()
        self._state = "open"

    def write(self, array: np.ndarray, window: Window, *, frame: int = 0,
              mask: np.ndarray | None = None) -> None:
        """Store stored values ``(bands, rows, cols)`` of ``frame`` at ``window``; a frame
        goes to disk (its slice file, or its part of the PixelData spool) as soon as every
        pixel of it is written, and leaves memory.

        ``mask`` is accepted for the common writer contract and ignored: DICOM
        images have no nodata, every pixel is valid.
        """
        if self._state != "open":
            raise WriteError(f"{self.path}: writer is {self._state}; cannot write")
        m = self.meta
        frame = check_frame(frame, m.frames, path=self.path)
        window, array = check_region(array, window, meta=m, path=self.path)
        c0, r0, w, h = (int(v) for v in (window.col_off, window.row_off,
                                         window.width, window.height))
        if array.dtype.kind not in "iub":
            raise InvalidDataError(
                f"{self.path}: write() takes stored values ({m.dtype}), got {array.dtype}; "
                "convert with io_adapters.dicom.from_real_units")
        lo, hi = stored_range(m)
        if array.size and (array.min() < lo or array.max() > hi):
            raise InvalidDataError(
                f"{self.path}: values {array.min()}..{array.max()} outside the stored range "
                f"{lo}..{hi} (BitsStored); clip with from_real_units")
        with self._lock:
            if frame in self._done:
                raise WriteError(f"{self.path}: frame {frame} was already written whole and "
                                 "saved; write each pixel once")
            if frame not in self._pixels:
                self._pixels[frame] = np.zeros(m.shape, dtype=m.dtype)
                self._written[frame] = np.zeros((m.rows, m.cols), dtype=bool)
            self._pixels[frame][:, r0:r0 + h, c0:c0 + w] = array
            self._written[frame][r0:r0 + h, c0:c0 + w] = True
            if self._written[frame].all():
                pixels = self._pixels.pop(frame)
                del self._written[frame]
                self._save_frame(frame, pixels)

    def _save_frame(self, frame: int, pixels: np.ndarray) -> None:
        """A complete frame to disk: a slice file in the temporary folder, or its bytes
        appended to the PixelData spool of a multi-frame file."""
        with aborting(self, "write derived DICOM"):
            if self._temp is None:
                self._temp = new_temp_dir(self.path, "tmp")  # private: pydicom follows links
            if self._series:
                name, ds = self._slice_dataset(frame, pixels)
                pydicom.dcmwrite(self._temp / name, ds, enforce_file_format=True)
            else:
                payload = frame_payload(self._file_dataset(), pixels, self.transfer_syntax)
                if self._spool is None:
                    self._spool = os.open(self._temp / "pixels.spool", _SPOOL_FLAGS, 0o600)
                view = memoryview(payload)
                while view:
                    view = view[os.write(self._spool, view):]
                self._parts[frame] = (self._spool_end, len(payload))
                self._spool_end += len(payload)
        self._done.add(frame)

    def _derived_series(self) -> DerivedSeries:
        """The new series every file of this output belongs to (made at the first frame)."""
        if self._derived is None:
            headers: tuple[Dataset, ...] = self.meta.extra["datasets"]
            self._derived = DerivedSeries(
                uid=generate_uid(), number=new_series_number(headers[0]),
                description=_series_description(headers[0], self.meta),
                derivation=self.description, now=datetime.datetime.now(),
                software=self._software[0], version=self._software[1],
                transfer_syntax=self.transfer_syntax)
        return self._derived

    def _slice_dataset(self, i: int, pixels: np.ndarray) -> tuple[str, Dataset]:
        """File name and dataset of slice ``i`` of a series output (a through-plane thin
        slice: :mod:`io_adapters._dicom_slices`)."""
        m = self.meta
        frame: DicomFrame = m.extra["dicom_frames"][i]
        header: Dataset = m.extra["datasets"][frame.source]
        ds = derive_dataset(header, pixels[np.newaxis], [frame], m, series=self._derived_series())
        if "through_plane" in m.extra:
            name = slice_file_names(m.frames)[i]
            set_slice_attributes(ds, i, m)
        else:
            name = Path(m.medical.sources[frame.source]).name  # type: ignore[union-attr]
        if self._deidentify:
            deidentify(ds)
        return name, ds

    def _file_dataset(self) -> Dataset:
        """The multi-frame file's dataset without PixelData (made at the first frame)."""
        if self._dataset is None:
            m = self.meta
            header: Dataset = m.extra["datasets"][0]
            common = {"meta": m, "series": self._derived_series()}
            ds = derive_thin_frames(header, None, **common) if "through_plane" in m.extra \
                else derive_dataset(header, None, list(m.extra["dicom_frames"]), **common)
            if self._deidentify:
                deidentify(ds)
            self._dataset = ds
        return self._dataset

    def _write_file(self, out: Path) -> None:
        """The multi-frame file: its dataset, PixelData streamed from the spool."""
        ds = self._file_dataset()
        assert self._spool is not None  # noqa: S101 - every frame was saved
        parts = [self._parts[i] for i in range(self.meta.frames)]
        value = pixel_data_value(ds, self._spool, parts, self.transfer_syntax)
        encapsulated = TRANSFER_SYNTAXES[self.transfer_syntax][0] is not None
        ds.add_new(0x7FE00010, "OB" if encapsulated else pixel_data_vr(ds), value)
        ds["PixelData"].is_undefined_length = encapsulated
        try:
            pydicom.dcmwrite(out, ds, enforce_file_format=True)
        finally:
            del ds["PixelData"]

    def commit(self) -> Path:
        """Finish the output and move it to ``self.path``; returns ``self.path``."""
        if self._state == "committed":
            return self.path
        if self._state != "open":
            raise WriteError(f"{self.path}: writer was aborted; nothing to commit")
        missing = [i for i in range(self.meta.frames) if i not in self._done]
        if missing:
            self.abort()
            raise WriteError(f"{self.path}: frames {missing[:8]} were not completely written; "
                             "nothing was saved")
        with aborting(self, "write derived DICOM"), self._lock:
            assert self._temp is not None  # noqa: S101 - made by the first frame
            if self._series:
                replace_into(self._temp, self.path)
            else:
                self._write_file(self._temp / self.path.name)
                replace_into(self._temp / self.path.name, self.path)
                self._close_spool()
                remove_path(self._temp)
        self._temp, self._state = None, "committed"
        logger.info("wrote derived DICOM %s (%d frame(s))", self.path, self.meta.frames)
        return self.path

    def _close_spool(self) -> None:
        if self._spool is not None:
            os.close(self._spool)
            self._spool = None

    def abort(self) -> None:
        """Drop everything written so far (the temporary folder too); a committed output
        is left alone."""
        if self._state == "committed":
            return
        self._state = "aborted"
        self._pixels.clear()
        self._written.clear()
        self._close_spool()
        if self._temp is not None:
            remove_path(self._temp)
            self._temp = None
