"""Tiles whose whole read window is nodata are not inferred, and the output is unchanged."""

from __future__ import annotations

import numpy as np
from conftest import DATA

import pipeline.image.job as job_mod
from io_adapters.detect import open_reader
from pipeline.image.job import ImageJob
from pipeline.image.upscale import upscale_file
from zssr.config import config_from_dict

CFG = config_from_dict({"train": {"max_iters": 5, "crop_size": 16},
                        "net": {"depth": 3, "width": 8},
                        "infer": {"back_projection_iters": 1}})
LANDSAT = DATA / "io" / "geotiff" / "landsat_64x80.tif"  # 53 % nodata: a 32-column collar


def _run(tmp_path, name, monkeypatch, skip: bool) -> tuple[np.ndarray, np.ndarray, int]:
    calls = []
    real = job_mod.predict
    monkeypatch.setattr(job_mod, "SKIP_INVALID_TILES", skip)
    monkeypatch.setattr(job_mod, "predict", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = tmp_path / name
    upscale_file(ImageJob(input=LANDSAT, output=out, scale=2.0, config=CFG, tile=8, halo=4))
    with open_reader(out) as r:
        return r.read(), r.read_masks(), len(calls)


def test_nodata_tiles_are_skipped_with_identical_output(tmp_path, monkeypatch):
    a, ma, n_all = _run(tmp_path, "all.tif", monkeypatch, skip=False)
    b, mb, n_skip = _run(tmp_path, "skip.tif", monkeypatch, skip=True)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ma, mb)
    assert n_all == 8 * 10  # every 8 x 8 tile of the 64 x 80 scene
    with open_reader(LANDSAT) as r:
        valid = r.read_masks().any(axis=0)
    # a tile is skipped when its read window (core + 4 px halo) holds no valid pixel
    empty = sum(not valid[max(0, 8 * i - 4): 8 * i + 12, max(0, 8 * j - 4): 8 * j + 12].any()
                for i in range(8) for j in range(10))
    assert empty >= 3 * 8  # at least tile columns 0-2 lie in the 32-column collar
    assert n_skip == n_all - empty
    assert not mb[:, :, : 2 * 24].any() and mb.any()
