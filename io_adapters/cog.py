"""Cloud-Optimized GeoTIFF writer (and plain tiled TIFF when ``cog=False``).

The pipeline writes high-resolution tiles (disjoint windows) and then commits:

1. ``__init__`` creates a hidden tiled GeoTIFF next to the output
   (``TILED=YES``, ``blocksize`` x ``blocksize`` blocks, ``BIGTIFF=IF_SAFER``,
   DEFLATE or ZSTD with predictor 2 for integers and 3 for floats) carrying the
   CRS, transform (or ground control points), nodata, band descriptions, colour
   interpretation, scales, offsets, units, dataset and per-band tags of ``meta``
   and the ``provenance`` tags (:mod:`io_adapters.provenance`);
2. ``write(array, window, mask=...)`` stores each tile in it;
3. ``commit`` rebuilds it with GDAL's COG driver (overviews computed with
   AVERAGE for continuous data, NEAREST for categorical data), then
   ``os.replace`` puts the result at ``path``.  ``abort`` deletes every
   temporary.  Expect twice the output size in the output folder at commit.

Valid pixels never become nodata: ``write`` takes an optional ``mask``
(``(rows, cols)`` or ``(bands, rows, cols)`` bool, True = valid) -- the pipeline
passes the upsampled input mask.  Where the mask is False a pixel is set to
nodata; a valid pixel whose value equals nodata is nudged one unit away
(nodata + 1, or the next float).  Without nodata the mask is stored as
GDAL's internal mask band (or alpha = 0 when there is an alpha band).
Without a mask the array is written as given.

One writer instance belongs to one process: GDAL cannot write one file from
several processes.  Calls from several threads are serialised by a lock.
Distributed runs write Zarr (:mod:`io_adapters.zarr_store`) instead.
"""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from ._common import (
    apply_valid_mask,
    cast_to_dtype,
    check_frame,
    check_pixel_dtype,
    check_region,
    new_temp_dir,
    remove_path,
    replace_into,
    write_failure,
)
from .base import AtomicWriterMixin, Metadata, check_output_path
from .errors import InvalidDataError, WriteError
from .provenance import Provenance, cog_tags, inherited_tags

__all__ = ["CogWriter"]

log = logging.getLogger(__name__)

_INTERP_BY_NAME = {"R": "red", "G": "green", "B": "blue", "A": "alpha", "L": "gray"}
Compression = Literal["DEFLATE", "ZSTD", "LZW", "NONE"]


def _colorinterp(meta: Metadata) -> tuple[str, ...]:
    """Colour interpretation to write: from geo, from extra, or guessed from band names."""
    interp = tuple(meta.geo.colorinterp) if meta.geo else tuple(meta.extra.get("colorinterp", ()))
    if not interp and meta.band_names and all(n in _INTERP_BY_NAME for n in meta.band_names):
        interp = tuple(_INTERP_BY_NAME[n] for n in meta.band_names)
    return interp if len(interp) == meta.bands else ()


class CogWriter(AtomicWriterMixin):
    """Write a (Cloud-Optimized) GeoTIFF tile by tile; see the module docstring."""

    def __init__(self, path: str | Path, meta: Metadata, *, inputs: tuple[Path, ...] = (),
                 overwrite: bool = False, cog: bool = True, compress: Compression = "DEFLATE",
                 blocksize: int = 512,
                 overview_resampling: Literal["average", "nearest", "mode"] | None = None,
                 num_threads: int | Literal["ALL_CPUS"] = "ALL_CPUS",
                 provenance: Provenance | None = None) -> None:
        self.path = check_output_path(Path(path), inputs=inputs, overwrite=overwrite)
        check_pixel_dtype(meta.dtype, path=self.path)
        if meta.frames != 1:
            raise InvalidDataError(f"{self.path}: a GeoTIFF holds one frame, not "
                                   f"{meta.frames}; write a .zarr output for stacks")
        if blocksize % 16 or blocksize < (128 if cog else 16):
            raise ValueError(f"blocksize {blocksize} must be a multiple of 16, at least "
                             f"{128 if cog else 16}{' for a COG' if cog else ''}")
        self.meta = meta
        self._provenance = provenance
        self._cog = cog
        self._compress = compress.upper()
        self._blocksize = blocksize
        self._resampling = overview_resampling or (
            "nearest" if meta.extra.get("categorical") else "average")
        self._threads = str(num_threads)
        self._alpha = meta.alpha_band
        self._internal_mask = meta.nodata is None and meta.has_mask and self._alpha is None
        self._lock = threading.Lock()
        self._tmpdir = new_temp_dir(self.path, "tiles")  # private: GDAL's opens follow links
        self._tmp = self._tmpdir / self.path.name
        self._dst: rasterio.io.DatasetWriter | None = None
        try:
            with self._env(), warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)  # plain TIFF output
                self._dst = rasterio.open(self._tmp, "w", **self._profile())
                self._write_band_metadata(self._dst)
        except (OSError, RasterioError, CPLE_BaseError) as exc:
            error = write_failure(self.path, "create the temporary GeoTIFF", exc)
            self.abort()
            raise error from exc

    def _env(self) -> rasterio.Env:
        return rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_PAM_ENABLED=False)

    def _predictor(self) -> int:
        if self._compress == "NONE":
            return 1
        return 3 if np.dtype(self.meta.dtype).kind == "f" else 2

    def _profile(self) -> dict:
        meta, geo = self.meta, self.meta.geo
        profile = {
            "driver": "GTiff", "width": meta.cols, "height": meta.rows, "count": meta.bands,
            "dtype": np.dtype(meta.dtype).name, "nodata": meta.nodata,
            "tiled": True, "blockxsize": self._blocksize, "blockysize": self._blocksize,
            "compress": self._compress, "predictor": self._predictor(),
            "BIGTIFF": "IF_SAFER", "SPARSE_OK": True,
        }
        if geo is not None:
            profile["crs"] = CRS.from_wkt(geo.crs_wkt) if geo.crs_wkt else None
            profile["transform"] = Affine(*geo.transform)
        interp = _colorinterp(meta)
        if interp[:3] == ("red", "green", "blue") and np.dtype(meta.dtype) == np.uint8:
            profile["photometric"] = "RGB"
            if interp[3:4] == ("alpha",):
                profile["alpha"] = "YES"
        return profile

    def _write_band_metadata(self, dst: rasterio.io.DatasetWriter) -> None:
        meta, geo = self.meta, self.meta.geo
        for i, name in enumerate(meta.band_names[: meta.bands], start=1):
            if name:
                dst.set_band_description(i, name)
        interp = _colorinterp(meta)
        if interp:
            dst.colorinterp = [ColorInterp[c] for c in interp]
        if geo is not None:
            if len(geo.scales) == meta.bands:
                dst.scales = geo.scales
            if len(geo.offsets) == meta.bands:
                dst.offsets = geo.offsets
            if len(geo.units) == meta.bands:
                dst.units = geo.units
            dst.update_tags(**inherited_tags(geo.tags))
            for i, tags in enumerate(geo.band_tags[: meta.bands], start=1):
                if tags and len(geo.band_tags) == meta.bands:
                    dst.update_tags(i, **tags)
        if self._provenance is not None:
            dst.update_tags(**cog_tags(self._provenance))
        gcps = meta.extra.get("gcps")
        if gcps and geo is None:  # georeferenced by control points: written, not dropped
            wkt = meta.extra.get("gcp_crs")
            dst.gcps = ([GroundControlPoint(row=r, col=c, x=x, y=y, z=z, id=i, info=info)
                         for r, c, x, y, z, i, info in gcps], CRS.from_wkt(wkt) if wkt else None)

    def write(self, array: np.ndarray, window: Window, *, frame: int = 0,
              mask: np.ndarray | None = None) -> None:
        """Store ``array`` ``(bands, h, w)`` at the in-bounds ``window``.

        Float input is rounded and clipped into the output dtype; ``mask``
        (True = valid) is applied as described in the module docstring.
        """
        check_frame(frame, 1, path=self.path)
        window, array = check_region(array, window, meta=self.meta, path=self.path)
        array = cast_to_dtype(array, np.dtype(self.meta.dtype))
        array = apply_valid_mask(array, mask, nodata=self.meta.nodata, alpha_band=self._alpha)
        with self._lock:
            if self._dst is None:
                raise WriteError(f"{self.path}: writer already committed or aborted")
            try:
                with self._env():
                    self._dst.write(array, window=window)
                    if self._internal_mask:
                        self._dst.write_mask(self._valid(mask, window), window=window)
            except (RasterioError, CPLE_BaseError) as exc:
                raise write_failure(self.path, f"write window {window}", exc) from exc

    @staticmethod
    def _valid(mask: np.ndarray | None, window: Window) -> np.ndarray:
        if mask is None:
            return np.full((int(window.height), int(window.width)), 255, dtype=np.uint8)
        mask = np.asarray(mask, dtype=bool)
        valid = mask if mask.ndim == 2 else mask.all(axis=0)
        return np.where(valid, 255, 0).astype(np.uint8)

    def commit(self) -> Path:
        """Finish the file (COG with overviews, or the tiled TIFF) and move it to ``path``."""
        with self._lock:
            if self._dst is None:
                raise WriteError(f"{self.path}: writer already committed or aborted")
            try:
                with self._env():
                    self._dst.close()
                    self._dst = None
                    result = self._translate_cog() if self._cog else self._tmp
            except (OSError, RasterioError, CPLE_BaseError) as exc:
                error = write_failure(self.path, "finish the GeoTIFF", exc)
                self._cleanup()
                raise error from exc
            replace_into(result, self.path)
            self._cleanup()
        log.debug("wrote %s", self.path)
        return self.path

    def _translate_cog(self) -> Path:
        cog_tmp = self._tmpdir / f"cog-{self.path.name}"
        self._cog_tmp = cog_tmp
        options = {
            "COMPRESS": self._compress, "BLOCKSIZE": self._blocksize,
            "OVERVIEW_RESAMPLING": self._resampling.upper(), "BIGTIFF": "IF_SAFER",
            "NUM_THREADS": self._threads,
        }
        if self._compress != "NONE":
            options["PREDICTOR"] = "YES"
        rasterio.shutil.copy(self._tmp, cog_tmp, driver="COG", **options)
        return cog_tmp

    def _cleanup(self) -> None:
        remove_path(self._tmpdir)  # the temporaries and any GDAL sidecar in it

    def abort(self) -> None:
        """Close and delete every temporary; the output path is untouched."""
        with self._lock:
            if self._dst is not None:
                try:
                    self._dst.close()
                except RasterioError:
                    log.debug("closing %s during abort failed", self._tmp, exc_info=True)
                self._dst = None
            self._cleanup()
