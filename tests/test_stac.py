"""STAC in and out (issue 17, item 4), validated by pystac offline.

* Input: an Item whose assets are single-band COGs (the bands of the committed Landsat
  fixture, one file each, with ``eo:bands``/``raster:bands``); ``--assets red,green,blue``
  (common names) or asset keys stack the bands in the order named: the stacked pixels
  equal rasterio's own read of each asset file, and band names, wavelengths, nodata and
  scales travel.  Unknown names, assets on different grids, a missing Item and a
  Collection in place of an Item are refused with one line naming the Item.
* Output: ``zssr upscale ITEM.json OUT --assets red,green,blue``; the Item written
  beside the SR output passes pystac's validation (core,
  projection v2.0.0, raster v1.1.0, eo v1.1.0, processing v1.1.0), its bbox equals the
  output's corners transformed to WGS 84 by rasterio.warp (an independent path), and it
  links the source Item as ``derived_from``; the run's Collection validates and links it.

Offline: the extension schemas are bundled in ``tests/data/stac_schemas`` (provenance in
``tests/data/README.md``) and put in the validator's cache; a StacIO that refuses every
other href makes a schema fetch fail instead of reaching the network.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from pystac.stac_io import DefaultStacIO
from pystac.validation import JsonSchemaSTACValidator, set_validator
from rasterio.warp import transform

from io_adapters.detect import open_reader
from io_adapters.errors import CorruptFileError, InvalidDataError, UnsupportedFormatError
from io_adapters.vsi import display_url, gdal_path
from pipeline.catalog.stac import PROCESSING_SCHEMA, item_path, write_run_collection
from pipeline.catalog.stac_input import is_stac_item, resolve_stac_input
from pipeline.cli.main import main
from pipeline.errors import InputError, UsageError
from zssr import __version__

LANDSAT = Path(__file__).parent / "data" / "io" / "geotiff" / "landsat_64x80.tif"
SCHEMAS = Path(__file__).parent / "data" / "stac_schemas"
BUNDLED = {f"https://stac-extensions.github.io/{name}/{version}/schema.json":
           SCHEMAS / f"{name}-{version}.json"
           for name, version in (("eo", "v1.1.0"), ("projection", "v2.0.0"),
                                 ("raster", "v1.1.0"), ("processing", "v1.1.0"))}
# Landsat 8 OLI bands 2-5 (USGS Landsat 8 data users handbook, band centres in um)
OLI = (("blue", 0.482), ("green", 0.561), ("red", 0.655), ("nir08", 0.865))
SCALE, OFFSET = 2.75e-05, -0.2
TINY = ["--set", "train.max_iters=2", "--set", "net.depth=3", "--set", "net.width=4",
        "--set", "infer.back_projection_iters=0", "--set", "train.crop_size=16", "-q"]


class OfflineStacIO(DefaultStacIO):
    """Local files only: a schema that is not bundled fails loudly."""

    def read_text_from_href(self, href: str) -> str:
        if "://" in href and not href.startswith("file://"):
            raise OSError(f"offline test: refusing to fetch {href}")
        return super().read_text_from_href(href)


@pytest.fixture
def offline_validator():
    validator = JsonSchemaSTACValidator()
    validator.schema_cache.update({uri: json.loads(path.read_text())
                                   for uri, path in BUNDLED.items()})
    previous = pystac.StacIO._default_io
    pystac.StacIO.set_default(OfflineStacIO)
    set_validator(validator)
    yield validator
    set_validator(JsonSchemaSTACValidator())
    pystac.StacIO._default_io = previous


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    """An Item with one single-band COG asset per Landsat band, eo/raster bands set."""
    folder = tmp_path / "scene"
    folder.mkdir()
    with rasterio.open(LANDSAT) as src:
        profile, data = src.profile, src.read()
    profile.update(count=1, tiled=True, blockxsize=16, blockysize=16)
    item = pystac.Item(id="LC08_test", geometry=None, bbox=None,
                       datetime=pystac.utils.str_to_datetime("2020-10-31T14:32:10Z"),
                       properties={"platform": "landsat-8"})
    for i, (common, wavelength) in enumerate(OLI):
        key = f"SR_B{i + 2}"
        with rasterio.open(folder / f"{key}.tif", "w", **profile) as dst:
            dst.write(data[i:i + 1])
            dst.scales, dst.offsets = (SCALE,), (OFFSET,)
        asset = pystac.Asset(href=f"{key}.tif", media_type=pystac.MediaType.COG,
                             roles=["data"])
        asset.extra_fields["eo:bands"] = [{"name": key, "common_name": common,
                                           "center_wavelength": wavelength}]
        asset.extra_fields["raster:bands"] = [{"nodata": 0, "scale": SCALE, "offset": OFFSET,
                                               "data_type": "uint16"}]
        item.add_asset(key, asset)
    item.stac_extensions += ["https://stac-extensions.github.io/eo/v1.1.0/schema.json",
                             "https://stac-extensions.github.io/raster/v1.1.0/schema.json"]
    path = folder / "item.json"
    path.write_text(json.dumps(item.to_dict(include_self_link=False)))
    return path


def test_common_names_stack_the_assets_in_order(scene: Path, tmp_path: Path) -> None:
    assert is_stac_item(scene) and not is_stac_item(LANDSAT)
    stac = resolve_stac_input(scene, ["red", "green", "blue"], workdir=tmp_path)
    with open_reader(stac.vrt) as reader:
        got, meta = reader.read(), reader.meta
    with rasterio.open(LANDSAT) as src:
        expected = src.read([3, 2, 1])  # independent: the bands of the original stack
    np.testing.assert_array_equal(got, expected)
    assert meta.band_names == ("SR_B4", "SR_B3", "SR_B2")
    assert [t["WAVELENGTH"] for t in meta.geo.band_tags] == ["0.655", "0.561", "0.482"]
    assert [t["BANDNAME"] for t in meta.geo.band_tags] == ["SR_B4", "SR_B3", "SR_B2"]
    assert meta.nodata == 0 and meta.geo.scales == (SCALE,) * 3
    assert [b["common_name"] for b in stac.eo_bands] == ["red", "green", "blue"]
    by_key = resolve_stac_input(scene, ["SR_B5", "SR_B2"], workdir=tmp_path)
    with open_reader(by_key.vrt) as reader, rasterio.open(LANDSAT) as src:
        np.testing.assert_array_equal(reader.read(), src.read([4, 1]))


def test_stac_input_errors_name_the_item(scene: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"item\.json: --assets 'swir16' is neither an asset"):
        resolve_stac_input(scene, ["red", "swir16"], workdir=tmp_path)
    odd = scene.parent / "SR_B3.tif"
    with rasterio.open(odd, "r+") as ds:  # move one asset by a pixel: another grid
        t = ds.transform
        ds.transform = rasterio.Affine(t.a, t.b, t.c + t.a, t.d, t.e, t.f)
    with pytest.raises(InvalidDataError, match=r"item\.json: assets .*SR_B3\.tif differ in "
                                               r"transform"):
        resolve_stac_input(scene, ["red", "green"], workdir=tmp_path)
    with pytest.raises(InputError, match=r"nothere\.json: no such STAC Item file"):
        resolve_stac_input(tmp_path / "nothere.json", ["red"], workdir=tmp_path)
    coll = tmp_path / "coll.json"
    coll.write_text(json.dumps(pystac.Collection(
        id="c", description="d", extent=pystac.Extent(
            pystac.SpatialExtent([[0, 0, 1, 1]]), pystac.TemporalExtent([[None, None]]))
    ).to_dict(include_self_link=False)))
    with pytest.raises(UnsupportedFormatError, match=r"coll\.json: a STAC Collection, not an"):
        resolve_stac_input(coll, ["red"], workdir=tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CorruptFileError, match=r"bad\.json: not a readable STAC Item"):
        resolve_stac_input(bad, ["red"], workdir=tmp_path)


def test_cli_needs_assets_for_an_item(scene: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.tif"
    assert main(["upscale", str(scene), str(out), "--scale", "2", *TINY]) == 2
    assert main(["upscale", str(LANDSAT), str(out), "--assets", "red", "--scale", "2",
                 *TINY]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("item.json: a STAC Item input needs --assets (asset keys or "
                           "eo:bands common names, e.g. --assets red,green,blue)")
    assert "landsat_64x80.tif is not a STAC Item" in err[1] and not out.exists()


def test_gdal_paths() -> None:
    assert gdal_path("s3://bucket/a/b.tif") == "/vsis3/bucket/a/b.tif"
    assert gdal_path("https://h/x.tif?a=1") == "/vsicurl?url=https%3A%2F%2Fh%2Fx.tif%3Fa%3D1"
    assert display_url(Path(gdal_path("https://h/x.tif?a=1"))) == "https://h/x.tif?a=1"
    assert display_url(Path(gdal_path("s3://b/k/x.tif"))) == "s3://b/k/x.tif"
    assert gdal_path("/vsizip/s2.zip/a.tif") == "/vsizip/s2.zip/a.tif"
    assert gdal_path("local/a.tif") == "local/a.tif"


def test_output_item_and_collection_validate_offline(scene: Path, tmp_path: Path,
                                                     offline_validator) -> None:
    out = tmp_path / "sr.tif"  # zssr upscale ITEM.json OUT --assets: the CLI wiring
    assert main(["upscale", str(scene), str(out), "--assets", "red,green,blue", "--scale", "2",
                 *TINY]) == 0
    path = item_path(out)
    assert path == tmp_path / "sr.tif.stac-item.json"
    source = pystac.Item.from_file(str(scene))
    item = pystac.Item.from_file(str(path))
    assert item.validate()  # core + the four extensions, all from the bundled schemas
    props, asset = item.properties, item.assets["data"]
    assert props["proj:code"] == "EPSG:32620" and props["proj:shape"] == [128, 160]
    assert props["processing:software"] == {"zssr-pipeline": __version__}
    assert props["platform"] == "landsat-8" and item.datetime == source.datetime
    assert PROCESSING_SCHEMA in item.stac_extensions
    assert [b["common_name"] for b in asset.extra_fields["eo:bands"]] == ["red", "green",
                                                                          "blue"]
    assert [b["scale"] for b in asset.extra_fields["raster:bands"]] == [SCALE] * 3
    assert asset.extra_fields["raster:bands"][0]["nodata"] == 0
    assert item.get_single_link("derived_from").href == str(scene.resolve())
    with rasterio.open(out) as ds:
        assert ds.tags()["ZSSR_SOURCE"] == str(scene.resolve())
        assert ds.descriptions == ("SR_B4", "SR_B3", "SR_B2")  # bbox: rasterio.warp on the output's own corners
        left, bottom, right, top = ds.bounds
        lons, lats = transform(ds.crs, "EPSG:4326", [left, right, right, left],
                               [top, top, bottom, bottom])
        expected = [min(lons), min(lats), max(lons), max(lats)]
        assert props["proj:transform"] == list(ds.transform)[:6]
    np.testing.assert_allclose(item.bbox, expected, atol=1e-9)
    coll_path = write_run_collection([path], tmp_path / "collection.json",
                                     collection_id="run", description="zssr run")
    coll = pystac.Collection.from_file(str(coll_path))
    assert coll.validate()
    assert [link.href for link in coll.links if link.rel == "item"] == [path.name]
    np.testing.assert_allclose(coll.extent.spatial.bboxes[0], expected, atol=1e-9)
    broken = item.to_dict()
    broken["properties"]["proj:shape"] = [128, 160, 3]  # the validator is really on
    with pytest.raises(pystac.STACValidationError):
        pystac.validation.validate_dict(broken)
