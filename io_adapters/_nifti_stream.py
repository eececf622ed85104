"""The machinery under :class:`io_adapters.nifti.NiftiWriter`: the NIfTI-1 header built as
``nib.save`` builds it, and the disk buffer the voxels stream into.

:func:`header_block` is the bytes before the voxels of the output (header, extensions,
zeros up to ``vox_offset``), made for an image of the output's shape whose data is never
held: sform and qform from the same affine (their codes kept for a NIfTI source; a volume
from another format gets scanner-anatomical, code 1), scl_slope/inter as the array writer
sets them when the source has none.

:class:`NiftiBuffer` is the ``.nii`` being written, laid out as the file itself (header,
then the data in NIfTI order: for a band, a slice, a row, the columns): a ``numpy.memmap``
in a private temporary folder beside the output, made sparse on the first write, whose
pages are given back after each write, so memory stays about one write whatever the
volume.  ``finish`` gives the finished file to rename into place (for ``.nii.gz``: the
``.nii`` streamed through gzip in chunks first, as nibabel compresses); ``discard``
leaves nothing.  The bytes are the ones ``nib.save`` writes of the whole array
(``tests/test_volume_writer_streaming.py``).
"""

from __future__ import annotations

import gzip
import io
import math
import mmap
import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.arraywriters import get_slope_inter, make_array_writer
from nibabel.openers import Opener

from ._common import new_temp_dir, remove_path
from .base import Metadata
from .errors import InvalidDataError
from .output_safety import create_file

__all__ = ["header_block", "NiftiBuffer"]

_GZIP_CHUNK = 1 << 20  # bytes read from the disk buffer per gzip write


def _nib_shape(meta: Metadata) -> tuple[int, ...]:
    """The image's shape as nibabel sees it: ``(i, j, k)`` or ``(i, j, k, bands)``."""
    return (meta.cols, meta.rows, meta.frames) + ((meta.bands,) if meta.bands > 1 else ())


def _image(meta: Metadata, affine: np.ndarray, data: np.ndarray) -> nib.Nifti1Image:
    own = "nifti_affine" in meta.extra and meta.format == "nifti"
    sform = int(meta.extra.get("nifti_sform_code", 1)) if own else 1
    qform = int(meta.extra.get("nifti_qform_code", 1)) if own else 1
    img = nib.Nifti1Image(data, affine)
    img.header.set_sform(affine, code=sform)
    img.header.set_qform(affine, code=qform)
    units = meta.extra.get("nifti_xyzt_units") or ["mm", "sec"]
    img.header.set_xyzt_units(*units)
    med = meta.medical
    if med is not None and (med.rescale_slope, med.rescale_intercept) != (1.0, 0.0):
        img.header.set_slope_inter(med.rescale_slope, med.rescale_intercept)
    img.header["descrip"] = b"zssr super-resolution"
    img.set_data_dtype(data.dtype)
    return img


def header_block(meta: Metadata, dtype: np.dtype, *,
                 affine: Callable[[Metadata], np.ndarray], path: Path) -> bytes:
    """The bytes before the voxels, as ``nib.save`` writes them (``to_file_map``: the
    dtype finalised, the header updated from the data's shape, scl_slope/inter from the
    array writer when unset, header and extensions, zeros up to vox_offset), for an image
    of ``meta``'s shape and ``dtype`` whose data is never held; ``affine(meta)`` is its
    voxel-to-RAS+ affine (a failure there is refused as nibabel's are)."""
    shape = _nib_shape(meta)
    data = np.broadcast_to(np.zeros((), dtype=dtype), shape)
    try:
        img = _image(meta, affine(meta), data)
        img.get_data_dtype(finalize=True)
        img.update_header()
        hdr = img.header
        slope = hdr["scl_slope"].item() if hdr.has_data_slope else np.nan
        inter = hdr["scl_inter"].item() if hdr.has_data_intercept else np.nan
        if np.all(np.isnan((slope, inter))):
            writer = make_array_writer(data, hdr.get_data_dtype(), hdr.has_data_slope,
                                       hdr.has_data_intercept)
            hdr.set_slope_inter(*get_slope_inter(writer))
        block = io.BytesIO()
        hdr.write_to(block)
        offset = int(hdr.get_data_offset())
    except Exception as exc:  # noqa: BLE001 - nibabel refuses a shape or dtype
        raise InvalidDataError(f"{path}: cannot make a NIfTI-1 header for a {shape} {dtype} "
                               f"volume: {' '.join(str(exc).split())[:200]}; write a .zarr "
                               "output") from None
    head = block.getvalue()
    return head + bytes(max(0, offset - len(head)))


def _release(volume: np.memmap) -> None:
    """Give the mapping's pages back to the kernel (they stay in the file and the page
    cache; a dirty page is written back as usual), so the resident set holds what was
    just written, not the volume (the rule of ``pipeline.image.volume.DiskVolume``)."""
    mm = getattr(volume, "_mmap", None)
    if mm is not None and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


def _gzip(raw: Path, out: Path) -> None:
    """``raw`` through gzip into ``out`` in chunks, as nibabel compresses (its
    ``DeterministicGzipFile``: level ``Opener.default_compresslevel``, no file name,
    mtime 0), so the bytes are ``nib.save``'s."""
    with open(raw, "rb") as src, os.fdopen(create_file(out, 0o644), "wb") as fh, \
            gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0,
                          compresslevel=Opener.default_compresslevel) as gz:
        while chunk := src.read(_GZIP_CHUNK):
            gz.write(chunk)


class NiftiBuffer:
    """The ``.nii`` for ``path`` being written (module doc): ``header`` then the voxels
    of ``shape`` ``(bands, frames, rows, cols)``, made on the first write; not
    thread-safe (the writer holds its lock)."""

    def __init__(self, path: Path, header: bytes, shape: tuple[int, int, int, int],
                 dtype: np.dtype) -> None:
        self.path, self._header, self._shape, self._dtype = path, header, shape, dtype
        self._gz = path.name.lower().endswith(".gz")
        self._volume: np.memmap | None = None  # (bands, frames, rows, cols), on disk
        self._tmp: Path | None = None

    def _open(self) -> np.memmap:
        """The disk buffer: the ``.nii`` (header, then zeros, sparse) in a private folder."""
        self._tmp = new_temp_dir(self.path, "partial")  # private: nothing follows a link
        name = self.path.name[:-3] if self._gz else self.path.name
        size = len(self._header) + math.prod(self._shape) * self._dtype.itemsize
        with os.fdopen(create_file(self._tmp / name, 0o644), "wb") as fh:
            fh.write(self._header)
            fh.truncate(size)  # sparse: blocks come as the voxels arrive
        fd = os.open(self._tmp / name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "r+b") as fh:  # the map keeps its own descriptor
            self._volume = np.memmap(fh, dtype=self._dtype, mode="r+",
                                     offset=len(self._header), shape=self._shape)
        return self._volume

    def write(self, array: np.ndarray, frame: int, row: int, col: int) -> None:
        """Store ``(bands, h, w)`` at ``(row, col)`` of slice ``frame``."""
        volume = self._volume if self._volume is not None else self._open()
        h, w = array.shape[1:]
        volume[:, frame, row:row + h, col:col + w] = array
        _release(volume)

    def finish(self) -> Path:
        """The finished file in the private folder, named as ``path`` (nothing written: a
        volume of zeros), to be renamed into place."""
        if self._volume is None:
            self._open()
        self._volume = None  # unmapped; the voxels are in the file
        assert self._tmp is not None  # noqa: S101 - set by _open
        if self._gz:
            raw = self._tmp / self.path.name[:-3]
            _gzip(raw, self._tmp / self.path.name)
            raw.unlink()
        return self._tmp / self.path.name

    def discard(self) -> None:
        """Drop the mapping and the private folder with whatever it still holds."""
        self._volume = None
        if self._tmp is not None:
            remove_path(self._tmp)
            self._tmp = None
