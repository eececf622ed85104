"""Zarr v3 output (and input) laid out for xarray/rioxarray and OME-Zarr viewers.

Layout of ``out.zarr`` (a Zarr v3 group, consolidated metadata on commit)::

    band_data    (band, y, x) or (frame, band, y, x); chunks (1,) bands x tile
                 attrs: grid_mapping="spatial_ref", coordinates="spatial_ref",
                 _FillValue=nodata (CF: xarray masks it to NaN), long_name=band names
                 scale_factor/add_offset/units when the bands share them (CF)
    spatial_ref  0-d; attrs from pyproj's CRS.to_cf() (grid_mapping_name...),
                 crs_wkt, spatial_ref (WKT), GeoTransform (GDAL order)
    x, y         1-D HR pixel-centre coordinates (from the transform; omitted when
                 it is rotated or sheared, b or d != 0: no 1-D coordinate fits);
                 CF standard_name/long_name/units/axis from the CRS
    band         1-D band numbers 1..n (like rioxarray)

so ``xarray.open_zarr(path)`` gives the right ``ds.rio.crs`` and
``ds.rio.transform()``.  Medical data is an OME-Zarr 0.5 image instead
(:mod:`io_adapters._ome`): ``band_data`` is ``(c, y, x)`` or ``(c, z, y, x)``,
a ``pyramid/`` of halved levels built at commit, ``ome.multiscales`` (scale =
pixel spacing, translation = the first pixel's position along the image axes) and
``ome.omero`` display windows; the coordinate array is ``c``.  Earlier stores
stacked ``(frame, band, y, x)``; :class:`ZarrReader` reads both.  Group attr
``zssr`` keeps the rest of :class:`Metadata` for :class:`ZarrReader`; caller ``attrs``
are added at the group's top level, and so are ``provenance`` (software, version,
source, scale, kernel, config and its hash), ``Conventions``, ``source`` and
``history`` (:mod:`io_adapters.provenance`).

Writing: the store is created as ``<name>.zarr.partial`` and renamed on
``commit``; ``abort`` deletes it.  Every ``write`` must cover whole chunks
(the last row/column of chunks may be short), so no two writers ever touch
one chunk and several processes may write the same store: they call
:func:`write_region` with :attr:`ZarrWriter.store_path`.  No sharding.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from affine import Affine
from rasterio.windows import Window
from zarr.codecs import BloscCodec, ZstdCodec

from geometry import ScaleLike

from ._common import (
    apply_valid_mask,
    cast_to_dtype,
    check_frame,
    check_pixel_dtype,
    check_region,
    remove_path,
    replace_into,
    scale_common,
)
from ._ome import MIN_SIDE, finish_ome, ome_dims, rescale_attrs
from .base import AtomicWriterMixin, Metadata, check_output_path
from .errors import WriteError
from .provenance import Provenance, cf_grid_mapping, cf_value_attrs, cf_xy_attrs, zarr_attrs
from .vsi import is_vsi
from .zarr_reader import _LAYOUTS, DATA, OURS, ZarrReader, axis_roles, json_number

__all__ = ["ZarrWriter", "ZarrReader", "scale_zarr_metadata", "write_chunks"]

log = logging.getLogger(__name__)

Compressor = Literal["blosc-zstd", "zstd", "none"]


def _compressors(name: Compressor, level: int, dtype: np.dtype) -> list:
    if name == "blosc-zstd":
        return [BloscCodec(cname="zstd", clevel=level, shuffle="shuffle",
                           typesize=dtype.itemsize)]
    if name == "zstd":
        return [ZstdCodec(level=level)]
    if name == "none":
        return []
    raise ValueError(f"compressor {name!r} unknown; use 'blosc-zstd', 'zstd' or 'none'")


def _gdal_geotransform(t: tuple[float, ...]) -> str:
    a, b, c, d, e, f = t
    return " ".join(repr(float(v)) for v in (c, a, b, f, d, e))


def _json_safe(value: Any) -> Any:
    """``value`` if it survives strict JSON, else None."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return value


def _check_attrs(attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        if key in (OURS, "ome") or _json_safe(value) is None:
            raise ValueError(f"attrs[{key!r}] is reserved or not JSON-serialisable; "
                             "use another key and a str/number/list/dict value")


def _meta_attrs(meta: Metadata) -> dict:
    geo = None
    if meta.geo is not None:
        g = meta.geo
        geo = {"colorinterp": list(g.colorinterp), "scales": list(g.scales),
               "offsets": list(g.offsets), "units": list(g.units), "tags": dict(g.tags),
               "band_tags": [dict(t) for t in g.band_tags]}
    extra = {k: v for k, v in meta.extra.items() if _json_safe(v) is not None}
    return {"version": 1, "source_format": meta.format, "band_names": list(meta.band_names),
            "nodata": json_number(meta.nodata), "has_mask": meta.has_mask, "geo": geo,
            "medical": _json_safe(asdict(meta.medical)) if meta.medical else None,
            "alpha_band": meta.alpha_band, "extra": extra}


class ZarrWriter(AtomicWriterMixin):
    """Create a Zarr v3 store for ``meta`` and fill it chunk-aligned region by region.

    ``chunks=(rows, cols)`` should equal the pipeline's HR tile size; the
    band axis is never split (and frames are one per chunk).  Medical data gets
    an OME pyramid at commit, halving while the smaller side is >= ``pyramid_min_side``
    (None: no pyramid).
    """

    def __init__(self, path: str | Path, meta: Metadata, *, chunks: tuple[int, int] = (512, 512),
                 compressor: Compressor = "blosc-zstd", level: int = 3,
                 attrs: dict[str, Any] | None = None, inputs: tuple[Path, ...] = (),
                 overwrite: bool = False, provenance: Provenance | None = None,
                 pyramid_min_side: int | None = MIN_SIDE) -> None:
        self._url: str | None = None  # on object storage: the store's URL
        if is_vsi(path) or str(path).lower().startswith("s3://"):
            from .vsi import display_url, gdal_path

            self._url = display_url(path).rstrip("/")
            self.path = Path(gdal_path(self._url))
        else:
            self.path = check_output_path(Path(path), inputs=inputs, overwrite=overwrite)
        dtype = check_pixel_dtype(meta.dtype, path=self.path)
        if len(chunks) != 2 or min(chunks) <= 0:
            raise ValueError(f"chunks {chunks!r} must be a (rows, cols) pair of positive ints")
        if pyramid_min_side is not None and (isinstance(pyramid_min_side, bool) or not
                                             isinstance(pyramid_min_side, int)
                                             or pyramid_min_side < 2):
            raise ValueError(f"pyramid_min_side {pyramid_min_side!r} must be an int >= 2 "
                             "or None (no pyramid)")
        self.meta = meta
        self._min_side = pyramid_min_side
        self._provenance = provenance
        start_io_loop()
        if self._url is not None:  # chunks straight to the bucket, metadata at commit
            from ._zarr_remote import remote_target

            self._store: Any = remote_target(self._url, overwrite=overwrite)
        else:
            self._store = self.path.with_name(self.path.name + ".partial")
            remove_path(self._store)  # a stale partial store from a crashed run (a link: unlinked)
            try:
                os.mkdir(self._store)  # never follows a link planted at the name
            except OSError as exc:
                raise WriteError(f"{self.path}: cannot create the Zarr store: {exc}") from exc
        self._dims: tuple[str, ...] = ("band", "y", "x")
        shape: tuple[int, ...] = meta.shape
        chunk_shape: tuple[int, ...] = (meta.bands, *chunks)
        if meta.medical is not None:  # OME-Zarr: channel, then z
            self._dims = ome_dims(meta.frames)
            if meta.frames > 1:
                shape, chunk_shape = (meta.bands, meta.frames, *shape[1:]), (meta.bands, 1, *chunks)
        elif meta.frames > 1:
            self._dims, shape = ("frame", *self._dims), (meta.frames, *shape)
            chunk_shape = (1, *chunk_shape)
        _check_attrs(attrs or {})
        codecs = _compressors(compressor, level, dtype)
        try:
            self._create(shape, chunk_shape, dtype, codecs, attrs)
            self._array: Any = zarr.open_array(self._store, path=DATA, mode="r+")
        except (OSError, TypeError, ValueError) as exc:
            self._discard()
            raise WriteError(f"{self.path}: cannot create the Zarr store: {exc}") from exc
        except BaseException:  # a signal (SIGTERM, Ctrl-C) while creating the store
            self._discard()
            raise
        self._open = True

    @property
    def store_path(self) -> Path:
        """Where the store lives until commit: give this to :func:`write_region` in workers."""
        return self._store

    def _create(self, shape: tuple[int, ...], chunk_shape: tuple[int, ...], dtype: np.dtype,
                compressors: list, attrs: dict[str, Any] | None) -> None:
        meta = self.meta
        group_attrs = {OURS: _meta_attrs(meta),
                       **zarr_attrs(self._provenance, geo=meta.geo is not None)}
        group_attrs.update(attrs or {})
        group = zarr.open_group(self._store, mode="w", zarr_format=3, attributes=group_attrs)
        data_attrs: dict[str, Any] = {}
        if meta.band_names:
            data_attrs["long_name"] = list(meta.band_names)  # rioxarray: band descriptions
        if meta.nodata is not None:
            data_attrs["_FillValue"] = _cf_fill_value(meta.nodata, dtype)
        if meta.geo is not None:
            data_attrs.update(grid_mapping="spatial_ref", coordinates="spatial_ref",
                              **cf_value_attrs(meta.geo, meta.bands))
        if meta.medical is not None:
            data_attrs.update(rescale_attrs(meta.medical))
        group.create_array(DATA, shape=shape, chunks=chunk_shape, dtype=dtype,
                           fill_value=0 if meta.nodata is None else meta.nodata,
                           compressors=compressors, dimension_names=self._dims,
                           attributes=data_attrs)
        name = self._dims[axis_roles(self._dims)[0] or 0]  # "band", or OME's "c"
        band = group.create_array(name, shape=(meta.bands,), dtype="int64",
                                  dimension_names=(name,))
        band[:] = np.arange(1, meta.bands + 1)
        if meta.geo is not None:
            self._create_coords(group)

    def _create_coords(self, group: Any) -> None:
        geo, meta = self.meta.geo, self.meta
        t = Affine(*geo.transform)
        wkt = geo.crs_wkt or ""
        ref = group.create_array("spatial_ref", shape=(), dtype="int64", dimension_names=(),
                                 attributes={**cf_grid_mapping(wkt),
                                             "GeoTransform": _gdal_geotransform(geo.transform)})
        ref[...] = 0
        if t.b or t.d:  # rotated or sheared: no 1-D x/y is right; rioxarray writes none either
            return
        x_attrs, y_attrs = cf_xy_attrs(wkt)  # standard_name, units: CF, by the CRS
        x = group.create_array("x", shape=(meta.cols,), dtype="float64", dimension_names=("x",),
                               attributes=x_attrs)
        x[:] = t.c + (np.arange(meta.cols) + 0.5) * t.a
        y = group.create_array("y", shape=(meta.rows,), dtype="float64", dimension_names=("y",),
                               attributes=y_attrs)
        y[:] = t.f + (np.arange(meta.rows) + 0.5) * t.e

    def write(self, array: np.ndarray, window: Window, *, frame: int = 0,
              mask: np.ndarray | None = None) -> None:
        """Write ``array`` ``(bands, h, w)`` at a chunk-aligned ``window`` of ``frame``."""
        if not self._open:
            raise WriteError(f"{self.path}: writer already committed or aborted")
        write_chunks(self._array, self.meta, array, window, frame=frame, mask=mask, path=self.path)

    def commit(self) -> Path:
        """Consolidate the metadata and rename the store to ``path``."""
        if not self._open:
            raise WriteError(f"{self.path}: writer already committed or aborted")
        self._open = False
        try:
            if self.meta.medical is not None:
                finish_ome(zarr.open_group(self._store, mode="r+"), self.meta, self.meta.medical,
                           self._dims, name=self.path.stem, min_side=self._min_side)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Consolidated metadata")
                zarr.consolidate_metadata(self._store)
            if self._url is not None:
                from zarr.core.sync import sync

                sync(self._store.flush())  # the metadata last: the store appears whole
            else:
                replace_into(self._store, self.path)
        except BaseException:  # failed or stopped (a signal): no partial store stays
            self._discard()
            raise
        log.debug("wrote %s", self.path)
        return self.path

    def abort(self) -> None:
        """Delete the partial store; the output path is untouched."""
        self._open = False
        self._discard()

    def _discard(self) -> None:
        settle_io()  # what an interrupted call left running would recreate files
        if self._url is not None:
            from ._zarr_remote import discard

            discard(self._url)  # its chunks (no metadata was written)
            return
        remove_path(self._store)


def start_io_loop() -> None:
    """Start zarr's I/O loop (a thread, on first use) with stop signals held back.

    A signal raised inside asyncio's loop constructor or the thread's start (the stop
    handlers of the CLI raise in the main thread) leaves a half-built loop: it printed
    "Exception ignored in BaseEventLoop.__del__" tracebacks at exit (3 SIGTERMs in 16
    at the creation of a store).  A signal that comes meanwhile is raised right after.
    """
    import signal
    import threading

    from zarr.core import sync as zsync  # zarr 3: the loop lives in zarr.core.sync

    if zsync.loop[0] is not None:
        return
    if threading.current_thread() is not threading.main_thread():
        zsync._get_loop()
        return
    held: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM,
                                                       signal.SIGHUP)}
    previous = {sig: h for sig, h in previous.items() if h is not None}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: held.append(signum))
    try:
        zsync._get_loop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held:
            signal.raise_signal(held[0])


def settle_io(timeout: float = 10.0) -> None:
    """Wait (at most ``timeout`` s) until zarr's I/O loop has finished what it was doing.

    zarr runs every read and write as a coroutine on its own I/O thread and the caller
    waits for it; a signal raised in the main thread (SIGTERM, Ctrl-C) ends the wait, not
    the coroutine.  Deleting a partial store then races with it: the coroutine recreated
    ``<name>.partial/zarr.json`` after the store was removed (1 SIGTERM in 4 at creation),
    and the loop, still running at exit, printed asyncio's "Cannot close a running event
    loop" traceback.
    """
    import asyncio

    from zarr.core import sync as zsync

    loop = zsync.loop[0]
    if loop is None or loop.is_closed() or not loop.is_running():
        return

    async def others_done() -> None:
        me = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not me]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    try:
        asyncio.run_coroutine_threadsafe(others_done(), loop).result(timeout + 1.0)
    except Exception as exc:  # noqa: BLE001 - best effort: the store is removed anyway
        log.debug("zarr I/O did not settle: %s", exc)


def _cf_fill_value(nodata: float, dtype: np.dtype) -> Any:
    """``_FillValue`` encoded the way xarray's Zarr v3 backend decodes it."""
    if dtype.kind == "f":
        import base64
        import struct

        return base64.standard_b64encode(struct.pack("<d", float(nodata))).decode()
    return int(nodata)


def write_chunks(target: Any, meta: Metadata, array: np.ndarray, window: Window, *, frame: int,
           mask: np.ndarray | None, path: Path) -> None:
    check_frame(frame, meta.frames, path=path)
    window, array = check_region(array, window, meta=meta, path=path)
    ch, cw = target.chunks[-2:]
    r0, c0 = int(window.row_off), int(window.col_off)
    r1, c1 = r0 + int(window.height), c0 + int(window.width)
    if r0 % ch or c0 % cw or (r1 % ch and r1 != meta.rows) or (c1 % cw and c1 != meta.cols):
        raise ValueError(f"{path}: window {window} is not aligned to the {ch} x {cw} chunks; "
                         "write whole chunks so no two writers share one")
    array = cast_to_dtype(array, np.dtype(meta.dtype))
    array = apply_valid_mask(array, mask, nodata=meta.nodata,
                             alpha_band=meta.alpha_band)
    dims = target.metadata.dimension_names or _LAYOUTS[target.ndim]
    region: list[Any] = [slice(None)] * (target.ndim - 2) + [slice(r0, r1), slice(c0, c1)]
    band_axis, frame_axis = axis_roles(tuple(dims))
    if frame_axis is not None:
        region[frame_axis] = frame
    target[tuple(region)] = array if band_axis is not None else array[0]


def scale_zarr_metadata(meta: Metadata, scale: ScaleLike) -> Metadata:
    """Size ``ceil(n * s)``, transform ``T * scale(1/s)``, pixel spacing ``/ s``."""
    return scale_common(meta, scale)
