"""Property tests of the tile geometry: exact covers, crops and chunk lookups."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geometry import TileGrid, as_scale, output_size
from pipeline.image.stitch import stitch

SCALES = [2, 3, 4, 1.5, 2.5, Fraction(4, 3), (2, 3), (1.5, 2)]


@st.composite
def grids(draw, max_side: int = 90) -> TileGrid:
    scale = draw(st.sampled_from(SCALES))
    sy, sx = as_scale(scale)
    shape = (draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    tile = (sy.denominator * draw(st.integers(1, 40)), sx.denominator * draw(st.integers(1, 40)))
    halo = (draw(st.integers(0, 12)), draw(st.integers(0, 12)))
    return TileGrid(shape=shape, tile=tile, halo=halo, scale=scale)


def nearest_np(x: np.ndarray, scale) -> np.ndarray:
    sy, sx = as_scale(scale)
    rows = np.arange(output_size(x.shape[-2], sy)) * sy.denominator // sy.numerator
    cols = np.arange(output_size(x.shape[-1], sx)) * sx.denominator // sx.numerator
    return x[..., rows[:, None], cols[None, :]]


@settings(max_examples=200, deadline=None)
@given(grids())
def test_cores_cover_lr_and_hr_exactly_once(grid: TileGrid):
    lr = np.zeros(grid.shape, np.int32)
    hr = np.zeros(grid.hr_shape, np.int32)
    for tile in grid:
        lr[tile.core.slices] += 1
        hr[tile.hr_core.slices] += 1
    assert (lr == 1).all() and (hr == 1).all()
    assert len(grid) == len(list(grid))


@settings(max_examples=200, deadline=None)
@given(grids())
def test_read_window_is_core_plus_halo_clipped(grid: TileGrid):
    sy, sx = grid.scale
    for tile in grid:
        c, r = tile.core, tile.read
        assert r.row == max(0, c.row - grid.halo[0]) and r.col == max(0, c.col - grid.halo[1])
        assert r.row_stop == min(grid.shape[0], c.row_stop + grid.halo[0])
        assert r.col_stop == min(grid.shape[1], c.col_stop + grid.halo[1])
        # HR origin is integral and the predictor's output has the MATLAB size
        assert tile.hr_read.row == r.row * sy and tile.hr_read.col == r.col * sx
        assert tile.hr_read.shape == (output_size(r.height, sy), output_size(r.width, sx))
        # the crop lies inside the predictor's output and has the core's HR size
        rs, cs = tile.crop
        assert 0 <= rs.start < rs.stop <= tile.hr_read.height
        assert 0 <= cs.start < cs.stop <= tile.hr_read.width
        assert (rs.stop - rs.start, cs.stop - cs.start) == tile.hr_core.shape


@settings(max_examples=100, deadline=None)
@given(grids(max_side=60), st.integers(1, 3))
def test_crop_of_scaled_is_scaled_crop(grid: TileGrid, channels: int):
    rng = np.random.default_rng(grid.shape[0] * 1000 + grid.shape[1])
    image = rng.random((channels, *grid.shape))
    whole = nearest_np(image, grid.scale)
    for tile in grid:
        scaled = nearest_np(image[(..., *tile.read.slices)], grid.scale)
        np.testing.assert_array_equal(scaled[(..., *tile.crop)],
                                      whole[(..., *tile.hr_core.slices)])
    out = stitch(lambda x: torch.from_numpy(nearest_np(x.numpy(), grid.scale)), image, grid)
    np.testing.assert_array_equal(out, whole.astype(np.float32))


@settings(max_examples=100, deadline=None)
@given(grids(), st.data())
def test_hr_chunks_and_chunk_lookup(grid: TileGrid, data):
    ny, nx = grid.layout
    assert sum(grid.hr_chunks[0]) == grid.hr_shape[0] and len(grid.hr_chunks[0]) == ny
    assert sum(grid.hr_chunks[1]) == grid.hr_shape[1] and len(grid.hr_chunks[1]) == nx
    chunk = (data.draw(st.integers(1, 50)), data.draw(st.integers(1, 50)))
    hy, hx = grid.hr_shape
    iy = data.draw(st.integers(0, -(-hy // chunk[0]) - 1))
    ix = data.draw(st.integers(0, -(-hx // chunk[1]) - 1))
    found = grid.tiles_for_chunk((iy, ix), chunk_shape=chunk)
    covered = np.zeros(grid.hr_shape, bool)
    for tile in found:
        covered[tile.hr_core.slices] = True
    want = np.zeros(grid.hr_shape, bool)
    want[iy * chunk[0]:(iy + 1) * chunk[0], ix * chunk[1]:(ix + 1) * chunk[1]] = True
    assert (covered | ~want).all()  # every pixel of the chunk is in a returned tile
    for tile in found:  # and every returned tile touches the chunk
        assert want[tile.hr_core.slices].any()
