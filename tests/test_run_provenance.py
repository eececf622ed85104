"""zssr run records the same provenance as zssr upscale (issue 17 wiring, issue 15's one
driver): the COG dataset tags of a run's output equal those of zssr upscale's output of
the same input and settings, pixels included."""

from __future__ import annotations

import numpy as np
import rasterio
from conftest import DATA

from pipeline.cli.main import main

TINY = ["--set", "train.max_iters=4", "--set", "net.depth=3", "--set", "net.width=8",
        "--set", "infer.back_projection_iters=1", "--seed", "0", "-q"]


def test_run_output_carries_the_same_provenance_as_upscale(tmp_path):
    src = DATA / "io" / "geotiff" / "landsat_64x80.tif"
    up = tmp_path / "up.tif"
    assert main(["upscale", str(src), str(up), "--scale", "2", *TINY]) == 0
    assert main(["run", str(src), "--out", str(tmp_path / "run"), "--scale", "2",
                 "--scheduler", "synchronous", *TINY]) == 0
    out = next((tmp_path / "run" / "outputs").iterdir())
    with rasterio.open(up) as a, rasterio.open(out) as b:
        tags_a, tags_b = a.tags(), b.tags()
        np.testing.assert_array_equal(a.read(), b.read())
    assert tags_a["ZSSR_SOFTWARE"] == "zssr-pipeline" and tags_a["ZSSR_SCALE"] == "2"
    assert tags_b == tags_a
