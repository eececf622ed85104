"""Plain images (PNG, JPEG, BMP, and anything else Pillow decodes) and the PNG writer.

Plain images are small enough to decode whole: the first ``read`` decodes the
file once and caches the ``(bands, rows, cols)`` array; windows are cut from
it (boundless, 0 outside).  Pixel values are the file's own:

* gray -> 1 band ``("L",)``, gray+alpha -> ``("L", "A")``, RGB ->
  ``("R", "G", "B")``, RGBA -> ``("R", "G", "B", "A")``; the alpha channel
  stays a band and ``meta.alpha_band`` gives its index, and
  ``read_mask`` is False where alpha is 0;
* palette images become RGB (RGBA when the palette has transparency); CMYK
  and YCbCr JPEGs become RGB;
* 16-bit PNGs keep 16 bits (uint16).  Pillow reduces 16-bit colour PNGs to 8
  bits, so every 16-bit PNG is decoded with GDAL's PNG driver instead.

Decompression bombs: a plain image is decoded whole, so its declared size is
checked against Pillow's limit (``PIL.Image.MAX_IMAGE_PIXELS``; Pillow refuses
twice that) on *every* path, the GDAL 16-bit PNG one included, before a pixel
is decoded (a 3 MB 16-bit PNG declaring 40 000^2 took 6.4 GB decoded whole).

EXIF orientation (tag 0x0112, JPEG/PNG/TIFF) is *applied*: the pixel grid is
the one a viewer shows (rows and columns swapped for orientations 5-8), on
both decode paths, and a log line says so -- the outputs hold no EXIF, so
keeping the file's raw grid would show them rotated.  ``meta.extra
["exif_orientation"]`` records the value applied.  A palette image expands
to RGB(A) with a log line (super-resolving palette indices is meaningless).

The writer produces PNG (uint8/uint16, 1-4 bands) with GDAL's PNG driver,
which, unlike Pillow, writes 16-bit colour; TIFF outputs go through
:class:`io_adapters.geotiff.CogWriter`.
"""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from geometry import ScaleLike

from ._common import (
    apply_valid_mask,
    as_window,
    boundless_read,
    cast_to_dtype,
    check_frame,
    check_region,
    inside_mask,
    new_temp_dir,
    remove_path,
    replace_into,
    scale_common,
    select_bands,
    write_failure,
)
from .base import AtomicWriterMixin, Metadata, PathReaderMixin, check_output_path
from .errors import (
    CorruptFileError,
    InputNotFoundError,
    InvalidDataError,
    UnsupportedFormatError,
    WriteError,
)

__all__ = ["PlainReader", "PngWriter", "scale_plain_metadata", "decode_limit"]

log = logging.getLogger(__name__)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_PNG_BYTES = 2**31  # the PNG writer holds the whole image in memory

# Pillow mode -> (mode to convert to or None, dtype, band names)
_MODES: dict[str, tuple[str | None, str, tuple[str, ...]]] = {
    "1": ("L", "uint8", ("L",)),
    "L": (None, "uint8", ("L",)),
    "LA": (None, "uint8", ("L", "A")),
    "La": ("LA", "uint8", ("L", "A")),
    "P": ("RGB", "uint8", ("R", "G", "B")),
    "PA": ("RGBA", "uint8", ("R", "G", "B", "A")),
    "RGB": (None, "uint8", ("R", "G", "B")),
    "RGBX": ("RGB", "uint8", ("R", "G", "B")),
    "RGBA": (None, "uint8", ("R", "G", "B", "A")),
    "RGBa": ("RGBA", "uint8", ("R", "G", "B", "A")),
    "CMYK": ("RGB", "uint8", ("R", "G", "B")),
    "YCbCr": ("RGB", "uint8", ("R", "G", "B")),
    "I;16": (None, "uint16", ("L",)),
    "I;16L": (None, "uint16", ("L",)),
    "I;16B": (None, "uint16", ("L",)),
    "I;16N": (None, "uint16", ("L",)),
    "I": (None, "int32", ("L",)),
    "F": (None, "float32", ("L",)),
}
_NAMES_BY_COUNT = {1: ("L",), 2: ("L", "A"), 3: ("R", "G", "B"), 4: ("R", "G", "B", "A")}


def decode_limit() -> int | None:
    """Most pixels a plain image may declare: Pillow's own refusal threshold."""
    limit = PIL.Image.MAX_IMAGE_PIXELS
    return None if limit is None else 2 * int(limit)


def _too_large(path: Path, detail: str) -> InvalidDataError:
    return InvalidDataError(
        f"{path}: {detail}: too large to decode whole; a plain image may declare at most "
        f"{decode_limit() or 0:.3g} pixels (2 x PIL.Image.MAX_IMAGE_PIXELS); convert it to a "
        "tiled GeoTIFF first (gdal_translate -of COG), whose limit is --max-pixels")


# EXIF orientation -> the numpy form of PIL.ImageOps.exif_transpose on (bands, rows, cols)
_ORIENT = {
    2: lambda a: a[:, :, ::-1],                       # mirror left-right
    3: lambda a: a[:, ::-1, ::-1],                    # rotate 180
    4: lambda a: a[:, ::-1, :],                       # mirror top-bottom
    5: lambda a: a.transpose(0, 2, 1),                # transpose
    6: lambda a: np.rot90(a, k=-1, axes=(1, 2)),      # rotate 90 clockwise
    7: lambda a: a[:, ::-1, ::-1].transpose(0, 2, 1),  # transverse
    8: lambda a: np.rot90(a, k=1, axes=(1, 2)),       # rotate 90 counter-clockwise
}


def _exif_orientation(path: Path) -> int:
    """EXIF orientation 1-8 of an image file (1 when absent or unreadable)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with PIL.Image.open(path) as im:
                value = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - no EXIF is the common case; the header errors elsewhere
        return 1
    return value if isinstance(value, int) and value in _ORIENT else 1


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    return _ORIENT[orientation](pixels) if orientation in _ORIENT else pixels


def png_bit_depth(path: Path) -> int | None:
    """Bit depth from a PNG's IHDR chunk, None when ``path`` is not a PNG."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    if len(head) < 26 or not head.startswith(PNG_MAGIC):
        return None
    return head[24]


class PlainReader(PathReaderMixin):
    """Reader for plain images; see the module docstring for the band layout."""

    def __init__(self, path: str | Path, *, bands: list[int] | None = None) -> None:
        self.path = Path(path)
        self._requested = bands
        self._lock = threading.Lock()
        self._pixels: np.ndarray | None = None
        if not self.path.exists():
            raise InputNotFoundError(f"{self.path}: no such file")
        self._use_gdal = png_bit_depth(self.path) == 16
        header = self._gdal_header() if self._use_gdal else self._pillow_header()
        fmt, mode, rows, cols, dtype, names = header
        self._mode = mode
        self._orientation = _exif_orientation(self.path)
        if self._orientation in (5, 6, 7, 8):
            rows, cols = cols, rows
        self._selected = select_bands(bands, len(names), path=self.path)
        names = tuple(names[i] for i in self._selected)
        extra: dict = {"file_format": fmt}
        if self._orientation != 1:
            extra["exif_orientation"] = self._orientation
            log.info("%s: EXIF orientation %d applied: pixels are read as a viewer shows "
                     "them (%d x %d)", self.path, self._orientation, rows, cols)
        if mode in ("P", "PA"):
            log.info("%s: palette image expanded to %s for super-resolution", self.path,
                     "".join(names))
        self.meta = Metadata(path=self.path, format="plain", bands=len(names), rows=rows,
                             cols=cols, dtype=np.dtype(dtype), has_mask="A" in names,
                             band_names=names, extra=extra,
                             alpha_band=names.index("A") if "A" in names else None)

    def _pillow_header(self) -> tuple[str, str, int, int, str, tuple[str, ...]]:
        try:
            with PIL.Image.open(self.path) as im:
                mode, (cols, rows), fmt = im.mode, im.size, im.format or "unknown"
                transparent = "transparency" in im.info
        except PIL.Image.DecompressionBombError as exc:
            raise _too_large(self.path, str(exc).split(", could be")[0]) from None
        except PIL.UnidentifiedImageError:
            with open(self.path, "rb") as fh:
                head = fh.read(8)
            if head.startswith((PNG_MAGIC, b"\xff\xd8\xff", b"BM")):  # known magic: damaged
                raise CorruptFileError(f"{self.path}: damaged image header (the file starts "
                                       f"like a PNG/JPEG/BMP but cannot be parsed)") from None
            raise UnsupportedFormatError(f"{self.path}: not an image Pillow can read") from None
        except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, struct.error...
            raise CorruptFileError(f"{self.path}: cannot read the image header: "
                                   f"{exc or type(exc).__name__}") from None
        if mode not in _MODES:
            raise InvalidDataError(f"{self.path}: unsupported {fmt} pixel mode {mode!r}; "
                                   "convert the image to gray, RGB or RGBA")
        _, dtype, names = _MODES[mode]
        if mode == "P" and transparent:
            names = _MODES["PA"][2]
        return fmt, mode, rows, cols, dtype, names

    def _gdal_header(self) -> tuple[str, str, int, int, str, tuple[str, ...]]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(self.path) as ds:
                    rows, cols, count, dtype = ds.height, ds.width, ds.count, ds.dtypes[0]
        except (RasterioError, CPLE_BaseError) as exc:
            raise CorruptFileError(f"{self.path}: cannot read the 16-bit PNG: "
                                   f"{' '.join(str(exc).split())}") from None
        limit = decode_limit()
        if limit is not None and rows * cols > limit:  # the bomb check Pillow would make
            raise _too_large(self.path, f"16-bit PNG of {rows} x {cols} = {rows * cols:.3g} "
                             "pixels")
        return "PNG", "16-bit", rows, cols, dtype, _NAMES_BY_COUNT[count]

    def _decode(self) -> np.ndarray:
        """All bands of the file as ``(bands, rows, cols)``, decoded once."""
        with self._lock:
            if self._pixels is None:
                try:
                    pixels = self._decode_gdal() if self._use_gdal else self._decode_pillow()
                except Exception as exc:  # noqa: BLE001 - decoders raise many types
                    raise CorruptFileError(f"{self.path}: cannot decode the pixels: "
                                           f"{' '.join(str(exc).split()) or type(exc).__name__}"
                                           ) from None
                pixels = _orient(pixels, self._orientation)
                self._pixels = np.ascontiguousarray(pixels[list(self._selected)])
            return self._pixels

    def _decode_pillow(self) -> np.ndarray:
        with PIL.Image.open(self.path) as im:
            target = _MODES[self._mode][0]
            if self._mode == "P" and "transparency" in im.info:
                target = "RGBA"
            if target is not None:
                im = im.convert(target)
            arr = np.asarray(im)
        arr = arr.astype(self.meta.dtype.newbyteorder("="), copy=False)
        return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)

    def _decode_gdal(self) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(self.path) as ds:
                return ds.read()

    def read(self, window: Window | None = None, *, frame: int = 0,
             bands: list[int] | None = None) -> np.ndarray:
        """``(bands, rows, cols)`` in the file's dtype; 0 outside the image."""
        check_frame(frame, 1, path=self.path)
        window = as_window(window, rows=self.meta.rows, cols=self.meta.cols)
        picks = list(select_bands(bands, self.meta.bands, path=self.path))
        pixels = self._decode()

        def inner(w: Window) -> np.ndarray:
            r, c = int(w.row_off), int(w.col_off)
            return pixels[picks, r:r + int(w.height), c:c + int(w.width)].copy()

        return boundless_read(inner, window, rows=self.meta.rows, cols=self.meta.cols,
                              bands=len(picks), dtype=self.meta.dtype, fill=0)

    def read_mask(self, window: Window | None = None, *, frame: int = 0) -> np.ndarray:
        """True inside the image where alpha (if any) is not 0; False outside."""
        check_frame(frame, 1, path=self.path)
        window = as_window(window, rows=self.meta.rows, cols=self.meta.cols)
        alpha = self.meta.alpha_band
        if alpha is None:
            return inside_mask(window, rows=self.meta.rows, cols=self.meta.cols)
        return self.read(window, bands=[alpha])[0] != 0

    def read_masks(self, window: Window | None = None, *, frame: int = 0) -> np.ndarray:
        """``(bands, rows, cols)``: :meth:`read_mask` repeated for every band."""
        valid = self.read_mask(window, frame=frame)
        return np.broadcast_to(valid, (self.meta.bands, *valid.shape)).copy()

    def close(self) -> None:
        self._pixels = None



def scale_plain_metadata(meta: Metadata, scale: ScaleLike) -> Metadata:
    """Metadata of the super-resolved plain image: only the size changes."""
    return scale_common(meta, scale)


class PngWriter(AtomicWriterMixin):
    """Write a PNG (uint8 or uint16, 1-4 bands) atomically.

    Regions are collected in memory; ``commit`` encodes to a hidden temporary
    file in the output folder and renames it to ``path``.  Float input is
    rounded and clipped into the output dtype.  ``mask`` (False = invalid)
    sets alpha to 0 when there is an alpha band; otherwise PNG has no way to
    mark invalid pixels and the mask is ignored.
    """

    def __init__(self, path: str | Path, meta: Metadata, *, inputs: tuple[Path, ...] = (),
                 overwrite: bool = False, zlevel: int = 6) -> None:
        self.path = check_output_path(Path(path), inputs=inputs, overwrite=overwrite)
        dtype = np.dtype(meta.dtype)
        if dtype not in (np.dtype("uint8"), np.dtype("uint16")):
            raise InvalidDataError(f"{self.path}: PNG stores 8- or 16-bit unsigned pixels, "
                                   f"not {dtype}; write a .tif or .zarr output instead")
        if not 1 <= meta.bands <= 4 or meta.frames != 1:
            raise InvalidDataError(f"{self.path}: PNG stores one image of 1-4 bands, not "
                                   f"{meta.frames} frame(s) of {meta.bands} bands; "
                                   "write a .tif or .zarr output instead")
        if meta.extra.get("gcps"):  # kept or refused, never silently dropped
            raise InvalidDataError(f"{self.path}: PNG cannot hold the input's "
                                   f"{len(meta.extra['gcps'])} ground control points; write a "
                                   ".tif output, which keeps them")
        if meta.bands * meta.rows * meta.cols * dtype.itemsize > MAX_PNG_BYTES:
            raise InvalidDataError(f"{self.path}: {meta.rows} x {meta.cols} is too large for "
                                   "the in-memory PNG writer; write a .tif or .zarr output")
        self.meta = meta
        self._zlevel = int(zlevel)
        self._canvas: np.ndarray | None = np.zeros(meta.shape, dtype=dtype)
        self._tmp: Path | None = None

    def write(self, array: np.ndarray, window: Window, *, frame: int = 0,
              mask: np.ndarray | None = None) -> None:
        """Store ``array`` ``(bands, h, w)`` at ``window`` (in bounds)."""
        if self._canvas is None:
            raise WriteError(f"{self.path}: writer already committed or aborted")
        check_frame(frame, 1, path=self.path)
        window, array = check_region(array, window, meta=self.meta, path=self.path)
        array = cast_to_dtype(array, self._canvas.dtype)
        array = apply_valid_mask(array, mask, nodata=None,
                                 alpha_band=self.meta.alpha_band)
        r, c = int(window.row_off), int(window.col_off)
        self._canvas[:, r:r + array.shape[1], c:c + array.shape[2]] = array

    def commit(self) -> Path:
        """Encode the PNG and move it to ``path``; returns ``path``."""
        if self._canvas is None:
            raise WriteError(f"{self.path}: writer already committed or aborted")
        self._tmp = new_temp_dir(self.path, "partial")  # private: GDAL's opens follow links
        bands, rows, cols = self._canvas.shape
        try:
            with warnings.catch_warnings(), rasterio.Env(GDAL_PAM_ENABLED="NO"):
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(self._tmp / self.path.name, "w", driver="PNG", width=cols, height=rows,
                                   count=bands, dtype=self._canvas.dtype.name,
                                   ZLEVEL=self._zlevel) as dst:
                    dst.write(self._canvas)
        except (OSError, RasterioError, CPLE_BaseError) as exc:
            error = write_failure(self.path, "write the PNG", exc)
            self.abort()
            raise error from exc
        replace_into(self._tmp / self.path.name, self.path)
        remove_path(self._tmp)
        self._canvas, self._tmp = None, None
        log.debug("wrote %s", self.path)
        return self.path

    def abort(self) -> None:
        """Drop the buffered pixels and any temporary file."""
        self._canvas = None
        if self._tmp is not None:
            remove_path(self._tmp)
            self._tmp = None
