"""Reader for Zarr stores: our own outputs and other image-like Zarr arrays.

The image array is ``band_data`` when present, otherwise the group's only
array with 2 or more dimensions (or the store itself when it is an array).
Its dimensions (Zarr v3 ``dimension_names``, or v2 ``_ARRAY_DIMENSIONS``)
must end with the row and column axes: ``(y, x)``, ``(band, y, x)``,
``(frame, band, y, x)`` (our geo layout and medical stores before OME order) or the
OME-Zarr order ``(c, y, x)``, ``(c, z, y, x)`` of medical outputs; a leading axis
is a band axis when named ``band``/``c``, a frame axis when named ``frame``/``z``/``t``
(:func:`axis_roles`); unnamed ones are read as ``(frame, band)``.  Georeferencing comes from the CF grid mapping
variable (``spatial_ref``: ``crs_wkt``/``spatial_ref`` and ``GeoTransform``,
else the ``x``/``y`` pixel-centre coordinates); nodata from the ``zssr``
group attribute or the CF ``_FillValue``.  See :mod:`io_adapters.zarr_store`
for the layout our writer produces.
"""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from rasterio.windows import Window

from ._common import (
    as_window,
    boundless_read,
    check_frame,
    check_pixel_dtype,
    inside_mask,
    select_bands,
)
from .base import GeoInfo, MedicalInfo, Metadata, PathReaderMixin
from .errors import CorruptFileError, InputNotFoundError, InvalidDataError, IOAdapterError
from .fetch import zarr_store
from .provenance import PROVENANCE_ATTRS
from .vsi import display_url, is_vsi, scrub

__all__ = ["ZarrReader", "DATA", "OURS", "axis_roles", "json_number", "from_json_number"]

DATA = "band_data"  # the image variable, named like rioxarray's
OURS = "zssr"  # group attribute holding the Metadata facts Zarr has no place for
_LAYOUTS = {2: ("y", "x"), 3: ("band", "y", "x"), 4: ("frame", "band", "y", "x")}
BAND_DIMS = ("band", "c")  # rioxarray's name, OME-Zarr's channel axis
FRAME_DIMS = ("frame", "z", "t")  # ours, OME-Zarr's slice and time axes


def axis_roles(dims: tuple[str, ...]) -> tuple[int | None, int | None]:
    """``(band axis, frame axis)`` of image dimensions ending with ``(y, x)``; None: absent.

    >>> axis_roles(("c", "z", "y", "x")), axis_roles(("frame", "band", "y", "x"))
    ((0, 1), (1, 0))
    >>> axis_roles(("z", "y", "x")), axis_roles(("y", "x"))
    ((None, 0), (None, None))
    """
    lead = tuple(dims[:-2])
    band = next((i for i, d in enumerate(lead) if d in BAND_DIMS), None)
    frame = next((i for i, d in enumerate(lead) if d in FRAME_DIMS), None)
    if len(lead) == 1:
        return (None, 0) if frame is not None else (0, None)
    if len(lead) == 2:  # one name unknown: the other leading axis; both: (frame, band)
        if band is None:
            band = 1 if frame in (0, None) else 0
        if frame is None:
            frame = 1 - band
        return band, frame
    return None, None


def json_number(value: float | None) -> float | str | None:
    """A float for strict JSON: NaN and infinities become strings."""
    if value is None:
        return None
    return float(value) if np.isfinite(value) else str(float(value))


def from_json_number(value: Any) -> float | None:
    return None if value is None else float(value)


def _decode_fill_value(value: Any, dtype: np.dtype) -> float | None:
    """Decode xarray's ``_FillValue`` encoding (base64 double for floats)."""
    if value is None:
        return None
    if dtype.kind == "f" and isinstance(value, str):
        try:
            return struct.unpack("<d", base64.standard_b64decode(value))[0]
        except (ValueError, struct.error):
            return float(value)
    return float(value)


def _numbers(value: Any, count: int, key: str) -> tuple[float, ...]:
    """``count`` finite numbers from a JSON list, else ``ValueError`` naming ``key``."""
    if not isinstance(value, (list, tuple)) or len(value) != count or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
            for v in value):
        raise ValueError(f"{key} {value!r} is not a list of {count} finite numbers")
    return tuple(float(v) for v in value)


def _medical(attrs: dict | None) -> MedicalInfo | None:
    """The ``zssr.medical`` attribute, each field checked (the writer relies on them)."""
    if not attrs:
        return None
    if not isinstance(attrs, dict):
        raise TypeError(f"zssr.medical is {type(attrs).__name__}, not an object")
    fixed = dict(attrs)
    if fixed.get("pixel_spacing") is not None:
        fixed["pixel_spacing"] = _numbers(fixed["pixel_spacing"], 2, "zssr.medical.pixel_spacing")
        if min(fixed["pixel_spacing"]) <= 0:
            raise ValueError(f"zssr.medical.pixel_spacing {attrs['pixel_spacing']!r} must be > 0")
    if fixed.get("orientation") is not None:
        fixed["orientation"] = _numbers(fixed["orientation"], 6, "zssr.medical.orientation")
    fixed["positions"] = tuple(_numbers(p, 3, "zssr.medical.positions[]")
                               for p in fixed.get("positions", ()))
    fixed["sources"] = tuple(str(v) for v in fixed.get("sources", ()))
    for key in ("rescale_slope", "rescale_intercept", "slice_thickness"):
        if fixed.get(key) is not None:
            fixed[key] = _numbers([fixed[key]], 1, f"zssr.medical.{key}")[0]
    for key in ("modality", "photometric"):
        if not isinstance(fixed.get(key), str):
            raise ValueError(f"zssr.medical.{key} {fixed.get(key)!r} is not a string")
    return MedicalInfo(**fixed)  # an unknown key: TypeError


class ZarrReader(PathReaderMixin):
    """Reader for a Zarr store (v3, or v2 read through zarr-python)."""

    def __init__(self, path: str | Path, *, bands: list[int] | None = None) -> None:
        self.path = Path(path)
        self._requested = bands
        remote = is_vsi(self.path)  # by URL: chunks read where they are (fsspec)
        if not remote and not self.path.exists():
            raise InputNotFoundError(f"{self.path}: no such Zarr store")
        try:
            node = zarr.open(zarr_store(self.path) if remote else self.path, mode="r")
        except IOAdapterError:
            raise
        except Exception as exc:  # zarr raises many types for broken metadata
            where = display_url(self.path)
            raise CorruptFileError(f"{where}: cannot open the Zarr store: "
                                   f"{type(exc).__name__}: {scrub(str(exc))}") from None
        group_attrs: dict = {}
        if isinstance(node, zarr.Group):
            group_attrs = dict(node.attrs)
            self._array = self._image_array(node)
            self._group: Any = node
        else:
            self._array, self._group = node, None
        try:
            self._dims = self._dimension_names()
        except (TypeError, ValueError) as exc:  # not ours: InvalidDataError passes
            if isinstance(exc, IOAdapterError):
                raise
            raise CorruptFileError(f"{self.path}: malformed Zarr dimension names: {exc}"
                                   ) from None
        dtype = check_pixel_dtype(self._array.dtype, path=self.path)
        self._band_axis, self._frame_axis = axis_roles(self._dims)
        total = 1 if self._band_axis is None else self._array.shape[self._band_axis]
        self._selected = select_bands(bands, total, path=self.path)
        try:
            self.meta = self._metadata(group_attrs, dtype)
        except IOAdapterError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError, IndexError,
                struct.error) as exc:  # attributes another tool (or a hand) wrote wrongly
            raise CorruptFileError(f"{self.path}: malformed Zarr attributes: {exc}; fix or "
                                   "remove them (zarr.json)") from None

    def _image_array(self, group: zarr.Group) -> Any:
        arrays = dict(group.arrays())
        if DATA in arrays:
            return arrays[DATA]
        images = [name for name, arr in arrays.items() if arr.ndim >= 2]
        if len(images) != 1:
            raise InvalidDataError(
                f"{self.path}: expected one image array ({DATA!r} or the only array with "
                f"2+ dimensions), found {sorted(images) or 'none'}")
        return arrays[images[0]]

    def _dimension_names(self) -> tuple[str, ...]:
        ndim = self._array.ndim
        if ndim not in _LAYOUTS:
            raise InvalidDataError(f"{self.path}: image array has {ndim} dimensions; "
                                   "expected (y, x), (band, y, x) or (frame, band, y, x)")
        names = getattr(self._array.metadata, "dimension_names", None)
        names = names or self._array.attrs.get("_ARRAY_DIMENSIONS")
        if names and tuple(names)[-2:] != ("y", "x"):
            raise InvalidDataError(f"{self.path}: dimensions {tuple(names)} must end with "
                                   "('y', 'x'); transpose the array to rows, columns last")
        return tuple(names) if names else _LAYOUTS[ndim]

    def _metadata(self, group_attrs: dict, dtype: np.dtype) -> Metadata:
        ours = group_attrs.get(OURS) or {}
        shape = self._array.shape
        nodata = from_json_number(ours.get("nodata"))
        if nodata is None:
            nodata = _decode_fill_value(self._array.attrs.get("_FillValue"), dtype)
        total = 1 if self._band_axis is None else shape[self._band_axis]
        names = tuple(ours.get("band_names", ()))
        names = tuple(names[i] for i in self._selected) if len(names) == total else ()
        extra = dict(ours.get("extra", {}))
        alpha = ours.get("alpha_band", extra.pop("alpha_band", None))  # (older stores: in extra)
        alpha_band = self._selected.index(alpha) if alpha in self._selected else None
        extra.update(chunks=tuple(self._array.chunks), dimension_names=self._dims,
                     source_format=ours.get("source_format"),
                     attrs={k: v for k, v in group_attrs.items()
                            if k not in (OURS, "ome", *PROVENANCE_ATTRS)})
        has_mask = bool(ours.get("has_mask", False)) or nodata is not None
        return Metadata(path=self.path, format="zarr", bands=len(self._selected),
                        rows=shape[-2], cols=shape[-1], dtype=dtype,
                        frames=1 if self._frame_axis is None else shape[self._frame_axis],
                        nodata=nodata,
                        has_mask=has_mask, band_names=names,
                        geo=self._geo(ours.get("geo") or {}),
                        medical=_medical(ours.get("medical")), extra=extra,
                        alpha_band=alpha_band)

    def _geo(self, stored: dict) -> GeoInfo | None:
        name = self._array.attrs.get("grid_mapping")
        if self._group is None or not name or name not in self._group:
            return None
        ref = dict(self._group[name].attrs)
        wkt = ref.get("crs_wkt") or ref.get("spatial_ref") or None
        if "GeoTransform" in ref:
            c, a, b, f, d, e = _numbers([float(v) for v in str(ref["GeoTransform"]).split()],
                                        6, f"{name}.GeoTransform")
        else:
            x, y = self._group["x"][:2], self._group["y"][:2]
            a, e = float(x[1] - x[0]), float(y[1] - y[0])
            b = d = 0.0
            c, f = float(x[0]) - a / 2, float(y[0]) - e / 2
        pick = self._selected

        def per_band(key: str) -> tuple:
            values = stored.get(key) or ()
            return tuple(values[i] for i in pick) if len(values) > max(pick) else ()

        return GeoInfo(crs_wkt=wkt, transform=(a, b, c, d, e, f),
                       colorinterp=per_band("colorinterp"), scales=per_band("scales"),
                       offsets=per_band("offsets"), units=per_band("units"),
                       tags=dict(stored.get("tags", {})),
                       band_tags=tuple(dict(t) for t in per_band("band_tags")))

    def read(self, window: Window | None = None, *, frame: int = 0,
             bands: list[int] | None = None) -> np.ndarray:
        """``(bands, rows, cols)`` in the store's dtype; nodata (or 0) outside."""
        check_frame(frame, self.meta.frames, path=self.path)
        window = as_window(window, rows=self.meta.rows, cols=self.meta.cols)
        picks = [self._selected[i] for i in select_bands(bands, self.meta.bands, path=self.path)]

        def inner(w: Window) -> np.ndarray:
            rs = slice(int(w.row_off), int(w.row_off + w.height))
            cs = slice(int(w.col_off), int(w.col_off + w.width))
            selection: list[Any] = [slice(None)] * (self._array.ndim - 2) + [rs, cs]
            if self._frame_axis is not None:
                selection[self._frame_axis] = frame
            if self._band_axis is None:
                return np.asarray(self._array.get_orthogonal_selection(tuple(selection)))[None]
            selection[self._band_axis] = picks
            return np.asarray(self._array.get_orthogonal_selection(tuple(selection)))

        fill = 0 if self.meta.nodata is None else self.meta.nodata
        return boundless_read(inner, window, rows=self.meta.rows, cols=self.meta.cols,
                              bands=len(picks), dtype=self.meta.dtype, fill=fill)

    def read_masks(self, window: Window | None = None, *, frame: int = 0) -> np.ndarray:
        """``(bands, rows, cols)`` bool: not nodata (not NaN for floats), alpha not 0;
        False outside the raster."""
        window = as_window(window, rows=self.meta.rows, cols=self.meta.cols)
        inside = inside_mask(window, rows=self.meta.rows, cols=self.meta.cols)
        data = self.read(window, frame=frame)
        valid = np.broadcast_to(inside, data.shape).copy()
        nodata = self.meta.nodata
        if self.meta.dtype.kind == "f":
            valid &= ~np.isnan(data)
        if nodata is not None and not np.isnan(nodata):
            valid &= data != nodata
        alpha = self.meta.alpha_band
        if alpha is not None:
            valid &= data[alpha] != 0
        return valid

    def read_mask(self, window: Window | None = None, *, frame: int = 0) -> np.ndarray:
        """``(rows, cols)`` bool, True where every band is valid; False outside."""
        return self.read_masks(window, frame=frame).all(axis=0)

    def close(self) -> None:
        """Nothing to release: Zarr opens chunk files per read."""

