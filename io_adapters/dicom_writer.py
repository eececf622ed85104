"""Derived-DICOM writer and the DICOM metadata scaling rule.

``scale_dicom_metadata(meta, 2)`` turns a reader's :class:`Metadata` into the
metadata of the super-resolved image: rows/columns times the scale, spacing
divided by it, every frame's ``ImagePositionPatient`` moved to the centre of
the old first pixel's top-left sub-pixel.  ``DicomWriter(path, scaled_meta)``
then collects ``write(stored, window, frame=i)`` calls in memory and writes
on ``commit()`` a derived image, uncompressed (Explicit VR Little Endian) or, with
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

The output appears atomically: a hidden temporary file (folder) next to the
destination is renamed on commit; ``abort()`` leaves nothing behind.
"""

from __future__ import annotations

import datetime
import logging
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
    check_frame,
    check_region,
    new_temp_dir,
    remove_path,
    replace_into,
    write_failure,
)
from ._dicom_derive import DerivedSeries, derive_dataset, new_series_number
from ._dicom_encode import TRANSFER_SYNTAXES, check_transfer_syntax
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
        self._pixels: dict[int, np.ndarray] = {}
        self._written: dict[int, np.ndarray] = {}
        self._state = "open"

    def write(self, array: np.ndarray, window: Window, *, frame: int = 0,
              mask: np.ndarray | None = None) -> None:
        """Store stored values ``(bands, rows, cols)`` of ``frame`` at ``window``.

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
        if frame not in self._pixels:
            self._pixels[frame] = np.zeros(m.shape, dtype=m.dtype)
            self._written[frame] = np.zeros((m.rows, m.cols), dtype=bool)
        self._pixels[frame][:, r0:r0 + h, c0:c0 + w] = array
        self._written[frame][r0:r0 + h, c0:c0 + w] = True

    def _outputs(self) -> list[tuple[str, Dataset]]:
        m = self.meta
        frames: tuple[DicomFrame, ...] = m.extra["dicom_frames"]
        headers: tuple[Dataset, ...] = m.extra["datasets"]
        series = DerivedSeries(
            uid=generate_uid(), number=new_series_number(headers[0]),
            description=_series_description(headers[0], m), derivation=self.description,
            now=datetime.datetime.now(), software=self._software[0],
            version=self._software[1], transfer_syntax=self.transfer_syntax)
        common = {"meta": m, "series": series}
        if not self._series:
            pixels = np.stack([self._pixels[i] for i in range(m.frames)])
            ds = derive_thin_frames(headers[0], pixels, **common) if "through_plane" in \
                m.extra else derive_dataset(headers[0], pixels, list(frames), **common)
            out = [(self.path.name, ds)]
        elif "through_plane" in m.extra:
            out = self._thin_slices(frames, headers, common)
        else:
            names = [Path(s).name for s in m.medical.sources]  # type: ignore[union-attr]
            out = [(names[f.source], derive_dataset(headers[f.source],
                                                    self._pixels[i][np.newaxis], [f], **common))
                   for i, f in enumerate(frames)]
        if self._deidentify:
            for _, ds in out:
                deidentify(ds)
        return out

    def _thin_slices(self, frames: tuple[DicomFrame, ...], headers: tuple[Dataset, ...],
                     common: dict) -> list[tuple[str, Dataset]]:
        """One new file per thin slice (:mod:`io_adapters._dicom_slices`)."""
        m = self.meta
        out = []
        for i, (name, f) in enumerate(zip(slice_file_names(m.frames), frames, strict=True)):
            ds = derive_dataset(headers[f.source], self._pixels[i][np.newaxis], [f], **common)
            set_slice_attributes(ds, i, m)
            out.append((name, ds))
        return out

    def commit(self) -> Path:
        """Write the output and move it to ``self.path``; returns ``self.path``."""
        if self._state == "committed":
            return self.path
        if self._state != "open":
            raise WriteError(f"{self.path}: writer was aborted; nothing to commit")
        missing = [i for i in range(self.meta.frames)
                   if i not in self._written or not self._written[i].all()]
        if missing:
            self.abort()
            raise WriteError(f"{self.path}: frames {missing[:8]} were not completely written; "
                             "nothing was saved")
        temp = new_temp_dir(self.path, "tmp")  # private: pydicom's opens follow links
        try:
            outputs = self._outputs()
            if self._series:
                for name, ds in outputs:
                    pydicom.dcmwrite(temp / name, ds, enforce_file_format=True)
                replace_into(temp, self.path)
            else:
                pydicom.dcmwrite(temp / self.path.name, outputs[0][1], enforce_file_format=True)
                replace_into(temp / self.path.name, self.path)
                remove_path(temp)
        except Exception as exc:
            error = write_failure(self.path, "write derived DICOM", exc)
            remove_path(temp)
            self.abort()
            raise error from exc
        self._state = "committed"
        self._pixels.clear()
        self._written.clear()
        logger.info("wrote derived DICOM %s (%d frame(s))", self.path, self.meta.frames)
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; a committed output is left alone."""
        if self._state == "committed":
            return
        self._state = "aborted"
        self._pixels.clear()
        self._written.clear()
