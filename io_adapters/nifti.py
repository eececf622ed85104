"""NIfTI-1/2 volumes (``.nii``, ``.nii.gz``) in and out, through nibabel.

A volume ``(i, j, k[, t])`` is read as a stack: each slice ``k`` is one *frame*, a
2-D image whose **rows run along j and columns along i** (``frame[r, c] =
data[c, r, k]``), and a 4th dimension (time, components) becomes the bands.  Values
are the file's *stored* values in its on-disk dtype; ``scl_slope``/``scl_inter``
travel in :class:`~io_adapters.base.MedicalInfo` (``rescale_slope`` /
``rescale_intercept``) and are written back unchanged, as DICOM keeps its rescale.
A ``.nii`` is memory-mapped and read slice by slice; a ``.nii.gz`` is decompressed
once, on the first read (gzip has no random access).

The affine (the sform when its code is set, else the qform, else nibabel's
fallback) maps voxel indexes to RAS+ millimetres.  :class:`MedicalInfo` gets the
DICOM view of it (LPS+: ImageOrientationPatient from the i and j columns,
ImagePositionPatient of every slice, spacing ``(dj, di)``, slice thickness
``dk``), so the Zarr writer and the pipeline see the same geometry as for a
DICOM series.

:func:`scale_nifti_metadata` (in-plane SR by ``(s_rows, s_cols)``) divides the i
and j columns of the affine by ``s_cols`` and ``s_rows`` and moves the origin to
the centre of the old first voxel's first sub-voxel (``(1/s - 1)/2`` old voxel, the
rule every format here uses: the new grid covers exactly the old voxels' extent);
the k column, the direction cosines and their signs are kept, so the orientation is
never flipped.  :func:`scale_nifti_slices` does the same along k for through-plane
SR, where slices are *samples* at their positions: the first new slice sits on
the first old one and the spacing is ``dk / f``.

:class:`NiftiWriter` writes the voxels as they arrive into a disk buffer laid out as the
``.nii`` itself, so memory stays about one write whatever the volume; ``commit`` renames
it into place (for ``.nii.gz``: streams it through gzip in chunks first); ``abort``
leaves nothing.  Header and bytes are the ones ``nib.save`` writes of the whole array.
The buffer, the header's making and the gzip step are :mod:`io_adapters._nifti_stream`;
this module holds the reader, the metadata functions and the writer's contract (checks,
locking, commit and abort).
"""

from __future__ import annotations

import gzip
import logging
import threading
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.arrayproxy import ArrayProxy
from rasterio.windows import Window

from geometry import ScaleLike, as_scale, output_shape

from ._common import (
    NoNodataMasks,
    aborting,
    as_window,
    boundless_read,
    cast_to_dtype,
    check_frame,
    check_pixel_dtype,
    check_region,
    replace_into,
    select_bands,
    write_failure,
)
from ._nifti_stream import NiftiBuffer, header_block
from .base import AtomicWriterMixin, MedicalInfo, Metadata, PathReaderMixin, check_output_path
from .errors import CorruptFileError, InputNotFoundError, InvalidDataError, WriteError

__all__ = ["NiftiReader", "NiftiWriter", "sniff_nifti", "scale_nifti_metadata",
           "scale_nifti_slices", "nifti_affine"]

log = logging.getLogger(__name__)

_LPS = np.array([-1.0, -1.0, 1.0])  # RAS+ (NIfTI) <-> LPS+ (DICOM): flip x and y


def sniff_nifti(path: Path, head: bytes) -> bool:
    """NIfTI-1 (``n+1``/``ni1`` at byte 344) or NIfTI-2 (``n+2``/``ni2`` at 4), plain or
    gzip-wrapped (the header is then read from the decompressed stream)."""
    if path.is_dir():
        return False
    try:
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as fh:
                head = fh.read(348)
        elif len(head) < 348:
            with open(path, "rb") as fh:
                head = fh.read(348)
    except (OSError, EOFError):
        return False
    return head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00", b"ni2\x00")


def _medical(affine: np.ndarray, slices: int, slope: float, inter: float,
             sources: tuple[str, ...]) -> MedicalInfo:
    """The DICOM view (LPS+) of a voxel-to-RAS affine: orientation, positions, spacing."""
    cols_vec, rows_vec, k_vec = (affine[:3, n] for n in range(3))
    di, dj, dk = (float(np.linalg.norm(v)) for v in (cols_vec, rows_vec, k_vec))
    orientation = None
    if di > 0 and dj > 0:
        orientation = tuple(float(v) for v in (*(cols_vec / di * _LPS), *(rows_vec / dj * _LPS)))
    positions = tuple(tuple(float(v) for v in (affine[:3, 3] + k * k_vec) * _LPS)
                      for k in range(slices))
    return MedicalInfo(modality="OT", photometric="MONOCHROME2", pixel_spacing=(dj, di),
                       slice_thickness=dk or None, orientation=orientation, positions=positions,
                       rescale_slope=slope, rescale_intercept=inter, sources=sources)


class NiftiReader(NoNodataMasks, PathReaderMixin):
    """Reader for a NIfTI volume; see the module docstring for the axes."""

    def __init__(self, path: str | Path, *, bands: list[int] | None = None) -> None:
        self.path = Path(path)
        self._requested = bands
        self._lock = threading.Lock()
        self._cache: np.ndarray | None = None
        if not self.path.exists():
            raise InputNotFoundError(f"{self.path}: no such file")
        try:
            img = nib.load(self.path)
            header = img.header
            shape = tuple(int(n) for n in img.shape)
            dtype = np.dtype(header.get_data_dtype()).newbyteorder("=")
            offset, order = int(img.dataobj.offset), img.dataobj.order
        except Exception as exc:  # noqa: BLE001 - nibabel raises many types on a bad header
            raise CorruptFileError(f"{self.path}: cannot read the NIfTI header: "
                                   f"{' '.join(str(exc).split()) or type(exc).__name__}"
                                   ) from None
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise CorruptFileError(f"{self.path}: not a single-file NIfTI image "
                                   f"({type(img).__name__})")
        if len(shape) > 4 or (len(shape) == 4 and 1 in shape[:3]) or min(shape) < 1:
            raise InvalidDataError(f"{self.path}: NIfTI of shape {shape} is not a volume "
                                   "(i, j, k) or a stack of volumes (i, j, k, t); zssr reads "
                                   "up to 4 dimensions")
        shape = (*shape, *(1,) * (3 - len(shape)))  # a 2-D image: one slice
        check_pixel_dtype(dtype, path=self.path)
        self._shape = shape
        self._header = header
        # stored values: the proxy without the scaling (nibabel applies scl_* on read)
        self._proxy = ArrayProxy(self.path, (shape, header.get_data_dtype(), offset, 1.0, 0.0),
                                 order=order)
        self._gz = self.path.name.lower().endswith(".gz")
        slope, inter = img.dataobj.slope, img.dataobj.inter  # nibabel moved scl_* there
        slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
        inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
        self.affine = np.asarray(img.affine, dtype=float)
        nbands = shape[3] if len(shape) == 4 else 1
        self._selected = select_bands(bands, nbands, path=self.path)
        sform, qform = (int(c) for c in (header["sform_code"], header["qform_code"]))
        extra = {"nifti_affine": self.affine.tolist(), "nifti_sform_code": sform,
                 "nifti_qform_code": qform, "nifti_version": 2 if isinstance(
                     img, nib.Nifti2Image) else 1, "nifti_xyzt_units": [str(u) for u in
                                                                      header.get_xyzt_units()]}
        self.meta = Metadata(
            path=self.path, format="nifti", bands=len(self._selected), rows=shape[1],
            cols=shape[0], dtype=dtype, frames=shape[2],
            medical=_medical(self.affine, shape[2], slope, inter, (str(self.path),)),
            extra=extra)

    def _slab(self, frame: int, inner: Window) -> np.ndarray:
        """``(bands, h, w)`` stored values of slice ``frame`` inside ``inner``."""
        r0, c0 = int(inner.row_off), int(inner.col_off)
        r1, c1 = r0 + int(inner.height), c0 + int(inner.width)
        if self._gz:  # decode once: each sliced read of a gzip stream starts from byte 0
            with self._lock:
                if self._cache is None:
                    self._cache = self._decode(lambda: np.asarray(self._proxy))
            part = self._cache[c0:c1, r0:r1, frame]
        else:
            part = self._decode(lambda: np.asarray(self._proxy[c0:c1, r0:r1, frame]))
        part = part.reshape(c1 - c0, r1 - r0, -1)  # (i, j, bands)
        picked = part[..., list(self._selected)]
        return np.ascontiguousarray(picked.transpose(2, 1, 0)).astype(self.meta.dtype, copy=False)

    def _decode(self, read) -> np.ndarray:
        try:
            return read()
        except Exception as exc:  # noqa: BLE001 - truncated data, gzip errors...
            raise CorruptFileError(f"{self.path}: cannot read the voxels (truncated or "
                                   f"damaged?): {' '.join(str(exc).split())[:200]}") from None

    def read(self, window: Window | None = None, *, frame: int = 0,
             bands: list[int] | None = None) -> np.ndarray:
        """``(bands, rows, cols)`` of slice ``frame`` in the stored dtype; 0 outside."""
        frame = check_frame(frame, self.meta.frames, path=self.path)
        window = as_window(window, rows=self.meta.rows, cols=self.meta.cols)
        picks = list(select_bands(bands, self.meta.bands, path=self.path))
        return boundless_read(lambda w: self._slab(frame, w)[picks], window,
                              rows=self.meta.rows, cols=self.meta.cols, bands=len(picks),
                              dtype=self.meta.dtype, fill=0)

    def close(self) -> None:
        self._cache = None


def nifti_affine(meta: Metadata) -> np.ndarray:
    """The voxel-to-RAS+ affine of ``meta`` (NIfTI's own, else built from the DICOM
    geometry in :class:`MedicalInfo`, else the pixel spacing, else the identity)."""
    if "nifti_affine" in meta.extra:
        return np.asarray(meta.extra["nifti_affine"], dtype=float)
    affine = np.eye(4)
    med = meta.medical
    if med is None or med.pixel_spacing is None:
        return affine
    dj, di = med.pixel_spacing
    dk = med.slice_thickness or 1.0
    if med.orientation and med.positions:
        row_dir = np.asarray(med.orientation[:3], dtype=float)  # along a row: +i
        col_dir = np.asarray(med.orientation[3:6], dtype=float)  # down a column: +j
        p0 = np.asarray(med.positions[0], dtype=float)
        step = (np.subtract(med.positions[1], p0) if len(med.positions) > 1
                else np.cross(row_dir, col_dir) * dk)
        affine[:3, 0], affine[:3, 1] = row_dir * di * _LPS, col_dir * dj * _LPS
        affine[:3, 2], affine[:3, 3] = np.asarray(step) * _LPS, p0 * _LPS
        return affine
    return np.diag([di, dj, dk, 1.0])


def _with_affine(meta: Metadata, affine: np.ndarray, *, rows: int, cols: int,
                 frames: int) -> Metadata:
    med = meta.medical
    if med is not None:
        fresh = _medical(affine, frames, med.rescale_slope, med.rescale_intercept, med.sources)
        med = replace(med, pixel_spacing=fresh.pixel_spacing, orientation=fresh.orientation,
                      positions=fresh.positions, slice_thickness=fresh.slice_thickness)
    extra = {**meta.extra, "nifti_affine": affine.tolist()}
    return replace(meta, rows=rows, cols=cols, frames=frames, medical=med, extra=extra)


def scale_nifti_metadata(meta: Metadata, scale: ScaleLike) -> Metadata:
    """Metadata of the volume super-resolved in-plane by ``scale`` (rows along j, cols
    along i): size ``ceil(n * s)``, i and j voxel sizes ``/ s``, origin at the centre of
    the first new voxel; k and the orientation kept (see the module docstring)."""
    sc = as_scale(scale)
    sy, sx = sc.floats
    rows, cols = output_shape((meta.rows, meta.cols), sc)
    old = nifti_affine(meta)
    shrink = np.diag([1.0 / sx, 1.0 / sy, 1.0, 1.0])
    shrink[:3, 3] = [(1.0 / sx - 1.0) / 2, (1.0 / sy - 1.0) / 2, 0.0]
    return _with_affine(meta, old @ shrink, rows=rows, cols=cols, frames=meta.frames)


def scale_nifti_slices(meta: Metadata, factor: float, slices: int) -> Metadata:
    """Metadata of a through-plane result: ``slices`` slices at ``dk / factor`` spacing,
    the first on the first old slice (slices are samples at their positions)."""
    if not factor > 0 or slices < 1:
        raise InvalidDataError(f"{meta.path}: through-plane factor {factor} and {slices} "
                               "slices: expected a factor > 0 and at least one slice")
    old = nifti_affine(meta)
    new = old @ np.diag([1.0, 1.0, 1.0 / float(factor), 1.0])
    return _with_affine(meta, new, rows=meta.rows, cols=meta.cols, frames=slices)


class NiftiWriter(AtomicWriterMixin):
    """Write a NIfTI-1 volume (``.nii`` or ``.nii.gz``) atomically; slices are frames.

    The voxels go, as they arrive, into a disk buffer laid out as the ``.nii`` file
    itself (:class:`~io_adapters._nifti_stream.NiftiBuffer`: header, then the data in
    NIfTI order, a ``numpy.memmap`` in a private temporary folder beside the output
    whose pages are given back after each write); resident memory stays about one
    write, whatever the volume.  ``commit`` renames the ``.nii`` into place, or streams it
    through gzip in chunks for a ``.nii.gz``.  The header is nibabel's, built as
    ``nib.save`` builds it, so the file is byte for byte the one ``nib.save`` writes of
    the whole array (``tests/test_volume_writer_streaming.py``).
    """

    def __init__(self, path: str | Path, meta: Metadata, *, inputs: tuple[Path, ...] = (),
                 overwrite: bool = False) -> None:
        name = Path(path).name.lower()
        if not (name.endswith(".nii") or name.endswith(".nii.gz")):
            raise WriteError(f"{path}: a NIfTI output is named .nii or .nii.gz")
        self.path = check_output_path(Path(path), inputs=inputs, overwrite=overwrite)
        dtype = check_pixel_dtype(meta.dtype, path=self.path)
        if dtype.itemsize > 8 or dtype == np.dtype("uint64") or dtype == np.dtype("int64"):
            raise InvalidDataError(f"{self.path}: NIfTI-1 cannot hold {dtype} voxels here; "
                                   "write a .zarr output")
        self.meta = meta
        self._dtype = dtype.newbyteorder("=")
        self._buffer = NiftiBuffer(
            self.path, header_block(meta, self._dtype, affine=nifti_affine, path=self.path),
            (meta.bands, meta.frames, meta.rows, meta.cols), self._dtype)
        self._state = "open"
        self._lock = threading.Lock()

    def write(self, array: np.ndarray, window: Window, *, frame: int = 0,
              mask: np.ndarray | None = None) -> None:
        """Store ``(bands, h, w)`` at ``window`` of slice ``frame``.  ``mask`` is accepted
        for the writer contract and ignored: NIfTI has no nodata."""
        if self._state != "open":
            raise WriteError(f"{self.path}: writer already committed or aborted")
        frame = check_frame(frame, self.meta.frames, path=self.path)
        window, array = check_region(array, window, meta=self.meta, path=self.path)
        array = cast_to_dtype(array, self._dtype)
        with self._lock:
            try:
                self._buffer.write(array, frame, int(window.row_off), int(window.col_off))
            except OSError as exc:
                error = write_failure(self.path, "write the NIfTI volume", exc)
                self.abort()
                raise error from exc

    def commit(self) -> Path:
        """Finish the file beside ``path`` and rename it into place; returns ``path``."""
        if self._state != "open":
            raise WriteError(f"{self.path}: writer already committed or aborted")
        with aborting(self, "write the NIfTI volume"), self._lock:
            replace_into(self._buffer.finish(), self.path)
        self._buffer.discard()
        self._state = "committed"
        log.debug("wrote %s", self.path)
        return self.path

    def abort(self) -> None:
        """Drop the disk buffer and any temporary file; a committed output stays."""
        if self._state == "committed":
            return
        self._state = "aborted"
        self._buffer.discard()
