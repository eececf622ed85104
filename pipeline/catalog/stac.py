"""STAC Items beside outputs and a Collection for a run (pystac).

``write_output_item(output, provenance=...)`` opens the committed output with its
reader and writes ``<output name>.stac-item.json`` beside it:

- geometry and bbox: the output's footprint in WGS 84 (none for an image without a
  CRS: PNG, DICOM, a plain TIFF);
- ``proj:`` (projection v2.0.0): code (``EPSG:n``) or WKT2, shape, transform, bbox in
  the output's CRS;
- the ``data`` asset with ``raster:bands`` (raster v1.1.0: data type, nodata, scale,
  offset, unit, spatial resolution) and ``eo:bands`` (eo v1.1.0: the source Item's
  bands when there is one, else names, common names and centre wavelengths read from
  band descriptions and BANDNAME/WAVELENGTH tags);
- ``processing:software`` and ``processing:lineage`` (processing v1.1.0), and a
  ``derived_from`` link to the source Item (or the source file when there is none).

``write_run_collection`` writes a Collection whose extent covers the Items and which
links each of them; each Item names its Collection (``collection`` id and link) when
written with ``collection=``.  Item ids are the output's file name.

The Item's ``datetime`` is the source Item's acquisition time; without a source Item
it is ``None`` with ``start_datetime = end_datetime`` = the time the Item is written
(STAC needs one of the two forms), and ``created`` is always the time of writing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pystac
from pyproj import CRS, Transformer
from pystac.extensions.eo import EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterExtension

from io_adapters.base import Metadata
from io_adapters.detect import open_reader
from io_adapters.output_safety import check_output, write_text_atomic
from io_adapters.provenance import TAG_PREFIX, Provenance

__all__ = ["ITEM_SUFFIX", "PROCESSING_SCHEMA", "item_path", "output_item", "write_output_item",
           "run_collection", "write_run_collection", "eo_bands_from_meta"]

log = logging.getLogger(__name__)

ITEM_SUFFIX = ".stac-item.json"
PROCESSING_SCHEMA = "https://stac-extensions.github.io/processing/v1.1.0/schema.json"
_MEDIA = {".tif": pystac.MediaType.COG, ".tiff": pystac.MediaType.GEOTIFF,
          ".zarr": "application/vnd+zarr", ".png": pystac.MediaType.PNG,
          ".dcm": "application/dicom"}
_COMMON = ("coastal", "blue", "green", "red", "rededge", "yellow", "pan", "nir", "nir08",
           "nir09", "cirrus", "swir16", "swir22", "lwir", "lwir11", "lwir12")


def item_path(output: Path) -> Path:
    """Where the Item of ``output`` goes: ``<output name>.stac-item.json`` beside it."""
    output = Path(output)
    return output.with_name(output.name + ITEM_SUFFIX)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _footprint(meta: Metadata) -> tuple[dict | None, list[float] | None, list[float] | None]:
    """(WGS 84 polygon, WGS 84 bbox, native bbox) of a georeferenced image."""
    geo = meta.geo
    if geo is None or not geo.crs_wkt:
        return None, None, None
    a, b, c, d, e, f = geo.transform
    corners = [(c + a * col + b * row, f + d * col + e * row)
               for col, row in ((0, 0), (meta.cols, 0), (meta.cols, meta.rows), (0, meta.rows))]
    xs, ys = zip(*corners, strict=True)
    native = [min(xs), min(ys), max(xs), max(ys)]
    to_wgs84 = Transformer.from_crs(CRS.from_wkt(geo.crs_wkt), "EPSG:4326", always_xy=True)
    ring = [list(to_wgs84.transform(x, y)) for x, y in corners]
    ring.append(ring[0])
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    return ({"type": "Polygon", "coordinates": [ring]},
            [min(lons), min(lats), max(lons), max(lats)], native)


def _band_tag(meta: Metadata, i: int, key: str) -> str | None:
    tags = meta.geo.band_tags if meta.geo is not None else ()
    return tags[i].get(key) if len(tags) == meta.bands else None


def eo_bands_from_meta(meta: Metadata) -> list[dict[str, Any]]:
    """``eo:bands`` from band descriptions, colour interpretation and BANDNAME/WAVELENGTH
    tags (GDAL's convention; WAVELENGTH in micrometres unless WAVELENGTH_UNITS says nm)."""
    bands: list[dict[str, Any]] = []
    interp = meta.geo.colorinterp if meta.geo is not None else ()
    for i in range(meta.bands):
        band: dict[str, Any] = {}
        name = _band_tag(meta, i, "BANDNAME") or (meta.band_names[i] if i < len(
            meta.band_names) else "") or f"b{i + 1}"
        band["name"] = name
        words = [w.lower() for w in name.replace("_", " ").split()]
        words += [interp[i]] if i < len(interp) else []
        common = _band_tag(meta, i, "STAC_COMMON_NAME") or next(  # a STAC input's own
            (w for w in words if w in _COMMON), None)
        if common:
            band["common_name"] = common
        wavelength = _band_tag(meta, i, "WAVELENGTH")
        if wavelength:
            try:
                value = float(wavelength)
            except ValueError:
                value = math.nan
            units = (_band_tag(meta, i, "WAVELENGTH_UNITS") or "").lower()
            if math.isfinite(value) and value > 0:
                band["center_wavelength"] = value / 1000 if units.startswith("nano") else value
        bands.append(band)
    return bands


def _raster_bands(meta: Metadata) -> list[dict[str, Any]]:
    geo = meta.geo
    out = []
    for i in range(meta.bands):
        band: dict[str, Any] = {"data_type": meta.dtype.name}
        if meta.nodata is not None:
            band["nodata"] = meta.nodata if math.isfinite(meta.nodata) else str(
                meta.nodata).lower()
        if geo is not None:
            if len(geo.scales) == meta.bands:
                band["scale"] = float(geo.scales[i])
            if len(geo.offsets) == meta.bands:
                band["offset"] = float(geo.offsets[i])
            if len(geo.units) == meta.bands and geo.units[i]:
                band["unit"] = geo.units[i]
            if geo.crs_wkt and CRS.from_wkt(geo.crs_wkt).is_projected:
                band["spatial_resolution"] = abs(float(geo.transform[0]))
        out.append(band)
    return out


def _proj_code(wkt: str) -> str | None:
    epsg = CRS.from_wkt(wkt).to_epsg()
    return f"EPSG:{epsg}" if epsg else None


def output_item(output: Path, *, provenance: Provenance, source_href: str,
                source_item: pystac.Item | None = None,
                eo_bands: Sequence[dict[str, Any]] | None = None) -> pystac.Item:
    """The Item of the committed ``output`` (see the module docstring).

    ``source_href``: the source Item's or file's location (the ``derived_from`` link);
    ``eo_bands``: the input's bands in output order (from a STAC input), else they are
    read from the output's band metadata.
    """
    output = Path(output)
    with open_reader(output) as reader:
        meta = reader.meta
    geometry, bbox, native_bbox = _footprint(meta)
    # the kernel the output itself records (a COG/TIFF tag) wins: with --kernel estimate
    # it names the kernel chosen while the job ran, which the caller may not know
    kernel = (meta.geo.tags.get(f"{TAG_PREFIX}KERNEL") if meta.geo is not None else None) \
        or provenance.kernel
    now = _now()
    when = source_item.datetime if source_item is not None else None
    props: dict[str, Any] = {"created": pystac.utils.datetime_to_str(now),
                             "processing:software": {provenance.software: provenance.version},
                             "processing:lineage": (
                                 f"super-resolved x{provenance.scale} (zero-shot SR, kernel "
                                 f"{kernel}, config sha256 "
                                 f"{provenance.config_sha256}) from {provenance.source}")}
    item = pystac.Item(id=output.name, geometry=geometry, bbox=bbox, datetime=when,
                       start_datetime=None if when else now, end_datetime=None if when else now,
                       properties=props)
    if source_item is not None:
        for key in ("platform", "constellation", "instruments", "gsd_source"):
            if key in source_item.properties:
                item.properties[key] = source_item.properties[key]
    item.stac_extensions.append(PROCESSING_SCHEMA)
    media = _MEDIA.get(output.suffix.lower())
    asset = pystac.Asset(href=output.name, media_type=media, roles=["data"],
                         title=f"{output.name} ({meta.bands} bands, {meta.rows} x {meta.cols})")
    item.add_asset("data", asset)
    if meta.geo is not None and meta.geo.crs_wkt:
        proj = ProjectionExtension.ext(item, add_if_missing=True)
        code = _proj_code(meta.geo.crs_wkt)
        proj.apply(code=code, wkt2=None if code else CRS.from_wkt(meta.geo.crs_wkt).to_wkt(),
                   shape=[meta.rows, meta.cols], transform=list(meta.geo.transform),
                   bbox=native_bbox)
    RasterExtension.ext(asset, add_if_missing=True).bands = [
        pystac.extensions.raster.RasterBand.create(**b) for b in _raster_bands(meta)]
    bands = list(eo_bands) if eo_bands is not None else eo_bands_from_meta(meta)
    if len(bands) == meta.bands:
        EOExtension.ext(asset, add_if_missing=True).bands = [
            pystac.extensions.eo.Band(dict(b)) for b in bands]
    item.add_link(pystac.Link("derived_from", source_href,
                              media_type=pystac.MediaType.JSON if source_item is not None
                              else None))
    return item


def write_output_item(output: Path, *, provenance: Provenance, source_href: str,
                      source_item: pystac.Item | None = None,
                      eo_bands: Sequence[dict[str, Any]] | None = None,
                      inputs: Iterable[Path] = (),
                      collection: tuple[str, str] | None = None) -> Path:
    """Write the Item of ``output`` beside it (atomic; the output rule applies: never an
    input, never through a link, only over an earlier JSON document).  ``collection``:
    the ``(id, href)`` of the Collection the Item belongs to (``href`` relative to the
    Item): its ``collection`` id and ``collection`` link."""
    path = item_path(output)
    check_output(path, inputs=tuple(inputs), overwrite=True)
    item = output_item(output, provenance=provenance, source_href=source_href,
                       source_item=source_item, eo_bands=eo_bands)
    if collection is not None:
        item.collection_id = collection[0]
        item.add_link(pystac.Link(pystac.RelType.COLLECTION, collection[1],
                                  media_type=pystac.MediaType.JSON))
    item.set_self_href(str(path.resolve()))
    data = item.to_dict(include_self_link=False, transform_hrefs=False)
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
    log.info("wrote STAC Item %s", path)
    return path


def run_collection(items: Sequence[pystac.Item], *, collection_id: str,
                   description: str) -> pystac.Collection:
    """A Collection covering ``items`` (spatial union of their bboxes, their time span)."""
    boxes = [i.bbox for i in items if i.bbox]
    spatial = [[min(b[0] for b in boxes), min(b[1] for b in boxes),
                max(b[2] for b in boxes), max(b[3] for b in boxes)]] if boxes else \
        [[-180.0, -90.0, 180.0, 90.0]]
    times = [t for i in items for t in (i.datetime, i.common_metadata.start_datetime,
                                        i.common_metadata.end_datetime) if t is not None]
    temporal = [[min(times), max(times)]] if times else [[None, None]]
    collection = pystac.Collection(
        id=collection_id, description=description, license="other",
        extent=pystac.Extent(pystac.SpatialExtent(spatial), pystac.TemporalExtent(temporal)))
    return collection


def write_run_collection(item_files: Sequence[Path], path: Path, *, collection_id: str,
                         description: str) -> Path:
    """Write ``path`` (a Collection JSON) linking the Items in ``item_files``."""
    path = Path(path)
    check_output(path, overwrite=True)
    items = [pystac.Item.from_file(str(f)) for f in item_files]
    collection = run_collection(items, collection_id=collection_id, description=description)
    data = collection.to_dict(include_self_link=False, transform_hrefs=False)
    base = path.parent.resolve()
    for f, item in zip(item_files, items, strict=True):
        href = os.path.relpath(Path(f).resolve(), base)
        data["links"].append({"rel": "item", "href": href, "type": pystac.MediaType.GEOJSON,
                              "title": item.id})
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
    return path
