"""Tests that kill the mutants of ``geometry/tiles.py`` and ``geometry/scale.py`` (run by
``bench/mutation.py``).

Fast and deterministic (the Hypothesis properties in tests/test_tiles_props.py take
~30 s, too slow to run once per mutant).  Expected geometry is recomputed here from the
definitions in the module docstring with ``Fraction`` and ``math.ceil``: cores every
``tile`` px, reads grown by the halo (rounded up to the scale's denominator) and clipped,
HR cores ``[start * s, stop * s)`` with the last one ending at ``ceil(n * s)``.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

import numpy as np
import pytest
from rasterio.windows import Window

from geometry import (
    Region,
    Tile,
    TileGrid,
    as_scale,
    coerce_pair,
    output_size,
)

GRIDS = [  # (shape, tile, halo, scale)
    ((5, 7), (2, 4), 1, 1.5),
    ((9, 7), 4, 1, 3),
    ((61, 47), (16, 10), (5, 0), 2),
    ((1, 1), 8, 3, 2),
    ((13, 11), (3, 4), (2, 3), (3, 2)),
    ((10, 9), (4, 2), 1, (1.5, 2)),
    ((8, 10), (6, 3), 2, Fraction(4, 3)),
    ((17, 5), (4, 6), 4, 2.5),
]


def _axis(n: int, tile: int, halo: int, s: Fraction) -> list[tuple]:
    """Per tile along one axis: (core, read, hr_read, hr_core) as (start, stop)."""
    q = s.denominator
    halo = math.ceil(Fraction(halo, q)) * q
    out = []
    for start in range(0, n, tile):
        stop = min(n, start + tile)
        r0, r1 = max(0, start - halo), min(n, stop + halo)
        hr_stop = math.ceil(n * s) if stop == n else stop * s
        out.append(((start, stop), (r0, r1), (r0 * s, math.ceil(r1 * s)), (start * s, hr_stop)))
    return out


def _region(rows: tuple, cols: tuple) -> Region:
    return Region(int(rows[0]), int(cols[0]), int(rows[1] - rows[0]), int(cols[1] - cols[0]))


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def _scales(scale) -> tuple[Fraction, Fraction]:
    return tuple(Fraction(v).limit_denominator(1000) for v in _pair(scale))


@pytest.mark.parametrize(("shape", "tile", "halo", "scale"), GRIDS)
def test_every_tile_matches_the_definition(shape, tile, halo, scale):
    grid = TileGrid(shape=shape, tile=tile, halo=halo, scale=scale)
    (tr, tc), (hr, hc), (sy, sx) = _pair(tile), _pair(halo), _scales(scale)
    rows, cols = _axis(shape[0], tr, hr, sy), _axis(shape[1], tc, hc, sx)
    assert grid.layout == (len(rows), len(cols)) and len(grid) == len(rows) * len(cols)
    assert grid.hr_shape == (math.ceil(shape[0] * sy), math.ceil(shape[1] * sx))
    assert grid.halo == (math.ceil(Fraction(hr, sy.denominator)) * sy.denominator,
                         math.ceil(Fraction(hc, sx.denominator)) * sx.denominator)
    tiles = list(grid)
    assert len(tiles) == len(grid)
    lr_count = np.zeros(shape, int)
    hr_count = np.zeros(grid.hr_shape, int)
    for i, t in enumerate(tiles):
        ty, tx = divmod(i, len(cols))
        (cr, rr, hrr, hcr), (cc, rc, hrc, hcc) = rows[ty], cols[tx]
        assert (t.index, t.position) == (i, (ty, tx))
        assert t.core == _region(cr, cc) and t.read == _region(rr, rc)
        assert t.hr_read == _region(hrr, hrc) and t.hr_core == _region(hcr, hcc)
        assert t.crop == (slice(int(hcr[0] - hrr[0]), int(hcr[1] - hrr[0])),
                          slice(int(hcc[0] - hrc[0]), int(hcc[1] - hrc[0])))
        assert grid.tile(i) == t == grid.tile((ty, tx)) == grid.tile(i - len(grid))
        lr_count[cr[0]:cr[1], cc[0]:cc[1]] += 1
        hr_count[int(hcr[0]):int(hcr[1]), int(hcc[0]):int(hcc[1])] += 1
    assert (lr_count == 1).all() and (hr_count == 1).all()


@pytest.mark.parametrize(("shape", "tile", "halo", "scale"), GRIDS)
def test_chunks_and_chunk_lookup_by_brute_force(shape, tile, halo, scale):
    grid = TileGrid(shape=shape, tile=tile, halo=halo, scale=scale)
    (tr, tc), (sy, sx) = _pair(tile), _scales(scale)
    assert grid.hr_chunk_shape == (int(tr * sy), int(tc * sx))
    hy, hx = grid.hr_shape
    for n_hr, c, chunks in zip((hy, hx), grid.hr_chunk_shape, grid.hr_chunks, strict=True):
        assert sum(chunks) == n_hr and all(v == c for v in chunks[:-1]) and 0 < chunks[-1] <= c
    for chunk_shape in (None, (7, 5)) + (((1, 2),) if hy * hx < 400 else ()):
        cy, cx = chunk_shape or grid.hr_chunk_shape
        for iy in range(math.ceil(hy / cy)):
            for ix in range(math.ceil(hx / cx)):
                r0, c0 = iy * cy, ix * cx
                r1, c1 = min(hy, r0 + cy), min(hx, c0 + cx)
                want = tuple(t for t in grid if t.hr_core.row < r1 and r0 < t.hr_core.row_stop
                             and t.hr_core.col < c1 and c0 < t.hr_core.col_stop)
                assert grid.tiles_for_chunk((iy, ix), chunk_shape=chunk_shape) == want
        for bad in ((math.ceil(hy / cy), 0), (0, math.ceil(hx / cx)), (-1, 0), (0, -1)):
            with pytest.raises(IndexError, match=re.escape(
                    f"chunk {bad} outside the HR chunk grid of {(hy, hx)} in chunks of "
                    f"{(cy, cx)}")):
                grid.tiles_for_chunk(bad, chunk_shape=chunk_shape)


def test_hr_chunks_by_hand():
    grid = TileGrid(shape=(100, 60), tile=64, halo=10, scale=2)
    assert grid.hr_chunk_shape == (128, 128)
    assert grid.hr_chunks == ((128, 72), (120,))
    grid = TileGrid(shape=(5, 7), tile=(2, 4), halo=1, scale=1.5)
    assert grid.hr_chunk_shape == (3, 6) and grid.hr_chunks == ((3, 3, 2), (6, 5))


def test_tile_index_errors():
    grid = TileGrid(shape=(5, 7), tile=(2, 4), halo=1, scale=1.5)  # 3 x 2
    for bad in ((3, 0), (0, 2), (-1, 0), (0, -1)):
        with pytest.raises(IndexError, match=re.escape(f"tile position {bad} outside the 3x2 grid")):
            grid.tile(bad)
    for bad in (6, -7):
        with pytest.raises(IndexError, match=re.escape(f"tile index {bad} outside [0, 6)")):
            grid.tile(bad)
    assert grid.tile(-6).index == 0 and grid.tile(5).position == (2, 1)


def test_grid_repr():
    assert repr(TileGrid(shape=(5, 7), tile=(2, 4), halo=1, scale=1.5)) == (
        "TileGrid(shape=(5, 7), tile=(2, 4), halo=(2, 2), scale=3/2: 3x2 tiles -> HR (8, 11))")
    assert repr(TileGrid(shape=(4, 4), tile=2, scale=(2, 3))) == (
        "TileGrid(shape=(4, 4), tile=(2, 2), halo=(0, 0), scale=(2, 3): 2x2 tiles -> HR (8, 12))")


@pytest.mark.parametrize(("tile", "scale", "message"), [
    ((3, 4), 1.5, "tile size 3 (rows) is not a multiple of 2, the denominator of scale 3/2; "
                  "use 2 or 4"),
    ((4, 5), (2, 1.5), "tile size 5 (cols) is not a multiple of 2, the denominator of scale "
                       "3/2; use 4 or 6"),
    ((1, 3), Fraction(4, 3), "tile size 1 (rows) is not a multiple of 3, the denominator of "
                             "scale 4/3; use 3 or 6"),
])
def test_tile_not_a_multiple_of_the_denominator(tile, scale, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        TileGrid(shape=(10, 10), tile=tile, scale=scale)


def test_default_halo_is_zero():
    assert TileGrid(shape=(4, 4), tile=2, scale=2).halo == (0, 0)


@pytest.mark.parametrize(("value", "error", "message"), [
    ("2x", ValueError, "scale '2x' is not a number or a ratio such as 3/2"),
    ([2], ValueError, "scale must be a number or a pair (rows, cols), got [2]"),
    (True, TypeError, "scale must be a number, got True (bool)"),
    (float("inf"), ValueError, "scale must be finite, got inf"),
    (0.5, ValueError, "scale must be >= 1 (a super-resolution factor), got 0.5"),
    (Fraction(1, 2), ValueError, "scale must be >= 1 (a super-resolution factor), got "
                                 "Fraction(1, 2)"),
    (1.2345678, ValueError, "scale 1.2345678 is not a ratio of small integers (denominator "
                            "<= 1000); use e.g. 1.2345679012345678 (100/81) instead"),
    (Fraction(1003, 1001), ValueError, "scale 1003/1001 has a denominator above 1000; tile "
                                       "offsets must be multiples of it, choose a simpler ratio"),
])
def test_as_scale_messages(value, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        as_scale(value)


def test_as_scale_accepts_exact_and_near_ratios():
    assert as_scale(1).rows == Fraction(1) and as_scale(np.int64(3)).rows == Fraction(3)
    assert as_scale(1 + 1 / 1000).rows == Fraction(1001, 1000)  # denominator 1000 is allowed
    assert as_scale(Fraction(1001, 1000)).rows == Fraction(1001, 1000)
    assert as_scale(100 / 3).rows == Fraction(100, 3)  # float error ~1e-15 relative: accepted
    big = 123456789.5  # relative tolerance: absolute error 0 here, but scale matters
    assert as_scale(big).rows == Fraction(246913579, 2)
    with pytest.raises(ValueError, match="row scale"):
        as_scale((0.5, 2))
    with pytest.raises(ValueError, match="col scale"):
        as_scale((2, 0.5))


def test_as_scale_tolerance_is_relative():
    # 1e-9 relative: 2000000.0000015 is 2000000 + 1.5e-6, within 1e-9 * 2e6 = 2e-3
    assert as_scale(2000000.0000015).rows == Fraction(2000000)
    with pytest.raises(ValueError, match="not a ratio"):
        as_scale(2.0000001)  # 1e-7 off: above 1e-9 * max(1, 2)


def test_coerce_messages():
    with pytest.raises(ValueError, match=re.escape(
            "scale must be a number or a pair (rows, cols), got (2, 3, 4)")):
        as_scale((2, 3, 4))
    assert tuple(as_scale([2, 3])) == (Fraction(2), Fraction(3))
    with pytest.raises(TypeError, match=re.escape(
            "tile must be an integer or a pair of integers (rows, cols), got (1, 2, 3)")):
        coerce_pair((1, 2, 3), name="tile", minimum=1)
    for bad in ((True, 2), (2, 2.0), "ab"):
        with pytest.raises(TypeError, match="tile must be an integer or a pair"):
            coerce_pair(bad, name="tile", minimum=1)
    with pytest.raises(ValueError, match=re.escape("tile must be >= 1, got (3, 0)")):
        coerce_pair((3, 0), name="tile", minimum=1)
    assert coerce_pair((1, 1), name="tile", minimum=1) == (1, 1)
    assert coerce_pair(np.int64(4), name="tile", minimum=1) == (4, 4)
    assert type(coerce_pair(np.int64(4), name="tile", minimum=1)[1]) is int


def test_output_size_is_the_exact_ceiling():
    for n in range(0, 30):
        for s in (Fraction(3, 2), Fraction(4, 3), Fraction(5, 2), Fraction(2), Fraction(7, 5)):
            assert output_size(n, s) == math.ceil(n * s)


def test_region_values():
    reg = Region(2, 3, 4, 5)
    assert (reg.row_stop, reg.col_stop) == (6, 8)
    assert reg.intersection(Region(0, 0, 2, 10)) is None  # touching rows do not overlap
    assert reg.intersection(Region(0, 0, 10, 3)) is None  # touching cols do not overlap
    assert reg.intersection(Region(0, 7, 10, 10)) == Region(2, 7, 4, 1)
    assert Region(0, 0, 3, 3).intersection(Region(1, 2, 5, 5)) == Region(1, 2, 2, 1)
    win = reg.to_window()
    assert (win.col_off, win.row_off, win.width, win.height) == (3, 2, 5, 4)
    assert Region.from_window(Window(col_off=3.0, row_off=2.0, width=5.0, height=4.0)) == reg
    got = Region.from_window(Window(col_off=3.0, row_off=2.0, width=5.0, height=4.0))
    assert all(type(v) is int for v in (got.row, got.col, got.height, got.width))
    for bad in (Window(0, 0.5, 2, 2), Window(0, 0, 2.5, 2), Window(0, 0, 2, 1.5)):
        with pytest.raises(ValueError, match=re.escape(
                f"window {bad!r} is not on whole pixels; round it first "
                "(window.round_offsets().round_lengths())")):
            Region.from_window(bad)


def test_tile_windows():
    t = TileGrid(shape=(5, 7), tile=(2, 4), halo=1, scale=1.5).tile(5)
    assert isinstance(t, Tile)
    r, h = t.read_window, t.hr_window
    assert (r.row_off, r.col_off, r.height, r.width) == (2, 2, 3, 5)
    assert (h.row_off, h.col_off, h.height, h.width) == (6, 6, 2, 5)


def test_float_tolerance_is_relative_below_two():
    """1.5 + 1.8e-9 is off 3/2 by more than 1e-9 * 1.5: refused (a tolerance of 2e-9 would
    accept it)."""
    with pytest.raises(ValueError, match="is not a ratio of small integers"):
        as_scale(1.5 + 1.8e-9)
    assert as_scale(1.5 + 1e-9).rows == Fraction(3, 2)


@pytest.mark.parametrize(("scale", "message"), [
    ((0.5, 2), "row scale must be >= 1 (a super-resolution factor), got 0.5"),
    ((2, 0.5), "col scale must be >= 1 (a super-resolution factor), got 0.5"),
])
def test_axis_scale_names(scale, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        as_scale(scale)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"shape": (0, 5)}, "image shape must be >= 1, got (0, 5)"),
    ({"tile": 0}, "tile must be >= 1, got 0"),
    ({"halo": -1}, "halo must be >= 0, got -1"),
])
def test_grid_argument_names(kwargs, message):
    args = {"shape": (4, 4), "tile": 2, "halo": 0, "scale": 2, **kwargs}
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        TileGrid(**args)


def test_chunk_shape_name():
    grid = TileGrid(shape=(4, 4), tile=2, scale=2)
    with pytest.raises(ValueError, match=f"^{re.escape('chunk_shape must be >= 1, got (0, 2)')}$"):
        grid.tiles_for_chunk((0, 0), chunk_shape=(0, 2))
