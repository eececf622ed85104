"""``zssr run --stac-item`` (issue 17, item 4): an Item beside each output, a Collection.

Real runs on the synchronous scheduler, a tiny net.  Three runs into one folder:

1. the Landsat GeoTIFF without ``--stac-item``: no Item, no Collection;
2. the GeoTIFF and a PNG with ``--stac-item``: the GeoTIFF is skipped (finished by run 1)
   and gets its Item from the driver, the PNG's Item comes from its finalize task; both
   Items and ``outputs/collection.json`` pass pystac's offline validation (the bundled
   extension schemas of tests/test_stac.py); ``derived_from`` names each input, the
   GeoTIFF's ``proj:`` fields are its output's, the Collection links each Item once;
3. the same command again: everything skipped, the Items untouched, the Collection still
   links each Item once (resume never duplicates).
"""

from __future__ import annotations

import json
from pathlib import Path

import pystac
import rasterio
from conftest import DATA
from test_stac import PROCESSING_SCHEMA, offline_validator  # noqa: F401 - a fixture

from pipeline.cli.main import main
from zssr import __version__

LANDSAT = DATA / "io" / "geotiff" / "landsat_64x80.tif"
PNG = DATA / "io" / "plain" / "butterfly_48x64.png"
TINY = ["--set", "train.max_iters=2", "--set", "net.depth=3", "--set", "net.width=4",
        "--set", "infer.back_projection_iters=0", "--set", "train.crop_size=16",
        "--tile", "32", "--torch-threads", "1", "--seed", "0", "-q"]


def _run(out: Path, *inputs: Path, stac: bool) -> int:
    return main(["run", *map(str, inputs), "--out", str(out), "--scale", "2", "--scheduler",
                 "synchronous", *(["--stac-item"] if stac else []), *TINY])


def _item_links(collection: Path) -> list[str]:
    data = json.loads(collection.read_text())
    return [link["href"] for link in data["links"] if link["rel"] == "item"]


def test_run_writes_items_and_a_collection(tmp_path: Path, offline_validator) -> None:  # noqa: F811
    run = tmp_path / "run"
    outputs = run / "outputs"
    assert _run(run, LANDSAT, stac=False) == 0
    tif = outputs / "landsat_64x80_x2.tif"
    assert tif.is_file() and sorted(p.name for p in outputs.iterdir()) == [tif.name]

    assert _run(run, LANDSAT, PNG, stac=True) == 0
    png = outputs / "butterfly_48x64_x2.png"
    items = {out: out.with_name(out.name + ".stac-item.json") for out in (tif, png)}
    assert sorted(p.name for p in outputs.iterdir()) == sorted(
        [tif.name, png.name, "collection.json", *(p.name for p in items.values())])
    for out, source in ((tif, LANDSAT), (png, PNG)):
        item = pystac.Item.from_file(str(items[out]))
        assert item.validate()  # core + projection/raster/eo/processing, bundled schemas
        assert item.id == out.name and item.assets["data"].href == out.name
        assert item.get_single_link("derived_from").href == str(source.resolve())
        assert item.properties["processing:software"] == {"zssr-pipeline": __version__}
        assert PROCESSING_SCHEMA in item.stac_extensions
        assert item.collection_id == "zssr-run-run"  # the run's Collection, linked beside it
        link = next(ln for ln in json.loads(items[out].read_text())["links"]
                    if ln["rel"] == "collection")
        assert link["href"] == "collection.json"
    geo = pystac.Item.from_file(str(items[tif]))
    with rasterio.open(tif) as ds:
        assert geo.properties["proj:shape"] == [ds.height, ds.width] == [128, 160]
        assert geo.properties["proj:transform"] == list(ds.transform)[:6]
        assert geo.properties["proj:code"] == f"EPSG:{ds.crs.to_epsg()}"
    assert pystac.Item.from_file(str(items[png])).geometry is None  # no CRS
    collection = outputs / "collection.json"
    coll = pystac.Collection.from_file(str(collection))
    assert coll.validate()
    assert sorted(_item_links(collection)) == sorted(p.name for p in items.values())
    assert coll.extent.spatial.bboxes[0] == geo.bbox  # the only georeferenced Item
    assert coll.id == "zssr-run-run"
    start, end = coll.extent.temporal.intervals[0]
    for path in items.values():  # the Collection's time span covers every Item's
        meta = pystac.Item.from_file(str(path)).common_metadata
        assert start <= meta.start_datetime <= meta.end_datetime <= end

    before = {p: p.read_bytes() for p in items.values()}
    assert _run(run, LANDSAT, PNG, stac=True) == 0  # all skipped: resume
    assert {p: p.read_bytes() for p in items.values()} == before
    assert sorted(_item_links(collection)) == sorted(p.name for p in items.values())
    assert pystac.Collection.from_file(str(collection)).validate()
    report = json.loads((run / "report.json").read_text())["summary"]["counts"]
    assert report["images_skipped"] == 2
