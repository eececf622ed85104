"""``zssr run`` writes a Zarr output for any ``--tile`` (found by the object-storage helper).

The run's finalize copies the working store tile core by tile core; the Zarr writer
accepts whole chunks only (so no two writers share one).  Its chunks must therefore be
the grid's HR tiles, as ``zssr upscale`` makes them: with the default 512 px chunks a
``--tile 32`` run failed with "window ... is not aligned to the 512 x 512 chunks".
The run's output must equal ``zssr upscale``'s, values and chunking.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.cli.main import main

DATA = Path(__file__).parent / "data" / "io" / "geotiff"
TINY = ["--set", "train.max_iters=5", "--set", "net.width=8", "--set", "net.depth=3",
        "--seed", "0", "-q"]


def _array(store: Path) -> zarr.Array:
    group = zarr.open_group(store, mode="r")
    name = next(k for k, v in group.arrays() if v.ndim >= 3)
    return group[name]


@pytest.mark.parametrize("tile", [32, 40])
def test_run_zarr_output_with_a_small_tile_equals_upscale(tmp_path, tile) -> None:
    src = DATA / "landsat_64x80.tif"
    up = tmp_path / "up.zarr"
    assert main(["upscale", str(src), str(up), "--scale", "2", "--tile", str(tile),
                 *TINY]) == 0
    assert main(["run", str(src), "--out", str(tmp_path / "r"), "--scale", "2", "--tile",
                 str(tile), "--format", "zarr", "--scheduler", "synchronous", *TINY]) == 0
    out = next((tmp_path / "r" / "outputs").glob("*.zarr"))
    a, b = _array(out), _array(up)
    assert a.chunks == b.chunks and a.chunks[-1] == 2 * tile
    np.testing.assert_array_equal(a[...], b[...])
