"""A STAC Item as an input: the assets (or ``eo:bands`` common names) to stack, in order.

``resolve_stac_input(item_href, ["red", "green", "blue"], workdir=...)`` reads the
Item (a local JSON file, or an http(s) URL through pystac's StacIO), picks for each
name either the asset of that key (all its bands) or the band whose ``eo:bands``
``common_name`` or ``name`` it is (asset-level ``eo:bands`` first, then the Item's),
checks that every picked asset lies on one pixel grid (CRS, transform, size) and has
one data type, and writes a GDAL VRT that stacks the bands in the order named.  The
VRT references the assets where they are (a local path, or ``/vsis3/``/``/vsicurl?``
for URLs, :func:`io_adapters.vsi.gdal_path`: GDAL reads windows by range requests),
so nothing is copied; the pipeline
opens it with the GeoTIFF reader like any GDAL raster.  Each VRT band carries its
description, ``BANDNAME``/``WAVELENGTH`` tags, nodata, scale and offset, taken from the
Item's ``eo:bands`` and ``raster:bands`` when present, else from the asset file.

Assets on different grids (Sentinel-2's 10 m and 20 m bands) are refused: resampling
one onto the other is a choice this module does not make for the user.
"""

from __future__ import annotations

import json
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pystac
import rasterio
from rasterio.errors import RasterioError

from io_adapters.errors import CorruptFileError, InvalidDataError, UnsupportedFormatError
from io_adapters.objstore import is_remote, read_text
from io_adapters.output_safety import write_text_atomic
from io_adapters.vsi import display_url, gdal_path
from pipeline.errors import InputError, UsageError

__all__ = ["StackedBand", "StacInput", "read_item", "select_bands", "write_stack_vrt",
           "resolve_stac_input", "is_stac_item", "item_href", "parse_assets",
           "resolve_item_input"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StackedBand:
    """One band of the stack: ``band`` (1-based) of the asset ``asset`` at ``href``."""

    asset: str
    href: str
    band: int
    eo: dict[str, Any] = field(default_factory=dict)
    raster: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StacInput:
    vrt: Path
    item: pystac.Item
    item_href: str
    bands: tuple[StackedBand, ...]

    @property
    def eo_bands(self) -> list[dict[str, Any]]:
        """The stack's ``eo:bands`` in order (for the output's Item)."""
        return [dict(b.eo) or {"name": f"{b.asset}:{b.band}"} for b in self.bands]


def is_stac_item(path: Path) -> bool:
    """A JSON file whose top-level ``type`` is ``Feature`` with a ``stac_version``."""
    if Path(path).suffix.lower() not in (".json", ".geojson") or not Path(path).is_file():
        return False
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read(16 * 1024 * 1024))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("type") == "Feature" and "stac_version" in data


def read_item(href: str | Path) -> pystac.Item:
    """The Item at ``href`` (a path, an ``s3://`` or http(s) URL); one-line errors naming
    it.  ``s3://`` is read with boto3 (pystac's own reader knows files and http only)."""
    text = str(href)
    if "://" not in text and not Path(text).is_file():
        raise InputError(f"{text}: no such STAC Item file")
    try:
        if is_remote(text):
            item = pystac.read_dict(json.loads(read_text(text)), href=text)
        else:
            item = pystac.read_file(text)
    except (ValueError, KeyError) as exc:  # not JSON, or JSON that is not STAC
        raise CorruptFileError(f"{text}: not a readable STAC Item: {exc}") from None
    except OSError as exc:
        raise InputError(f"{text}: cannot read the STAC Item: {exc}") from None
    if not isinstance(item, pystac.Item):
        raise UnsupportedFormatError(f"{text}: a STAC {type(item).__name__}, not an Item; "
                                     "name one Item")
    return item


def _asset_href(item: pystac.Item, item_href: str, key: str) -> str:
    href = item.assets[key].href
    if "://" in href or href.startswith("/"):
        return href
    base = item_href.rsplit("/", 1)[0] if "://" in item_href else str(
        Path(item_href).resolve().parent)
    return f"{base}/{href}"


def _asset_bands(item: pystac.Item, key: str, field_name: str) -> list[dict[str, Any]]:
    asset = item.assets[key]
    bands = asset.extra_fields.get(field_name)
    if bands is None and field_name == "eo:bands" and len(item.assets) == 1:
        bands = item.properties.get("eo:bands")
    return [dict(b) for b in bands] if isinstance(bands, list) else []


def _band_count(href: str) -> int:
    try:
        with rasterio.open(gdal_path(href)) as ds:
            return ds.count
    except RasterioError as exc:
        raise InputError(f"{href}: cannot open the STAC asset: {' '.join(str(exc).split())}"
                         ) from None


def select_bands(item: pystac.Item, item_href: str, names: Sequence[str]) -> list[StackedBand]:
    """The bands named by ``names`` (asset keys, or eo:bands common names / names), in order."""
    if not names:
        raise UsageError(f"{item_href}: --assets names no asset; give asset keys or "
                         "eo:bands common names, e.g. --assets red,green,blue")
    picked: list[StackedBand] = []
    for name in names:
        if name in item.assets:
            href = _asset_href(item, item_href, name)
            eo, raster = _asset_bands(item, name, "eo:bands"), _asset_bands(
                item, name, "raster:bands")
            count = len(eo) or len(raster) or _band_count(href)
            picked += [StackedBand(name, href, i + 1, eo[i] if i < len(eo) else {},
                                   raster[i] if i < len(raster) else {}) for i in range(count)]
            continue
        found = _by_band_name(item, item_href, name)
        if found is None:
            raise UsageError(f"{item_href}: --assets {name!r} is neither an asset nor an "
                             f"eo:bands common name; assets: {', '.join(item.assets)}")
        picked.append(found)
    return picked


def _by_band_name(item: pystac.Item, item_href: str, name: str) -> StackedBand | None:
    for key in item.assets:
        eo = _asset_bands(item, key, "eo:bands")
        raster = _asset_bands(item, key, "raster:bands")
        for i, band in enumerate(eo):
            if name in (band.get("common_name"), band.get("name")):
                return StackedBand(key, _asset_href(item, item_href, key), i + 1, band,
                                   raster[i] if i < len(raster) else {})
    return None


def _grid(href: str) -> dict[str, Any]:
    try:
        with rasterio.open(gdal_path(href)) as ds:
            return {"crs": ds.crs.to_wkt() if ds.crs else "", "transform": tuple(ds.transform),
                    "size": (ds.width, ds.height), "dtypes": ds.dtypes,
                    "blocks": ds.block_shapes, "nodata": ds.nodatavals,
                    "scales": ds.scales, "offsets": ds.offsets,
                    "descriptions": ds.descriptions,
                    "tags": [ds.tags(i + 1) for i in range(ds.count)]}
    except RasterioError as exc:
        raise InputError(f"{href}: cannot open the STAC asset: {' '.join(str(exc).split())}"
                         ) from None


def write_stack_vrt(bands: Sequence[StackedBand], vrt_path: Path, *, item_href: str) -> Path:
    """A VRT stacking ``bands`` in order; every asset must share one grid and data type."""
    grids = {b.href: _grid(b.href) for b in bands}
    first_href, first = next(iter(grids.items()))
    for href, g in grids.items():
        for key in ("crs", "transform", "size"):
            if g[key] != first[key]:
                raise InvalidDataError(
                    f"{item_href}: assets {first_href} and {href} differ in {key} "
                    f"({first[key]} vs {g[key]}); stack assets on one pixel grid")
    dtypes = {grids[b.href]["dtypes"][b.band - 1] for b in bands}
    if len(dtypes) != 1:
        raise InvalidDataError(f"{item_href}: the chosen bands have data types "
                               f"{sorted(dtypes)}; stack bands of one type")
    dtype = dtypes.pop()
    width, height = first["size"]
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    if first["crs"]:
        ET.SubElement(root, "SRS").text = first["crs"]
    a, b, c, d, e, f = first["transform"][:6]
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v)) for v in (c, a, b,
                                                                                   f, d, e))
    for n, band in enumerate(bands, start=1):
        _vrt_band(root, n, band, grids[band.href], dtype)
    ET.indent(root)
    write_text_atomic(Path(vrt_path), ET.tostring(root, encoding="unicode") + "\n")
    return Path(vrt_path)


_VRT_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
              "uint32": "UInt32", "int32": "Int32", "uint64": "UInt64", "int64": "Int64",
              "float32": "Float32", "float64": "Float64"}


def _vrt_band(root: ET.Element, n: int, band: StackedBand, grid: dict[str, Any],
              dtype: str) -> None:
    i = band.band - 1
    el = ET.SubElement(root, "VRTRasterBand", dataType=_VRT_TYPES[dtype], band=str(n))
    name = band.eo.get("name") or grid["descriptions"][i] or f"{band.asset}"
    ET.SubElement(el, "Description").text = str(name)
    nodata = band.raster.get("nodata", grid["nodata"][i])
    if nodata is not None:
        ET.SubElement(el, "NoDataValue").text = str(nodata)
    scale = band.raster.get("scale", grid["scales"][i])
    offset = band.raster.get("offset", grid["offsets"][i])
    if scale is not None and (scale, offset) != (1.0, 0.0):
        ET.SubElement(el, "Offset").text = repr(float(offset or 0.0))
        ET.SubElement(el, "Scale").text = repr(float(scale))
    tags = dict(grid["tags"][i])
    tags["BANDNAME"] = str(name)
    wavelength = band.eo.get("center_wavelength")
    if isinstance(wavelength, int | float) and math.isfinite(wavelength):
        tags.update(WAVELENGTH=repr(float(wavelength)), WAVELENGTH_UNITS="micrometers")
    tags["STAC_ASSET"] = band.asset
    if band.eo.get("common_name"):
        tags["STAC_COMMON_NAME"] = str(band.eo["common_name"])
    md = ET.SubElement(el, "Metadata")
    for key, value in sorted(tags.items()):
        ET.SubElement(md, "MDI", key=str(key)).text = str(value)
    src = ET.SubElement(el, "SimpleSource")
    path = gdal_path(band.href)
    local = "://" not in band.href and not path.startswith("/vsi")
    ET.SubElement(src, "SourceFilename", relativeToVRT="0").text = (
        os.path.abspath(path) if local else path)
    ET.SubElement(src, "SourceBand").text = str(band.band)
    by, bx = grid["blocks"][i]
    w, h = grid["size"]
    ET.SubElement(src, "SourceProperties", RasterXSize=str(w), RasterYSize=str(h),
                  DataType=_VRT_TYPES[dtype], BlockXSize=str(bx), BlockYSize=str(by))
    ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(w), ySize=str(h))
    ET.SubElement(src, "DstRect", xOff="0", yOff="0", xSize=str(w), ySize=str(h))


def resolve_stac_input(item_href: str | Path, names: Sequence[str], *,
                       workdir: Path) -> StacInput:
    """Read the Item, pick the bands and write ``<workdir>/<item id>.vrt`` stacking them."""
    href = str(item_href)
    item = read_item(href)
    bands = select_bands(item, href, names)
    safe_id = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in item.id) or "item"
    vrt = write_stack_vrt(bands, Path(workdir) / f"{safe_id}.vrt", item_href=href)
    log.info("%s: stacked %d band(s) from %s into %s", href, len(bands),
             ", ".join(dict.fromkeys(b.asset for b in bands)), vrt)
    return StacInput(vrt=vrt, item=item, item_href=href, bands=tuple(bands))


def item_href(spec: str | Path) -> str | None:
    """The STAC Item an INPUT names, as provenance names it (the URL of an ``s3://``/
    ``https://`` ``….json`` object, or the resolved path of a local Item file); None for
    any other input."""
    url = display_url(spec)  # /vsis3/… -> s3://…: the Item by URL
    if "://" in url:
        return url if url.lower().split("?", 1)[0].endswith(".json") else None
    return str(Path(spec).resolve()) if is_stac_item(Path(spec)) else None


def parse_assets(text: str | Sequence[str]) -> list[str]:
    """``--assets red,green,blue`` (or a job file's list) -> the names, in order."""
    parts = text.split(",") if isinstance(text, str) else [str(t) for t in text]
    return [n.strip() for n in parts if n.strip()]


def resolve_item_input(spec: str | Path, assets: str | Sequence[str] | None, *,
                       workdir: Path) -> StacInput | None:
    """With ``assets``, the Item ``spec`` stacked into ``<workdir>/<id>.vrt``; None when
    ``spec`` is no Item and no ``assets`` are given.  The rules of ``--assets`` for
    ``zssr upscale``, ``zssr run`` and a batch job's ``assets``: an Item needs them, they
    need an Item."""
    href = item_href(spec)
    if href is None:
        if assets is None:
            return None
        raise UsageError(f"--assets: {spec} is not a STAC Item (a JSON Feature with "
                         "stac_version); give the Item's JSON file")
    names = parse_assets(assets) if assets is not None else []
    if not names:
        raise UsageError(f"{spec}: a STAC Item input needs --assets (asset keys or "
                         "eo:bands common names, e.g. --assets red,green,blue)")
    return resolve_stac_input(href, names, workdir=workdir)
