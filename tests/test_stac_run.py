"""A STAC Item as an input of ``zssr run --assets`` and of a ``zssr batch`` job's
``assets`` (issue 17.4), on the local Item of tests/test_stac.py (single-band COG assets of
the Landsat fixture, eo/raster bands set).

* ``zssr run ITEM.json --assets nir08,red`` gives ``zssr upscale``'s output for the same
  Item and assets: the same pixels, profile, dataset tags (``ZSSR_SOURCE`` names the Item
  in both), descriptions and band tags; its Item (``--stac-item``) is ``derived_from``
  the Item, with the source's datetime and the stacked bands' ``eo:bands`` in order.
  The stacked VRT lies in the run folder (``stac/``), so a rerun skips the image.
* A batch job with ``assets: [nir08, red]`` places the same output; its Item too.
* An Item without assets fails that image in one line (the run exits 1).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
import yaml
from test_stac import scene  # noqa: F401 - the Item fixture

from pipeline.cli.main import main

TINY = ["--set", "train.max_iters=2", "--set", "net.depth=3", "--set", "net.width=4",
        "--set", "infer.back_projection_iters=0", "--set", "train.crop_size=16", "--seed",
        "0", "--tile", "32"]
ASSETS = "nir08,red"


def _same_raster(ref: Path, got: Path) -> None:
    with rasterio.open(ref) as a, rasterio.open(got) as b:
        np.testing.assert_array_equal(a.read(), b.read())
        np.testing.assert_array_equal(a.read_masks(), b.read_masks())
        assert a.profile == b.profile and a.descriptions == b.descriptions == ("SR_B5",
                                                                                 "SR_B4")
        assert a.tags() == b.tags()  # ZSSR_SOURCE: the Item, in both
        assert [a.tags(i) for i in (1, 2)] == [b.tags(i) for i in (1, 2)]


def _eo(item: Path) -> list[dict]:
    data = json.loads(item.read_text())
    return [dict(sorted(b.items())) for b in data["assets"]["data"]["eo:bands"]]


def _derived(item: Path) -> list[str]:
    return [link["href"] for link in json.loads(item.read_text())["links"]
            if link["rel"] == "derived_from"]


def test_run_and_batch_equal_upscale(scene: Path, tmp_path: Path, capsys) -> None:  # noqa: F811
    ref = tmp_path / "ref.tif"
    assert main(["upscale", str(scene), str(ref), "--assets", ASSETS, "--scale", "2", "-q",
                 *TINY]) == 0
    out = tmp_path / "run"
    run = ["run", str(scene), "--assets", ASSETS, "--out", str(out), "--scale", "2",
           "--scheduler", "synchronous", "--torch-threads", "1", "--stac-item", *TINY]
    assert main([*run, "-q"]) == 0
    got = out / "outputs" / "LC08_test_x2.tif"  # named by the Item's id
    _same_raster(ref, got)
    with rasterio.open(got) as ds:
        assert ds.tags()["ZSSR_SOURCE"] == str(scene.resolve())
    item = Path(f"{got}.stac-item.json")
    ref_item = Path(f"{ref}.stac-item.json")
    assert _derived(item) == _derived(ref_item) == [str(scene.resolve())]
    assert _eo(item) == _eo(ref_item)
    assert [b["common_name"] for b in _eo(item)] == ["nir08", "red"]
    assert json.loads(item.read_text())["properties"]["datetime"] == "2020-10-31T14:32:10Z"
    assert list((out / "stac").glob("*/LC08_test.vrt"))  # kept for the rerun
    capsys.readouterr()
    assert main(run) == 0  # resume: the VRT's content is the same input
    assert "1/1 images done (1 by an earlier run)" in capsys.readouterr().out

    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "inputs": [str(scene)], "output": "batch", "scale": 2, "assets": ASSETS.split(","),
        "scheduler": "synchronous", "stac_items": True,
        "set": {"train.max_iters": 2, "net.depth": 3, "net.width": 4, "seed": 0,
                "infer.back_projection_iters": 0, "train.crop_size": 16, "tile": 32}}))
    assert main(["batch", str(job)]) == 0
    placed = tmp_path / "batch" / "LC08_test_x2.tif"
    _same_raster(ref, placed)
    assert _derived(Path(f"{placed}.stac-item.json")) == [str(scene.resolve())]
    assert _eo(Path(f"{placed}.stac-item.json")) == _eo(ref_item)


def test_an_item_needs_assets_in_a_run(scene: Path, tmp_path: Path, capsys) -> None:  # noqa: F811
    assert main(["run", str(scene), "--out", str(tmp_path / "run"), "--scale", "2",
                 "--scheduler", "synchronous", *TINY]) == 1
    failed = [line.strip() for line in capsys.readouterr().out.splitlines()
              if line.strip().startswith("FAILED")]
    assert failed == [f"FAILED {scene}: UsageError: {scene}: a STAC Item input needs --assets "
                      "(asset keys or eo:bands common names, e.g. --assets red,green,blue)"]
