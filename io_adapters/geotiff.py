"""GeoTIFF (and any other GDAL raster) reader, and metadata scaling for geodata.

Every TIFF goes through this reader, georeferenced or not: GDAL reads tiled,
compressed, 16-bit colour and float TIFFs that Pillow cannot.  A TIFF with no
CRS and an identity transform gets ``meta.geo = None`` (a "plain" TIFF); its
colour interpretation then travels in ``meta.extra["colorinterp"]``.

Reads are windowed and boundless: the part of a window inside the raster is
read with GDAL and the rest is filled with nodata (or 0), so a header that
declares a gigantic raster opens instantly and costs only what is read.
Each thread gets its own GDAL dataset handle (GDAL handles are not
thread-safe), so the reader can be shared by Dask's threaded scheduler; it
pickles as ``(path, bands)`` and reopens in the receiving process.

Metadata is kept or refused, never silently lost: ground control points
(``meta.extra["gcps"]``) travel with the image, scaled, and the COG writer
writes them; a palette-indexed TIFF is refused (super-resolving colour-map
indices is meaningless) with the ``gdal_translate -expand`` line that fixes it.

Band indexes are 0-based.  Pixels come back raw, in the file's dtype: the
band ``scales``/``offsets``/``units`` are reported in ``meta.geo`` and never
applied.  The writer lives in :mod:`io_adapters.cog` (re-exported here).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from geometry import ScaleLike, as_scale

from ._common import (
    as_window,
    boundless_read,
    check_frame,
    check_pixel_dtype,
    inner_part,
    inside_mask,
    scale_common,
    select_bands,
)
from .base import GeoInfo, Metadata, PathReaderMixin
from .cog import CogWriter
from .errors import (
    CorruptFileError,
    InputNotFoundError,
    InvalidDataError,
    UnsupportedFormatError,
)
from .vsi import gdal_messages, is_vsi, remote_error, scrub

__all__ = ["GeoTiffReader", "CogWriter", "scale_geo_metadata", "TIFF_MAGICS"]

log = logging.getLogger(__name__)

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
# by URL: no listing of the object's "folder" to look for sidecar files (.aux.xml, .ovr);
# a LIST of a large prefix costs more than the window read itself
_REMOTE_OPEN = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
_SHORT_NAMES = {"red": "R", "green": "G", "blue": "B", "alpha": "A", "gray": "L"}


def _one_line(exc: BaseException) -> str:
    """GDAL's message on one line (rasterio chains the real one as the cause)."""
    cause = exc.__cause__
    text = f"{exc} ({cause})" if cause is not None and str(cause) else str(exc)
    return " ".join(text.split())


class GeoTiffReader(PathReaderMixin):
    """Windowed reader for GeoTIFF/COG and other GDAL rasters."""

    def __init__(self, path: str | Path, *, bands: list[int] | None = None) -> None:
        self.path = Path(path)
        self._requested = bands
        self._local = threading.local()
        self._handles: list[rasterio.DatasetReader] = []
        self._handles_lock = threading.Lock()
        if not is_vsi(self.path) and not self.path.exists():
            raise InputNotFoundError(f"{self.path}: no such file")
        ds = self._dataset()
        dtype = check_pixel_dtype(ds.dtypes[0], path=self.path)
        if len(set(ds.dtypes)) > 1:
            log.warning("%s: bands have different types %s; reading as %s",
                        self.path, ds.dtypes, dtype)
        self._selected = select_bands(bands, ds.count, path=self.path)
        self._indexes = [i + 1 for i in self._selected]  # GDAL counts from 1
        palette = _colormap_size(ds)
        if palette:
            self.close()
            raise InvalidDataError(
                f"{self.path}: band 1 is palette-indexed (a colour map of {palette} entries); "
                "super-resolving palette indices blends unrelated colours and the colour map "
                "cannot describe the result; expand it first: gdal_translate -expand rgba "
                f"{self.path.name} rgba.tif")
        with _gdal_warnings(self.path.name) as damage:  # GDAL reads some tags lazily
            self.meta = self._metadata(ds, dtype)
        if damage:
            self.close()
            raise CorruptFileError(f"{self.path}: truncated or damaged TIFF: {damage[0]}")

    def _dataset(self) -> rasterio.DatasetReader:
        """This thread's open dataset (opened on first use)."""
        ds = getattr(self._local, "ds", None)
        if ds is None:
            ds = self._open()
            self._local.ds = ds
            with self._handles_lock:
                self._handles.append(ds)
        return ds

    def _open(self) -> rasterio.DatasetReader:
        try:
            with _gdal_warnings(self.path.name) as damage, warnings.catch_warnings(), \
                    rasterio.Env(**(_REMOTE_OPEN if is_vsi(self.path) else {})):
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                ds = rasterio.open(self.path)
        except (RasterioError, CPLE_BaseError) as exc:
            if is_vsi(self.path):  # by URL: missing, denied, unreachable or damaged
                raise remote_error(self.path, _one_line(exc)) from None
            with open(self.path, "rb") as fh:
                is_tiff = fh.read(4) in TIFF_MAGICS
            if is_tiff:
                raise CorruptFileError(f"{self.path}: damaged TIFF: {_one_line(exc)}") from None
            raise UnsupportedFormatError(
                f"{self.path}: not a raster GDAL can read: {_one_line(exc)}") from None
        if damage:  # GDAL opened it but skipped tags it could not read (a cut-off header)
            ds.close()
            raise CorruptFileError(f"{self.path}: truncated or damaged TIFF: {damage[0]}")
        return ds

    def _metadata(self, ds: rasterio.DatasetReader, dtype: np.dtype) -> Metadata:
        sel = self._selected
        interp = tuple(ds.colorinterp[i].name for i in sel)
        descriptions = tuple(ds.descriptions[i] or "" for i in sel)
        if any(descriptions):
            names = descriptions
        elif all(c in _SHORT_NAMES for c in interp):
            names = tuple(_SHORT_NAMES[c] for c in interp)
        else:
            names = ()
        flags = [ds.mask_flag_enums[i] for i in sel]
        has_mask = ds.nodata is not None or any(
            f != [rasterio.enums.MaskFlags.all_valid] for f in flags)
        extra: dict = {"driver": ds.driver, "block_shapes": ds.block_shapes[0],
                       "overviews": ds.overviews(self._indexes[0]),
                       "compression": ds.compression.name if ds.compression else None}
        alpha_band = interp.index("alpha") if "alpha" in interp else None
        gcps, gcp_crs = ds.gcps
        if gcps:  # ground control points instead of a transform: kept, scaled with the image
            extra["gcps"] = tuple((g.row, g.col, g.x, g.y, g.z, g.id, g.info) for g in gcps)
            extra["gcp_crs"] = gcp_crs.to_wkt() if gcp_crs else None
        georeferenced = ds.crs is not None or not ds.transform.is_identity
        geo = None
        if georeferenced:
            geo = GeoInfo(
                crs_wkt=ds.crs.to_wkt() if ds.crs else None,
                transform=tuple(ds.transform)[:6],
                colorinterp=interp,
                scales=tuple(float(ds.scales[i]) for i in sel),
                offsets=tuple(float(ds.offsets[i]) for i in sel),
                units=tuple(ds.units[i] or "" for i in sel),
                tags={str(k): str(v) for k, v in ds.tags().items()},
                band_tags=_band_tags(ds, sel),
            )
        else:
            extra["colorinterp"] = interp
        return Metadata(path=self.path, format="geotiff", bands=len(sel), rows=ds.height,
                        cols=ds.width, dtype=dtype, nodata=ds.nodata, has_mask=has_mask,
                        band_names=names, geo=geo, extra=extra, alpha_band=alpha_band)

    @property
    def fill_value(self) -> float:
        return 0 if self.meta.nodata is None else self.meta.nodata

    def read(self, window: Window | None = None, *, frame: int = 0,
             bands: list[int] | None = None, out_shape: tuple[int, int] | None = None,
             resampling: Literal["average", "nearest", "bilinear"] = "average") -> np.ndarray:
        """``(bands, rows, cols)`` in the file's dtype; nodata (or 0) outside the raster.

        With ``out_shape=(h, w)`` the window is resampled to that size by GDAL
        (``resampling``, average by default; overviews are used when present),
        e.g. to draw training samples at a coarser scale.
        """
        check_frame(frame, 1, path=self.path)
        window = as_window(window, rows=self.meta.rows, cols=self.meta.cols)
        picks = [self._indexes[i] for i in select_bands(bands, self.meta.bands, path=self.path)]
        if out_shape is not None:
            return self._read_resampled(window, picks, out_shape, Resampling[resampling])
        return boundless_read(lambda w: self._gdal_read(picks, window=w), window,
                              rows=self.meta.rows, cols=self.meta.cols, bands=len(picks),
                              dtype=self.meta.dtype, fill=self.fill_value)

    def _gdal_read(self, indexes: list[int], **kwargs) -> np.ndarray:
        if is_vsi(self.path):
            with gdal_messages() as said:
                try:
                    return self._dataset().read(indexes, out_dtype=self.meta.dtype, **kwargs)
                except RasterioError as exc:  # vanished, access revoked, endpoint gone
                    raise remote_error(self.path, " ".join([_one_line(exc), *said])) from None
        try:
            return self._dataset().read(indexes, out_dtype=self.meta.dtype, **kwargs)
        except RasterioError as exc:
            raise CorruptFileError(f"{self.path}: cannot read window {kwargs.get('window')}: "
                                   f"{_one_line(exc)}") from None

    def _read_resampled(self, window: Window, picks: list[int], out_shape: tuple[int, int],
                        resampling: Resampling) -> np.ndarray:
        inner, _ = inner_part(window, rows=self.meta.rows, cols=self.meta.cols)
        boundless = inner is None or (inner.width, inner.height) != (window.width, window.height)
        return self._gdal_read(picks, window=window, out_shape=(len(picks), *out_shape),
                               resampling=resampling, boundless=boundless,
                               fill_value=self.fill_value)

    def read_mask(self, window: Window | None = None, *, frame: int = 0) -> np.ndarray:
        """``(rows, cols)`` bool: True where every selected band is valid (nodata,
        internal mask or alpha all say so); False outside the raster."""
        return self.read_masks(window, frame=frame).all(axis=0)

    def read_masks(self, window: Window | None = None, *, frame: int = 0) -> np.ndarray:
        """``(bands, rows, cols)`` bool validity of each selected band (GDAL's
        ``read_masks``); False outside the raster.  Pass this, not
        :meth:`read_mask`, to a writer so a pixel that is nodata in one band
        only keeps its valid values in the others."""
        check_frame(frame, 1, path=self.path)
        window = as_window(window, rows=self.meta.rows, cols=self.meta.cols)
        if not self.meta.has_mask:
            inside = inside_mask(window, rows=self.meta.rows, cols=self.meta.cols)
            return np.broadcast_to(inside, (self.meta.bands, *inside.shape)).copy()

        def inner(w: Window) -> np.ndarray:
            try:
                return self._dataset().read_masks(self._indexes, window=w) > 0
            except RasterioError as exc:
                raise CorruptFileError(f"{self.path}: cannot read the mask of window {w}: "
                                       f"{_one_line(exc)}") from None

        return boundless_read(inner, window, rows=self.meta.rows, cols=self.meta.cols,
                              bands=self.meta.bands, dtype=np.dtype(bool), fill=False)

    def close(self) -> None:
        """Close every thread's dataset handle."""
        with self._handles_lock:
            for ds in self._handles:
                ds.close()
            self._handles.clear()
        self._local = threading.local()



_DAMAGE_WORDS = ("io error", "corrupt", "truncat", "read error", "failed to read")


class _DamageLog(logging.Handler):
    """Keeps GDAL's warnings; ``found`` holds those saying the file ``name`` is damaged."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.WARNING)
        self.name_, self.found, self.other = name, [], []

    def emit(self, record: logging.LogRecord) -> None:
        msg = " ".join(record.getMessage().split())
        damaged = self.name_ in msg and any(w in msg.lower() for w in _DAMAGE_WORDS)
        (self.found if damaged else self.other).append(msg)


@contextmanager
def _gdal_warnings(name: str) -> Iterator[list[str]]:
    """Route GDAL's messages to logging (``rasterio.Env``) and collect those that say
    the file ``name`` is damaged; all of them are re-logged here at info level."""
    logger = logging.getLogger("rasterio._env")
    handler = _DamageLog(name)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        with rasterio.Env():
            yield handler.found
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
        for msg in handler.found + handler.other:  # the damage also goes into the error
            log.info("GDAL: %s", scrub(msg))


def _band_tags(ds: rasterio.DatasetReader, sel: list[int]) -> tuple[dict[str, str], ...]:
    """Per-band tags (BANDNAME, WAVELENGTH...) of the selected bands; () when none has any."""
    tags = tuple({str(k): str(v) for k, v in ds.tags(i + 1).items()} for i in sel)
    return tags if any(tags) else ()


def _colormap_size(ds: rasterio.DatasetReader) -> int:
    """Entries of band 1's colour map (0: none)."""
    try:
        return len(ds.colormap(1))
    except ValueError:
        return 0


def scale_geo_metadata(meta: Metadata, scale: ScaleLike) -> Metadata:
    """Metadata of the image super-resolved by ``scale`` (a number or ``(rows, cols)``).

    Size becomes ``ceil(n * s)`` (MATLAB ``imresize``); the transform becomes
    ``T * Affine.scale(1/sx, 1/sy)`` so the origin (upper-left corner) stays
    and pixels shrink; CRS, nodata, dtype and band metadata are unchanged.
    The file layout facts in ``extra`` (overviews, blocks) are dropped.  Ground
    control points keep their map coordinates; their pixel/line positions (pixel
    corners from the upper-left corner) are multiplied by the row and column scale.
    """
    out = scale_common(meta, scale)
    extra = {k: v for k, v in out.extra.items() if k not in ("overviews", "block_shapes")}
    if extra.get("gcps"):
        sy, sx = as_scale(scale).floats
        extra["gcps"] = tuple((row * sy, col * sx, *rest)
                              for row, col, *rest in extra["gcps"])
    return replace(out, extra=extra)
