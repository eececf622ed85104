"""The one contract every format adapter follows.

A reader is opened on a path and exposes typed :class:`Metadata`; pixels come
out of ``read(window)`` as ``(bands, rows, cols)`` arrays in the file's own
dtype, *boundless*: parts of the window outside the raster are filled with the
nodata value (or 0).  Windows are :class:`rasterio.windows.Window` objects
(``col_off, row_off, width, height``) in full-resolution pixel coordinates.

Band indexes are 0-based everywhere in this package (``bands=[0, 2]``,
``meta.alpha_band``), like the array axis they index.

Stacks (a multi-frame DICOM, a folder of slices) have ``frames > 1``; each
frame is a 2-D image with ``bands`` samples per pixel and is read with
``read(window, frame=i)``.

A writer is created for an output path and a (scaled) :class:`Metadata`,
receives ``write(array, window, frame=0)`` calls for disjoint regions, and
becomes visible at its final path only on ``commit()``; ``abort()`` (or an
exception inside a ``with`` block) removes every partial byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from rasterio.windows import Window

from .errors import WriteError

# GDAL's block cache defaults to 5 % of RAM and fills as a scene streams through it,
# so peak memory would grow with the scene; the pipeline caps it (MB) for the run.
GDAL_CACHE_MB = 256

__all__ = ["GDAL_CACHE_MB", "Window", "GeoInfo", "MedicalInfo", "Metadata", "Reader", "Writer", "full_window"]


@dataclass(frozen=True)
class GeoInfo:
    """Georeferencing of a raster (GDAL conventions)."""

    crs_wkt: str | None
    transform: tuple[float, float, float, float, float, float]  # affine a, b, c, d, e, f
    colorinterp: tuple[str, ...] = ()
    scales: tuple[float, ...] = ()
    offsets: tuple[float, ...] = ()
    units: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    band_tags: tuple[dict[str, str], ...] = ()  # per band (BANDNAME, WAVELENGTH...)


@dataclass(frozen=True)
class MedicalInfo:
    """DICOM geometry and value mapping kept with the pixels."""

    modality: str
    photometric: str  # MONOCHROME1, MONOCHROME2, RGB
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing) in mm
    slice_thickness: float | None
    orientation: tuple[float, ...] | None  # ImageOrientationPatient (6 values)
    positions: tuple[tuple[float, float, float], ...] = ()  # ImagePositionPatient per frame
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    bits_stored: int | None = None
    sources: tuple[str, ...] = ()  # one file per frame for a series, else the single file


@dataclass(frozen=True)
class Metadata:
    path: Path
    format: str  # "geotiff", "dicom", "plain", "zarr"
    bands: int
    rows: int
    cols: int
    dtype: np.dtype
    frames: int = 1
    nodata: float | None = None
    has_mask: bool = False  # an internal/alpha mask or nodata marks invalid pixels
    band_names: tuple[str, ...] = ()
    geo: GeoInfo | None = None
    medical: MedicalInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    alpha_band: int | None = None  # index of an alpha band (kept a band; 0 = transparent)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(bands, rows, cols)`` of one frame."""
        return (self.bands, self.rows, self.cols)


def full_window(meta: Metadata) -> Window:
    return Window(0, 0, meta.cols, meta.rows)


@runtime_checkable
class Reader(Protocol):
    meta: Metadata

    def read(self, window: Window | None = None, *, frame: int = 0,
             bands: list[int] | None = None) -> np.ndarray:
        """``(bands, rows, cols)`` in the file's dtype; boundless (nodata or 0 outside)."""
        ...

    def read_mask(self, window: Window | None = None, *, frame: int = 0) -> np.ndarray:
        """``(rows, cols)`` bool, True where every band is valid (outside the raster: False)."""
        ...

    def read_masks(self, window: Window | None = None, *, frame: int = 0) -> np.ndarray:
        """``(bands, rows, cols)`` bool, per-band validity (outside the raster: False)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Reader: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class Writer(Protocol):
    path: Path  # final path; nothing exists there before commit()

    def write(self, array: np.ndarray, window: Window, *, frame: int = 0,
              mask: np.ndarray | None = None) -> None:
        """Write ``(bands, h, w)`` at ``window``; ``mask`` (``(h, w)`` or per band) False
        marks invalid pixels (nodata, alpha 0 or the internal mask, by format)."""
        ...

    def commit(self) -> Path: ...

    def abort(self) -> None: ...


class PathReaderMixin:
    """``with`` support and pickling for readers built as ``Cls(path, bands=...)``.

    A pickled reader (sent to a Dask worker) carries only its path and band selection
    and reopens the file on arrival; subclasses keep the selection in ``_requested``.
    """

    def __enter__(self):  # noqa: D105
        return self

    def __exit__(self, *exc: object) -> None:  # noqa: D105
        self.close()  # type: ignore[attr-defined]

    def __getstate__(self) -> dict:  # noqa: D105
        return {"path": self.path, "bands": self._requested}  # type: ignore[attr-defined]

    def __setstate__(self, state: dict) -> None:  # noqa: D105
        self.__init__(state["path"], bands=state["bands"])  # type: ignore[misc]


class AtomicWriterMixin:
    """``with`` support: commit on success, abort on any exception."""

    def __enter__(self):  # noqa: D105
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: D105
        if exc_type is None:
            self.commit()  # type: ignore[attr-defined]
        else:
            self.abort()  # type: ignore[attr-defined]


def check_output_path(path: Path, *, inputs: tuple[Path, ...] = (),
                      root: Path | None = None, overwrite: bool | None = None) -> Path:
    """Check an output path with the one output rule (:mod:`io_adapters.output_safety`:
    never an input or a folder around or inside one, never through a link, inside
    ``root`` when given) and refuse one whose folder is missing or not writable.

    ``overwrite`` (True/False) also applies the rule to an existing output (it needs
    ``overwrite`` and must be one zssr wrote); None leaves that to the caller.
    Returns the absolute path (folder resolved, last name kept: a link is never followed).
    Writability is probed by creating (and at once deleting) an anonymous file in
    the folder: permission bits say nothing for root, read-only mounts or ``/proc``.
    """
    import tempfile

    from .output_safety import check_output

    out = check_output(path, inputs=inputs, root=root, overwrite=overwrite)
    parent = out.parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise WriteError(f"{out}: output folder {parent} {what}")
    try:
        with tempfile.TemporaryFile(dir=parent, prefix=".zssr-probe-"):
            pass
    except OSError as exc:
        raise WriteError(f"{out}: output folder {parent} is not writable "
                         f"({exc.strerror or exc})") from None
    return out

