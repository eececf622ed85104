"""Provenance carried into every output, and the CF conventions of geo Zarr stores.

A :class:`Provenance` is built once by the pipeline (``pipeline.catalog.provenance``) and
handed to a writer as its ``provenance=`` keyword; this module only knows how a
format spells it:

- GeoTIFF/COG dataset tags (``rio info --tags``): ``TIFFTAG_SOFTWARE`` (the real TIFF
  tag) and ``ZSSR_SOFTWARE``, ``ZSSR_VERSION``, ``ZSSR_SOURCE``, ``ZSSR_SCALE``,
  ``ZSSR_KERNEL``, ``ZSSR_CONFIG_SHA256``, ``ZSSR_CONFIG`` (the resolved config as
  compact JSON);
- Zarr group attributes: ``provenance`` (the same fields, the config as an object),
  and CF's ``Conventions``, ``source`` and ``history``.

Nothing time-dependent is written, so two runs of one job give identical bytes.
Tags named ``ZSSR_*`` inherited from an input (an earlier zssr output) are dropped:
they describe that file, not this one.

The CF part (:func:`cf_grid_mapping`, :func:`cf_xy_attrs`, :func:`cf_value_attrs`)
follows what rioxarray writes (``CRS.to_cf()`` and ``CRS.cs_to_cf()`` from pyproj),
so ``xarray.open_zarr`` decodes reflectance as ``rioxarray.open_rasterio`` decodes
the source GeoTIFF.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyproj import CRS

from .base import GeoInfo

__all__ = ["Provenance", "TAG_PREFIX", "PROVENANCE_ATTRS", "cog_tags", "inherited_tags", "zarr_attrs",
           "cf_grid_mapping", "cf_xy_attrs", "cf_value_attrs"]

TAG_PREFIX = "ZSSR_"
# group attributes zarr_attrs writes: they describe how that store was made, so a
# reader does not pass them on as the image's own attributes
PROVENANCE_ATTRS = ("Conventions", "provenance", "source", "history")
CF_CONVENTIONS = "CF-1.10"


@dataclass(frozen=True)
class Provenance:
    """What made an output: software and version, source, scale, kernel, resolved config.

    ``source`` is the input as the user named it (a path or a URL, credentials never
    part of it); ``scale`` the scale as text (``"2"``, ``"3/2"``, ``"2,3"``);
    ``kernel`` ``"bicubic"`` or ``"<name> sha256:<hex>"``; ``config`` the resolved
    config as a JSON-able mapping and ``config_sha256`` its hash.
    """

    software: str
    version: str
    source: str
    scale: str
    kernel: str
    config_sha256: str
    config: Mapping[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, str]:
        """The one-line fields, by lower-case name."""
        return {"software": self.software, "version": self.version, "source": self.source,
                "scale": self.scale, "kernel": self.kernel,
                "config_sha256": self.config_sha256}


def inherited_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """An input's dataset tags less those describing how that input was made."""
    return {k: v for k, v in tags.items()
            if not k.upper().startswith(TAG_PREFIX) and k != "TIFFTAG_SOFTWARE"}


def cog_tags(prov: Provenance) -> dict[str, str]:
    """GeoTIFF dataset tags for ``prov``."""
    tags = {f"{TAG_PREFIX}{k.upper()}": v for k, v in prov.fields().items()}
    tags["TIFFTAG_SOFTWARE"] = f"{prov.software} {prov.version}"
    tags[f"{TAG_PREFIX}CONFIG"] = json.dumps(prov.config, sort_keys=True,
                                             separators=(",", ":"))
    return tags


def zarr_attrs(prov: Provenance | None, *, geo: bool) -> dict[str, Any]:
    """Zarr group attributes for ``prov`` (and CF's ``Conventions`` for a geo store)."""
    attrs: dict[str, Any] = {}
    if geo:
        attrs["Conventions"] = CF_CONVENTIONS
    if prov is not None:
        attrs["provenance"] = {**prov.fields(), "config": dict(prov.config)}
        attrs["source"] = f"{prov.software} {prov.version}"
        attrs["history"] = (f"super-resolved x{prov.scale} from {prov.source} by "
                            f"{prov.software} {prov.version} (kernel {prov.kernel}, "
                            f"config sha256 {prov.config_sha256})")
    return attrs


def cf_grid_mapping(crs_wkt: str | None) -> dict[str, Any]:
    """Attributes of the ``spatial_ref`` variable: pyproj's CF export of the CRS
    (``grid_mapping_name``, ``crs_wkt`` and the projection parameters) plus the WKT
    under ``spatial_ref`` as GDAL reads it.  A CRS CF cannot name keeps its WKT only."""
    if not crs_wkt:
        return {"crs_wkt": "", "spatial_ref": ""}
    crs = CRS.from_wkt(crs_wkt)
    attrs = {k: _plain(v) for k, v in crs.to_cf().items()}
    attrs["crs_wkt"] = crs_wkt
    attrs["spatial_ref"] = crs_wkt
    return attrs


def cf_xy_attrs(crs_wkt: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """CF attributes of the x and y coordinates (``standard_name``, ``long_name``,
    ``units``, ``axis``) from the CRS's coordinate system (pyproj ``cs_to_cf``)."""
    x = {"axis": "X", "long_name": "x coordinate of projection"}
    y = {"axis": "Y", "long_name": "y coordinate of projection"}
    if not crs_wkt:
        return x, y
    for cf in CRS.from_wkt(crs_wkt).cs_to_cf():  # by axis, whatever the CRS's axis order
        target = x if cf.get("axis") == "X" else y if cf.get("axis") == "Y" else None
        if target is not None:
            target.update({k: _plain(v) for k, v in cf.items()})
    return x, y


def cf_value_attrs(geo: GeoInfo | None, bands: int) -> dict[str, Any]:
    """``scale_factor``/``add_offset``/``units`` of the data variable.

    CF gives one scale and offset per variable: they are written when every band
    shares them and they are not the identity (xarray then decodes the stored
    integers to physical values, as rioxarray does with ``mask_and_scale=True``).
    Bands with different scales keep them per band in ``scales``/``offsets`` (what
    rioxarray does too) and are left undecoded.
    """
    if geo is None:
        return {}
    attrs: dict[str, Any] = {}
    scales, offsets = tuple(geo.scales), tuple(geo.offsets)
    if len(scales) == bands and len(offsets) == bands and bands:
        if len(set(scales)) == 1 and len(set(offsets)) == 1:
            if (scales[0], offsets[0]) != (1.0, 0.0):
                attrs["scale_factor"] = float(scales[0])
                attrs["add_offset"] = float(offsets[0])
        else:
            attrs["scales"] = [float(s) for s in scales]
            attrs["offsets"] = [float(o) for o in offsets]
    units = tuple(geo.units)
    if len(units) == bands and bands and len(set(units)) == 1 and units[0]:
        attrs["units"] = units[0]
    return attrs


def _plain(value: Any) -> Any:
    """pyproj's CF values as JSON-able Python values."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value
