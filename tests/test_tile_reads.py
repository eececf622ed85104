"""Each tile's window is read once: pixels once, per-band masks once (issue 15).

Before, ``infer_tile`` read a tile's window three to five times (masks, the float check,
the working pixels and their mask, the alpha band); with a preprocessing chain each read
recomputed the chain.  The output must not change: a reader that counts its calls wraps
the real one, and the values equal those of a tile computed from a fresh reader.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from conftest import DATA, tiny_config

from io_adapters.detect import open_reader
from pipeline.image.job import ImageJob, TrainResult, infer_tiles, plan_step
from pipeline.source import sample_stats
from zssr.model import build_model


class CountingReader:
    """The real reader, counting every windowed call per (method, window, frame)."""

    def __init__(self, reader) -> None:
        self.inner, self.meta, self.calls = reader, reader.meta, Counter()

    def _count(self, name, window, frame):
        key = None if window is None else (window.col_off, window.row_off, window.width,
                                           window.height)
        self.calls[(name, key, frame)] += 1

    def read(self, window=None, *, frame=0, **kw):
        self._count("read", window, frame)
        return self.inner.read(window, frame=frame, **kw)

    def read_mask(self, window=None, *, frame=0):
        self._count("read_mask", window, frame)
        return self.inner.read_mask(window, frame=frame)

    def read_masks(self, window=None, *, frame=0):
        self._count("read_masks", window, frame)
        return self.inner.read_masks(window, frame=frame)

    def close(self):
        self.inner.close()


class Collect:
    def __init__(self) -> None:
        self.parts = []

    def write(self, array, window, *, frame=0, mask=None):
        self.parts.append((window, array.copy(), None if mask is None else mask.copy()))


@pytest.mark.parametrize("name", ["io/plain/bird_rgba_48x64.png",  # alpha band
                                  "io/geotiff/landsat_64x80.tif"])  # nodata
def test_each_tile_window_is_read_once_and_values_are_unchanged(name):
    src = DATA / name
    job = ImageJob(input=src, output=src.with_suffix(".out"), scale=2.0, config=tiny_config(),
                   tile=16)
    with open_reader(src) as plain:
        plan = plan_step(plain.meta, job, 2.0)
        stats = sample_stats(plain, plan.bands, job.config.norm)
        state = build_model(len(plan.bands), job.config.net, seed=3).state_dict()
        result = TrainResult(state, None, stats)
        expected = Collect()
        infer_tiles(job, plain, plan, result, range(len(plan.grid)), expected)
    with open_reader(src) as inner:
        counting = CountingReader(inner)
        got = Collect()
        infer_tiles(job, counting, plan, result, range(len(plan.grid)), got)
    reads = Counter(name for (name, _, _) in counting.calls.elements())
    tiles = len(plan.grid)
    assert reads == {"read": tiles, "read_masks": tiles}, reads
    assert all(n == 1 for n in counting.calls.values())  # every window once per method
    assert len(got.parts) == len(expected.parts) == tiles
    for (w1, a1, m1), (w2, a2, m2) in zip(got.parts, expected.parts, strict=True):
        assert w1 == w2
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(m1, m2)
