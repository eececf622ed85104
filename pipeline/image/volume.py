"""``zssr upscale --through-plane``: a thick-slice volume made thin (issue 18).

The input is a stack whose frames are slices (a NIfTI volume, a DICOM series folder or
an enhanced multi-frame file): its geometry gives the slice spacing (the distance
between the first two slice positions, else the slice thickness) and the in-plane
spacing; the slices must be the thickest axis.  The factor is ``--scale-z`` or the
slice spacing over ``--slice-spacing``.  The slice profile is a Gaussian of FWHM =
SliceThickness (a thickness other than the spacing, a gap or an overlap, is modelled
by the profile's width), unless given.  :func:`zssr.through_plane.super_resolve_through_plane`
does the rest; the result is written by the output's format writer with the new
slices' geometry (NIfTI: :func:`io_adapters.nifti.scale_nifti_slices`; DICOM:
:func:`io_adapters.dicom_writer.scale_dicom_slices`, the positions along the slice
normal of ImageOrientationPatient, the first on the first old slice; a DICOM output
folder is a new derived series, one file per thin slice; an enhanced multi-frame input
gives one enhanced ``.dcm`` whose frames are the thin slices).

Memory: the LR volume is held in memory (training samples from all of it; the engine
keeps a float32 copy in working units), the result is not: the engine writes it slab by
slab (``out=``) into a ``numpy.memmap`` of a private temporary file, ``.<name>.volume-<8
hex>/sr.raw`` beside the output (in a run: inside the run's ``outputs/``), whose pages
are handed back to the kernel as each frame is written (:class:`DiskVolume`); the writer then
reads it frame by frame.  The temporary goes on success, on failure and on an interrupt,
and one a killed process left is removed by the next writer of that output
(:func:`pipeline.locking.clean_stale_partials`).  No writer holds the whole output
either: each puts a frame on disk as it arrives, in a temporary beside the output that its
commit renames into place (NIfTI: a disk buffer laid out as the ``.nii``, gzipped on commit
for ``.nii.gz``; DICOM: a series' slice file as soon as the slice is complete, or an
enhanced file's frames spooled as PixelData bytes; Zarr: the chunks of
``<name>.zarr.partial``), so a writer holds about one frame in memory.  Measured:
BENCHMARKS.md section 12a.

Limits, said plainly: one band; a legacy multi-frame DICOM (no per-frame
functional groups) is written as NIfTI or Zarr only; a volume whose thickest axis is not the
slice axis is refused, and so is a DICOM stack off its normal (gantry tilt) or with
per-slice rescales.
"""

from __future__ import annotations

import logging
import mmap
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from io_adapters.base import Metadata, Window, check_output_path
from io_adapters.detect import DEFAULT_MAX_PIXELS, open_reader, open_writer
from io_adapters.errors import InvalidDataError
from io_adapters.nifti import scale_nifti_slices
from io_adapters.output_safety import new_temp_dir, remove_tree
from pipeline.locking import OutputLock, abort_partials, clean_stale_partials
from zssr.config import ZSSRConfig
from zssr.through_plane import (
    ThroughPlaneHistory,
    output_slices,
    slice_axis,
    super_resolve_through_plane,
)

__all__ = ["VolumeJob", "VolumePlan", "VolumeResult", "DiskVolume", "volume_geometry",
           "through_plane_metadata", "plan_volume", "upscale_through_plane"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VolumeJob:
    input: Path
    output: Path
    config: ZSSRConfig
    scale_z: float | None = None
    slice_spacing: float | None = None  # target spacing (mm); the factor is old / new
    profile: float | None = None  # slice profile FWHM / slice spacing; None: from the file
    device: str = "cpu"
    overwrite: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    slab: int = 64
    writer_options: dict = field(default_factory=dict)  # e.g. a DICOM transfer_syntax


@dataclass
class VolumeResult:
    output: Path
    factor: float
    slices: tuple[int, int]  # (old, new)
    history: ThroughPlaneHistory
    seconds: float


def volume_geometry(meta: Metadata) -> tuple[float, float, float, float]:
    """``(slice spacing, row spacing, column spacing, slice thickness)`` in mm, or a
    one-line error naming the file and what is missing."""
    path, med = meta.path, meta.medical
    if meta.frames < 2:
        raise InvalidDataError(f"{path}: has {meta.frames} slice; through-plane SR needs a "
                               "volume of at least 2 slices")
    if med is None or med.pixel_spacing is None or min(med.pixel_spacing) <= 0:
        raise InvalidDataError(f"{path}: no pixel spacing (or a zero one); through-plane SR "
                               "needs the volume's geometry")
    dz = None
    if len(med.positions) > 1:
        steps = np.diff(np.asarray(med.positions, dtype=float), axis=0)
        dist = np.linalg.norm(steps, axis=1)
        if dist.min() <= 1e-6:
            raise InvalidDataError(f"{path}: two slices share a position (duplicate slices); "
                                   "remove the duplicates")
        if dist.max() - dist.min() > 1e-3 * dist.max():
            raise InvalidDataError(f"{path}: slices are not evenly spaced ({dist.min():.4g} to "
                                   f"{dist.max():.4g} mm: a gap or a missing slice)")
        dz = float(dist.mean())
    thickness = med.slice_thickness
    dz = dz or thickness
    if not dz or dz <= 0 or not np.isfinite(dz):
        raise InvalidDataError(f"{path}: no slice spacing (no positions and no slice "
                               "thickness, or zero); through-plane SR needs it")
    dr, dc = (float(v) for v in med.pixel_spacing)
    return dz, dr, dc, float(thickness) if thickness and thickness > 0 else dz


def through_plane_metadata(meta: Metadata, factor: float, slices: int) -> Metadata:
    """Metadata of the thin-slice result: ``slices`` slices ``dz / factor`` apart from the
    first old slice, in-plane geometry kept."""
    if meta.format == "nifti":
        return scale_nifti_slices(meta, factor, slices)
    if meta.format == "dicom" and "dicom_frames" in meta.extra:
        from io_adapters.dicom_writer import scale_dicom_slices  # pydicom is optional

        return scale_dicom_slices(meta, factor, slices)
    med = meta.medical
    if med is None or len(med.positions) < 2:
        raise InvalidDataError(f"{meta.path}: slice positions unknown; cannot place the new "
                               "slices")
    p0 = np.asarray(med.positions[0], dtype=float)
    step = (np.asarray(med.positions[1], dtype=float) - p0) / factor
    positions = tuple(tuple(float(v) for v in p0 + j * step) for j in range(slices))
    thickness = float(np.linalg.norm(step))
    med = replace(med, positions=positions, slice_thickness=thickness)
    return replace(meta, frames=slices, medical=med, extra={
        k: v for k, v in meta.extra.items() if k not in ("datasets", "dicom_frames")})


def _factor(job: VolumeJob, dz: float) -> float:
    if (job.scale_z is None) == (job.slice_spacing is None):
        raise InvalidDataError(f"{job.input}: give one of --scale-z and --slice-spacing")
    factor = job.scale_z if job.scale_z is not None else dz / float(job.slice_spacing)
    if not factor > 1 or not np.isfinite(factor):
        raise InvalidDataError(f"{job.input}: slice spacing {dz:.4g} mm -> factor {factor:.4g}; "
                               "through-plane SR needs a factor > 1 (thinner slices)")
    return float(factor)


def upscale_through_plane(job: VolumeJob, *,
                          before_commit: Callable[[], None] | None = None) -> VolumeResult:
    """Read the volume, super-resolve it through-plane and write it atomically
    (``before_commit`` is called once the result is ready, just before the write)."""
    t0 = time.perf_counter()
    check_output_path(Path(job.output), inputs=(Path(job.input),))
    with OutputLock(job.output):
        clean_stale_partials(job.output)
        try:
            return _run(job, t0, before_commit)
        except BaseException:
            abort_partials(job.output)
            raise


@dataclass(frozen=True)
class VolumePlan:
    """What :func:`plan_volume` reads from a volume's metadata, before any pixel."""

    factor: float
    profile: float  # slice profile FWHM / slice spacing
    spacing: float  # old slice spacing, mm
    out_meta: Metadata  # the thin-slice result's

    @property
    def slices(self) -> int:
        return self.out_meta.frames


def plan_volume(job: VolumeJob, meta: Metadata) -> VolumePlan:
    """The factor, profile and output geometry of ``job`` on ``meta``, or the one-line
    error of a volume that cannot go through-plane (``zssr upscale`` and ``zssr run``)."""
    dz, dr, dc, thickness = volume_geometry(meta)
    if slice_axis((dz, dr, dc)) != 0:
        raise InvalidDataError(f"{job.input}: slices {dz:.4g} mm apart with pixels of "
                               f"{dr:.4g} x {dc:.4g} mm: the slices are not the thickest "
                               "axis; through-plane SR works along the slice axis only")
    if meta.bands != 1:
        raise InvalidDataError(f"{job.input}: {meta.bands} bands; through-plane SR takes "
                               "single-band volumes only")
    factor = _factor(job, dz)
    profile = job.profile if job.profile is not None else thickness / dz
    out_meta = through_plane_metadata(meta, factor, output_slices(meta.frames, factor))
    return VolumePlan(factor, profile, dz, out_meta)


class DiskVolume(np.memmap):
    """The result volume on disk: a ``numpy.memmap`` whose pages this process gives back
    (``madvise(MADV_DONTNEED)``) as soon as they are written, so that its resident set holds
    about one frame, not the volume (the data stay in the file and the page cache).

    A slab ``[:, y0:y1, :]`` touches every frame; the page cache maps a large folio (up
    to ~1 MB on ext4) at each touch, so a slab written at once maps nearly the whole file
    (measured: 93 of 127 MB).  It is written frame by frame, each frame's pages given back
    before the next."""

    def __setitem__(self, key, value) -> None:  # noqa: ANN001 - numpy's signature
        if self.ndim == 3 and isinstance(key, tuple) and len(key) == 3 \
                and key[0] == slice(None):  # a slab across all frames: one frame at a time
            value = np.broadcast_to(value, self[key].shape)
            for k in range(self.shape[0]):
                super().__setitem__((k, *key[1:]), value[k])
                self.release()
            return
        super().__setitem__(key, value)
        self.release()

    def release(self) -> None:
        mm = getattr(self, "_mmap", None)
        if mm is not None and hasattr(mmap, "MADV_DONTNEED"):
            mm.madvise(mmap.MADV_DONTNEED)

    def frame(self, k: int) -> np.ndarray:
        """Slice ``k`` as an in-memory array (its pages given back at once)."""
        out = np.array(self[k], copy=True).view(np.ndarray)
        self.release()
        return out


def _run(job: VolumeJob, t0: float, before_commit: Callable[[], None] | None) -> VolumeResult:
    with open_reader(job.input, max_pixels=job.max_pixels) as reader:
        meta = reader.meta
        plan = plan_volume(job, meta)
        full = Window(0, 0, meta.cols, meta.rows)
        volume = np.stack([reader.read(full, frame=k)[0] for k in range(meta.frames)])
    factor, profile, dz, out_meta = plan.factor, plan.profile, plan.spacing, plan.out_meta
    n_out = plan.slices
    writer = open_writer(job.output, out_meta, inputs=(Path(job.input),),
                         overwrite=job.overwrite, **job.writer_options)
    writer.abort()  # a bad output fails before the training
    log.info("%s: %d slices %.4g mm apart -> %d slices %.4g mm apart (x%.4g, profile %.3g)",
             job.input, meta.frames, dz, n_out, dz / factor, factor, profile)
    work = new_temp_dir(Path(job.output), "volume")  # private (0700), beside the output
    try:
        sr = DiskVolume(work / "sr.raw", dtype=volume.dtype, mode="w+",
                        shape=(n_out, meta.rows, meta.cols))
        sr, history = super_resolve_through_plane(volume, factor=factor, profile=profile,
                                                  config=job.config, device=job.device,
                                                  slab=job.slab, out=sr)
        del volume
        _write(job, out_meta, sr, before_commit)
        del sr
    finally:
        remove_tree(work)
    return VolumeResult(Path(job.output), factor, (meta.frames, n_out), history,
                        time.perf_counter() - t0)


def _write(job: VolumeJob, out_meta: Metadata, sr: DiskVolume,
           before_commit: Callable[[], None] | None) -> None:
    """The result, frame by frame, into the output's writer (committed at the end)."""
    clip = None
    if out_meta.format == "dicom":  # stored values within BitsStored (e.g. 12 of 16 bits)
        from io_adapters.dicom import stored_range

        clip = stored_range(out_meta)
    if before_commit is not None:  # zssr run: this run's claim on the output
        before_commit()
    with open_writer(job.output, out_meta, inputs=(Path(job.input),),
                     overwrite=job.overwrite, **job.writer_options) as writer:
        for k in range(out_meta.frames):
            frame = sr.frame(k)
            if clip is not None:
                frame = np.clip(frame, *clip).astype(out_meta.dtype, copy=False)
            writer.write(frame[None], Window(0, 0, out_meta.cols, out_meta.rows), frame=k)
