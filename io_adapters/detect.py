"""Choose a reader by file *content* and a writer by output suffix.

``open_reader(path)`` sniffs the first bytes (TIFF/BigTIFF, PNG, JPEG, BMP,
DICOM's ``DICM`` at offset 128, NIfTI's ``n+1`` at 344, gzip-wrapped too) or, for
a folder, looks for Zarr metadata (``zarr.json``, v2 ``.zgroup``/``.zarray``) and then asks the DICOM adapter
whether it is a folder of slices.  The file name's extension is only a hint
used in error messages: a PNG named ``.tif`` is read as a PNG.

Every TIFF, georeferenced or not, goes to :class:`GeoTiffReader` (GDAL reads
tiled, compressed, 16-bit colour and float TIFFs that Pillow cannot; a TIFF
without georeference gets ``meta.geo = None``).

The registries are plain dicts so other adapters can plug in:
:func:`register_reader` / :func:`register_writer`.  DICOM is loaded lazily by
:func:`load_dicom_plugin` (the DICOM hook), which imports
``io_adapters.dicom`` and registers its ``sniff_dicom``, ``open_dicom``,
``DicomWriter`` and ``scale_dicom_metadata``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geometry import ScaleLike

from ._common import stale_temps
from .base import Metadata, Reader, Writer
from .errors import (
    CorruptFileError,
    InputNotFoundError,
    InvalidDataError,
    UnsupportedFormatError,
)
from .vsi import gdal_path, is_vsi

__all__ = [
    "ReaderFormat", "WriterFormat", "READERS", "WRITERS", "SCALERS", "open_reader",
    "open_writer", "scale_metadata", "register_reader", "register_writer",
    "load_dicom_plugin", "supported_formats", "sniff", "stale_temps", "DEFAULT_MAX_PIXELS",
    "check_declared_size",
]

log = logging.getLogger(__name__)

HEADER_BYTES = 132  # enough for DICOM's preamble + 'DICM'
DICOM_MODULE = ".dicom"  # the DICOM hook: imported lazily, relative to this package


@dataclass(frozen=True)
class ReaderFormat:
    """How to recognise a format and open a reader for it.

    ``sniff(path, head)`` gets the first :data:`HEADER_BYTES` bytes of a file
    (``b""`` for a folder); ``open(path, bands=...)`` returns a Reader.
    """

    description: str
    sniff: Callable[[Path, bytes], bool]
    open: Callable[..., Reader]


@dataclass(frozen=True)
class WriterFormat:
    """Output suffixes (``""`` for a folder) and the writer factory ``(path, meta, **opts)``."""

    description: str
    suffixes: tuple[str, ...]
    create: Callable[..., Writer]


def _tiff(path: Path, head: bytes) -> bool:
    from .geotiff import TIFF_MAGICS

    return head[:4] in TIFF_MAGICS


def _png(path: Path, head: bytes) -> bool:
    return head.startswith(b"\x89PNG\r\n\x1a\n")


def _jpeg(path: Path, head: bytes) -> bool:
    return head.startswith(b"\xff\xd8\xff")


def _bmp(path: Path, head: bytes) -> bool:
    # 'BM' then, at offset 14, the size of a known DIB header
    return head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in (
        12, 40, 52, 56, 64, 108, 124)


def _zarr(path: Path, head: bytes) -> bool:
    return path.is_dir() and any((path / n).is_file() for n in ("zarr.json", ".zgroup", ".zarray"))


def _vrt(path: Path, head: bytes) -> bool:
    # GDAL's virtual raster (XML); zssr writes one to stack a STAC Item's assets
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<VRTDataset")


def _nifti(path: Path, head: bytes) -> bool:
    from .nifti import sniff_nifti

    return sniff_nifti(path, head)


def _open_nifti(path: Path, *, bands: list[int] | None = None) -> Reader:
    from .nifti import NiftiReader

    return NiftiReader(path, bands=bands)


def _nifti_writer(path: Path, meta: Metadata, **options: Any) -> Writer:
    from .nifti import NiftiWriter

    return NiftiWriter(path, meta, **options)


def _scale_nifti(meta: Metadata, scale: ScaleLike) -> Metadata:
    from .nifti import scale_nifti_metadata

    return scale_nifti_metadata(meta, scale)


def _open_geotiff(path: Path, *, bands: list[int] | None = None) -> Reader:
    from .geotiff import GeoTiffReader

    return GeoTiffReader(path, bands=bands)


def _open_plain(path: Path, *, bands: list[int] | None = None) -> Reader:
    from .plain import PlainReader

    return PlainReader(path, bands=bands)


def _open_zarr(path: Path, *, bands: list[int] | None = None) -> Reader:
    from .zarr_reader import ZarrReader

    return ZarrReader(path, bands=bands)


def _cog_writer(path: Path, meta: Metadata, **options: Any) -> Writer:
    from .cog import CogWriter

    options.setdefault("cog", meta.geo is not None)
    return CogWriter(path, meta, **options)


def _png_writer(path: Path, meta: Metadata, **options: Any) -> Writer:
    from .plain import PngWriter

    return PngWriter(path, meta, **options)


def _zarr_writer(path: Path, meta: Metadata, **options: Any) -> Writer:
    from .zarr_store import ZarrWriter

    return ZarrWriter(path, meta, **options)


def _scale_geo(meta: Metadata, scale: ScaleLike) -> Metadata:
    from .geotiff import scale_geo_metadata

    return scale_geo_metadata(meta, scale)


def _scale_plain(meta: Metadata, scale: ScaleLike) -> Metadata:
    from .plain import scale_plain_metadata

    return scale_plain_metadata(meta, scale)


def _scale_zarr(meta: Metadata, scale: ScaleLike) -> Metadata:
    from .zarr_store import scale_zarr_metadata

    return scale_zarr_metadata(meta, scale)


READERS: dict[str, ReaderFormat] = {
    "geotiff": ReaderFormat("TIFF/GeoTIFF/COG", _tiff, _open_geotiff),
    "png": ReaderFormat("PNG", _png, _open_plain),
    "jpeg": ReaderFormat("JPEG", _jpeg, _open_plain),
    "bmp": ReaderFormat("BMP", _bmp, _open_plain),
    "zarr": ReaderFormat("Zarr folder (zarr.json)", _zarr, _open_zarr),
    "nifti": ReaderFormat("NIfTI (.nii, .nii.gz)", _nifti, _open_nifti),
    "vrt": ReaderFormat("GDAL VRT", _vrt, _open_geotiff),
}
WRITERS: dict[str, WriterFormat] = {
    "geotiff": WriterFormat("COG (georeferenced) or tiled TIFF", (".tif", ".tiff"), _cog_writer),
    "zarr": WriterFormat("Zarr v3", (".zarr",), _zarr_writer),
    "png": WriterFormat("PNG (8/16-bit, 1-4 bands)", (".png",), _png_writer),
    "nifti": WriterFormat("NIfTI-1 volume", (".nii", ".gz"), _nifti_writer),
}
SCALERS: dict[str, Callable[[Metadata, ScaleLike], Metadata]] = {
    "geotiff": _scale_geo, "plain": _scale_plain, "zarr": _scale_zarr, "nifti": _scale_nifti,
}
_dicom_state: dict[str, str | bool] = {"loaded": False, "error": ""}


def register_reader(name: str, fmt: ReaderFormat) -> None:
    READERS[name] = fmt


def register_writer(name: str, fmt: WriterFormat) -> None:
    WRITERS[name] = fmt


def load_dicom_plugin() -> bool:
    """The DICOM hook: import ``io_adapters.dicom`` once and register it.

    Returns True when DICOM is available; otherwise the import error is kept
    for messages and the other formats keep working.
    """
    if _dicom_state["loaded"]:
        return "dicom" in READERS
    try:
        mod = importlib.import_module(DICOM_MODULE, __package__)
    except ImportError as exc:  # other errors in the module propagate: it is in-tree code
        _dicom_state.update(loaded=True, error=f"{type(exc).__name__}: {exc}")
        log.debug("DICOM adapter unavailable: %s", exc)
        return False
    _dicom_state["loaded"] = True
    opener = getattr(mod, "open_dicom", None) or mod.DicomReader
    READERS.setdefault("dicom", ReaderFormat(
        "DICOM file or folder of slices",
        lambda path, head: bool(mod.sniff_dicom(path)),
        lambda path, *, bands=None: _select(opener(path), bands)))
    if hasattr(mod, "DicomWriter"):
        WRITERS.setdefault("dicom", WriterFormat(
            "DICOM (.dcm file, or a folder for a series)", (".dcm", ""),
            lambda path, meta, **opts: mod.DicomWriter(path, meta, **opts)))
    if hasattr(mod, "scale_dicom_metadata"):
        SCALERS.setdefault("dicom", mod.scale_dicom_metadata)
    return True


def _select(reader: Reader, bands: list[int] | None) -> Reader:
    if bands is not None and list(bands) != list(range(reader.meta.bands)):
        raise InvalidDataError(
            f"{reader.meta.path}: band selection is not supported for DICOM; omit bands")
    return reader


def supported_formats() -> str:
    """One-line list of the input formats, for error messages."""
    load_dicom_plugin()
    return ", ".join(fmt.description for fmt in READERS.values())


def _output_formats() -> str:
    load_dicom_plugin()
    return ", ".join(f"{'/'.join(s or 'folder' for s in f.suffixes)} ({f.description})"
                     for f in WRITERS.values())


def _head(path: Path) -> bytes:
    """First bytes of ``path`` (``b""`` for a folder), with our errors for bad inputs."""
    if not path.exists():
        raise InputNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        return b""
    if not path.is_file():  # a FIFO or device: opening it may block forever
        raise InputNotFoundError(f"{path}: not a regular file (a pipe, socket or device); "
                                 "give an image file or a folder")
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEADER_BYTES)
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    if not head:
        raise CorruptFileError(f"{path}: file is empty (0 bytes)")
    return head


def sniff(path: str | Path) -> str:
    """Name of the format of ``path`` (a key of :data:`READERS`), judged by content."""
    path = Path(path)
    if is_vsi(path):  # a remote object or an archive member: GDAL knows what it is
        return "geotiff"
    head = _head(path)
    dicom = load_dicom_plugin()
    if head[128:132] == b"DICM":  # checked first: a DICOM preamble may look like a TIFF
        if not dicom:
            raise UnsupportedFormatError(f"{path}: is DICOM but the DICOM adapter is "
                                         f"unavailable ({_dicom_state['error']})")
        return "dicom"
    for name, fmt in READERS.items():
        if fmt.sniff(path, head):
            return name
    if path.is_dir():
        raise UnsupportedFormatError(
            f"{path}: folder is neither a Zarr store (no zarr.json) nor a folder of DICOM "
            f"slices; supported: {supported_formats()}")
    hint = f", although named {path.suffix}" if path.suffix else ""
    raise UnsupportedFormatError(
        f"{path}: unsupported file content (starts with {head[:8]!r}{hint}); "
        f"supported: {supported_formats()}")


#: Most pixels (rows x cols x frames) an input may *declare* unless the caller raises it
#: (``--max-pixels``).  A 16 000^2 Landsat panchromatic scene (2.6e8) passes; a 100 000^2
#: header (1e10: a 460 KB sparse TIFF of 152 881 tiles, days of work) is refused in
#: milliseconds, before a pixel is read.  Headers that large are more often damaged or
#: hostile than real; a real one can be cut into parts (gdal_translate -srcwin).
DEFAULT_MAX_PIXELS = 4 * 10**8


def check_declared_size(meta: Metadata, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse a raster whose declared size is over ``max_pixels`` (nothing is read)."""
    total = int(meta.frames) * int(meta.rows) * int(meta.cols)
    if total > max_pixels:
        frames = f" x {meta.frames} frames" if meta.frames > 1 else ""
        raise InvalidDataError(
            f"{meta.path}: declares {meta.rows} x {meta.cols} pixels{frames} ({total:.3g}), "
            f"more than the limit of {max_pixels:.3g} pixels (--max-pixels); raise "
            "--max-pixels if the image is real, or cut it into parts (gdal_translate -srcwin)")


def _open_url(path: Path, *, bands: list[int] | None, max_pixels: int) -> Reader:
    """A URL input: GDAL's windows for rasters, fsspec for DICOM, plain images and Zarr
    (:mod:`io_adapters.fetch`)."""
    from .fetch import open_remote, remote_kind

    kind = remote_kind(path)
    if kind == "gdal":
        return READERS["geotiff"].open(path, bands=bands)
    if kind == "zarr":
        return READERS["zarr"].open(path, bands=bands)
    return open_remote(path, kind=kind, bands=bands, max_pixels=max_pixels,
                       open_local=_open_local)


def _open_local(path: Path, bands: list[int] | None) -> Reader:
    """The reader of a local copy, by its content (picklable: a Dask worker reopens)."""
    return READERS[sniff(path)].open(path, bands=bands)


def open_reader(path: str | Path, *, bands: list[int] | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> Reader:
    """Open ``path`` with the reader its content calls for; ``bands`` are 0-based.

    Only the header is read; a declared size over ``max_pixels`` is refused before any
    pixel is (:func:`check_declared_size`).
    """
    path = Path(gdal_path(path))  # s3://, gs://, az://, http(s):// -> GDAL's /vsi names
    if is_vsi(path):
        reader = _open_url(path, bands=bands, max_pixels=max_pixels)
    else:
        reader = READERS[sniff(path)].open(path, bands=bands)
    try:
        check_declared_size(reader.meta, max_pixels=max_pixels)
    except BaseException:
        reader.close()
        raise
    return reader


def open_writer(path: str | Path, meta: Metadata, *, inputs: tuple[Path, ...] = (),
                **options: Any) -> Writer:
    """Create the writer for the output suffix of ``path``.

    ``.tif``/``.tiff``: :class:`~io_adapters.cog.CogWriter` (a COG when
    ``meta.geo`` is set, else a tiled TIFF); ``.zarr``:
    :class:`~io_adapters.zarr_store.ZarrWriter`; ``.png``:
    :class:`~io_adapters.plain.PngWriter`; ``.dcm`` or no suffix (a folder):
    the DICOM writer.  ``options`` go to the writer (``overwrite``,
    ``chunks``, ``attrs``, ``compress``...).
    """
    path = Path(path)
    load_dicom_plugin()
    suffix = path.suffix.lower()
    for fmt in WRITERS.values():
        if suffix in fmt.suffixes:
            return fmt.create(path, meta, inputs=inputs, **options)
    raise UnsupportedFormatError(
        f"{path}: cannot write {suffix or 'a folder'} outputs; choose one of: "
        f"{_output_formats()}")


def scale_metadata(meta: Metadata, scale: ScaleLike) -> Metadata:
    """Metadata of ``meta``'s image super-resolved by ``scale``, by the format's own rule."""
    load_dicom_plugin()
    if meta.format not in SCALERS:
        raise UnsupportedFormatError(f"{meta.path}: no metadata scaling for format "
                                     f"{meta.format!r}; known: {', '.join(SCALERS)}")
    return SCALERS[meta.format](meta, scale)
