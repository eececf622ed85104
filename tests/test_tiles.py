"""Tile geometry, halo arithmetic and stitching with oracle predictors (fast, no model)."""

from __future__ import annotations

import doctest
import logging
from fractions import Fraction

import numpy as np
import pytest
import torch
from rasterio.windows import Window

import geometry.scale
import geometry.tiles
import pipeline.image.halo
import pipeline.image.stitch
from geometry import Region, TileGrid, as_scale, coerce_pair, output_size
from pipeline.image.halo import dependency_radius, resolve_halo, support_radius
from pipeline.image.stitch import ArrayMerger, Merger, WriterMerger, stitch
from zssr.config import ZSSRConfig, config_from_dict

# ----------------------------------------------------------------------------- oracles


def nearest(scale) -> callable:
    """Oracle predictor: HR pixel j copies LR pixel floor(j / s) (exact for Fractions)."""
    sy, sx = as_scale(scale)

    def predict(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        rows = torch.arange(output_size(h, sy)) * sy.denominator // sy.numerator
        cols = torch.arange(output_size(w, sx)) * sx.denominator // sx.numerator
        return x[..., rows[:, None], cols[None, :]]

    return predict


def box3_then(up):
    """Oracle with a 1-px dependency radius: 3x3 mean (edge-mirrored), then ``up``."""

    def predict(x: torch.Tensor) -> torch.Tensor:
        p = torch.nn.functional.pad(x[None], (1, 1, 1, 1), mode="replicate")[0]
        mean = sum(p[..., i:i + x.shape[-2], j:j + x.shape[-1]]
                   for i in range(3) for j in range(3)) / 9
        return up(mean)

    return predict


def coordinate_image(rows: int, cols: int) -> torch.Tensor:
    """Two float64 channels holding each pixel's own row and column (odc-geo style)."""
    r, c = torch.meshgrid(torch.arange(rows, dtype=torch.float64),
                          torch.arange(cols, dtype=torch.float64), indexing="ij")
    return torch.stack([r, c])


# ----------------------------------------------------------------------------- arguments


def test_as_scale_exact_ratios():
    assert as_scale(1.5).rows == Fraction(3, 2)
    assert as_scale(2).rows == 2 and as_scale(Fraction(4, 3)).rows == Fraction(4, 3)
    assert as_scale(4 / 3).rows == Fraction(4, 3)
    assert as_scale(np.float32(2.5)).rows == Fraction(5, 2)


@pytest.mark.parametrize(("value", "error", "match"), [
    ("abc", ValueError, "not a number or a ratio"),
    (True, TypeError, "scale must be a number"),
    (float("nan"), ValueError, "must be finite"),
    (0.5, ValueError, r"must be >= 1"),
    (1.2345678, ValueError, "not a ratio of small integers"),
    (Fraction(1003, 1001), ValueError, "denominator above 1000"),
])
def test_as_scale_rejects(value, error, match):
    with pytest.raises(error, match=match):
        as_scale(value)


def test_as_scale_and_coerce_pair():
    assert tuple(as_scale((2, 1.5))) == (Fraction(2), Fraction(3, 2))
    with pytest.raises(ValueError, match=r"a pair \(rows, cols\)"):
        as_scale((2, 3, 4))
    assert coerce_pair([3, 4], name="tile", minimum=1) == (3, 4)
    with pytest.raises(TypeError, match="tile must be an integer or a pair"):
        coerce_pair(2.5, name="tile", minimum=1)
    with pytest.raises(ValueError, match="halo must be >= 0"):
        coerce_pair(-1, name="halo", minimum=0)


# ----------------------------------------------------------------------------- Region


def test_region_slices_windows_intersection():
    reg = Region(2, 3, 4, 5)
    assert reg.slices == (slice(2, 6), slice(3, 8)) and reg.shape == (4, 5)
    win = reg.to_window()
    assert (win.row_off, win.col_off, win.height, win.width) == (2, 3, 4, 5)
    assert Region.from_window(win) == reg
    assert reg.intersection(Region(5, 0, 10, 4)) == Region(5, 3, 1, 1)
    assert reg.intersection(Region(6, 0, 1, 1)) is None
    with pytest.raises(ValueError, match="not on whole pixels"):
        Region.from_window(Window(0.5, 0, 2, 2))


# ----------------------------------------------------------------------------- TileGrid


def test_grid_layout_edge_tiles_and_hr_crop():
    grid = TileGrid(shape=(61, 47), tile=(60, 46), halo=3, scale=2)
    assert len(grid) == 4 and grid.layout == (2, 2) and grid.hr_shape == (122, 94)
    last = grid.tile(-1)
    assert last.position == (1, 1) and last.core == Region(60, 46, 1, 1)  # 1-px edge tile
    assert last.read == Region(57, 43, 4, 4)  # no halo beyond the image edge
    assert last.hr_read == Region(114, 86, 8, 8) and last.hr_core == Region(120, 92, 2, 2)
    assert last.crop == (slice(6, 8), slice(6, 8))
    assert grid.tile((0, 1)) == grid.tile(1)
    assert last.read_window == Window(43, 57, 4, 4) and last.hr_window == Window(92, 120, 2, 2)


def test_image_smaller_than_one_tile_is_one_tile():
    grid = TileGrid(shape=(5, 3), tile=512, halo=40, scale=3)
    (only,) = list(grid)
    assert only.core == only.read == Region(0, 0, 5, 3)
    assert only.hr_core == only.hr_read == Region(0, 0, 15, 9)
    assert only.crop == (slice(0, 15), slice(0, 9))


def test_fractional_scale_rounds_halo_and_ceils_last_tile():
    grid = TileGrid(shape=(7, 9), tile=(4, 2), halo=1, scale=1.5)
    assert grid.halo == (2, 2)  # rounded up to the denominator
    assert grid.hr_shape == (11, 14)  # ceil(7 * 1.5), ceil(9 * 1.5)
    first, last = grid.tile(0), grid.tile(-1)
    assert first.hr_core == Region(0, 0, 6, 3)
    assert last.core == Region(4, 8, 3, 1)
    assert last.hr_core == Region(6, 12, 5, 2)  # ends at ceil(rows * s), not rows * s
    assert last.hr_read.row == last.read.row * Fraction(3, 2)


def test_anisotropic_scale():
    grid = TileGrid(shape=(10, 10), tile=4, halo=0, scale=(2, 3))
    assert grid.hr_shape == (20, 30) and grid.hr_chunk_shape == (8, 12)
    assert grid.tile(-1).hr_core == Region(16, 24, 4, 6)
    assert "scale=(2, 3)" in repr(grid)


def test_tile_not_multiple_of_denominator_names_the_fix():
    with pytest.raises(ValueError, match=r"tile size 5 \(rows\).*scale 3/2; use 4 or 6"):
        TileGrid(shape=(10, 10), tile=(5, 4), scale=1.5)


@pytest.mark.parametrize("index", [4, -5, (2, 0), (0, -1)])
def test_tile_index_out_of_range(index):
    grid = TileGrid(shape=(4, 4), tile=2, scale=2)
    with pytest.raises(IndexError, match="outside"):
        grid.tile(index)


def test_hr_chunks_align_with_tile_cores():
    grid = TileGrid(shape=(61, 47), tile=(16, 20), halo=5, scale=3)
    assert grid.hr_chunks == ((48, 48, 48, 39), (60, 60, 21))
    for tile in grid:
        ty, tx = tile.position
        assert tile.hr_core.shape == (grid.hr_chunks[0][ty], grid.hr_chunks[1][tx])
        assert grid.tiles_for_chunk((ty, tx)) == (tile,)


def test_tiles_for_chunk_with_other_chunk_shapes():
    grid = TileGrid(shape=(61, 47), tile=(16, 20), scale=2)  # HR cores 32 x 40
    assert [t.position for t in grid.tiles_for_chunk((1, 0), chunk_shape=(16, 40))] == [(0, 0)]
    big = grid.tiles_for_chunk((0, 0), chunk_shape=(64, 64))
    assert [t.position for t in big] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    with pytest.raises(IndexError, match="outside the HR chunk grid"):
        grid.tiles_for_chunk((4, 0))


def test_module_doctests():
    for module in (geometry.scale, geometry.tiles, pipeline.image.stitch, pipeline.image.halo):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


# ----------------------------------------------------------------------------- stitching


@pytest.mark.parametrize("scale", [2, 3, 1.5, 2.5, (2, 3)])
@pytest.mark.parametrize(("shape", "tile"), [((61, 47), (20, 14)), ((61, 47), (60, 46)),
                                             ((5, 3), (64, 64)), ((1, 1), (2, 2))])
def test_coordinate_image_lands_in_place(scale, shape, tile):
    image = coordinate_image(*shape)
    grid = TileGrid(shape=shape, tile=tile, halo=2, scale=scale)
    out = stitch(nearest(scale), image, grid)
    sy, sx = as_scale(scale)
    rows = np.arange(grid.hr_shape[0]) * sy.denominator // sy.numerator
    cols = np.arange(grid.hr_shape[1]) * sx.denominator // sx.numerator
    assert out.shape == (2, *grid.hr_shape)
    np.testing.assert_array_equal(out[0], np.broadcast_to(rows[:, None], grid.hr_shape))
    np.testing.assert_array_equal(out[1], np.broadcast_to(cols[None, :], grid.hr_shape))


def test_local_oracle_needs_its_halo():
    rng = np.random.default_rng(0)
    image = rng.random((3, 61, 47)).astype(np.float32)
    predictor = box3_then(nearest(2))
    whole = predictor(torch.from_numpy(image)).numpy()
    exact = stitch(predictor, image, TileGrid(shape=(61, 47), tile=(16, 10), halo=1, scale=2))
    np.testing.assert_array_equal(exact, whole)
    seams = stitch(predictor, image, TileGrid(shape=(61, 47), tile=(16, 10), halo=0, scale=2))
    assert np.abs(seams - whole).max() > 1e-3


def test_doubling_oracle_on_awkward_shape():
    image = torch.rand(1, 511, 237)
    up = nearest(2)
    out = stitch(lambda x: 2 * up(x), image, TileGrid(shape=(511, 237), tile=128, scale=2))
    np.testing.assert_array_equal(out, (2 * up(image)).numpy())


def test_stitch_rejects_bad_inputs():
    grid = TileGrid(shape=(8, 8), tile=4, scale=2)
    with pytest.raises(ValueError, match=r"expects an image \(C, H, W\)"):
        stitch(nearest(2), np.zeros((8, 8)), grid)
    with pytest.raises(ValueError, match="does not match the grid"):
        stitch(nearest(2), np.zeros((1, 8, 9)), grid)
    with pytest.raises(ValueError, match=r"predictor returned shape \(1, 4, 4\) for tile 0"):
        stitch(lambda x: x, np.zeros((1, 8, 8), np.float32), grid)


def test_array_merger_refuses_after_finalize():
    grid = TileGrid(shape=(4, 4), tile=4, scale=2)
    merger = ArrayMerger((1, 8, 8))
    merger.aggregate(torch.ones(1, 8, 8), grid.tile(0))
    assert merger.finalize().sum() == 64
    with pytest.raises(RuntimeError, match="after finalize"):
        merger.aggregate(torch.ones(1, 8, 8), grid.tile(0))


def test_writer_merger_writes_each_core_once():
    class FakeWriter:
        def __init__(self):
            self.calls = []

        def write(self, array, window, *, frame=0):
            self.calls.append((array.shape, window, frame))

    writer = FakeWriter()
    grid = TileGrid(shape=(5, 3), tile=(4, 2), halo=1, scale=2)
    assert stitch(nearest(2), torch.zeros(2, 5, 3), grid, merger=WriterMerger(writer, frame=3)) \
        is writer
    assert [c[1] for c in writer.calls] == [t.hr_window for t in grid]
    assert writer.calls[-1] == ((2, 2, 2), Window(4, 8, 2, 2), 3)


def test_array_like_merger_in_a_few_lines():
    class DictMerger(Merger):  # what a Zarr-backed merger looks like
        def __init__(self, array):
            self.array = array

        def aggregate(self, values, tile):
            self.array[(..., *tile.hr_core.slices)] = self.cropped(values, tile)

        def finalize(self):
            return self.array

    image = coordinate_image(9, 7)
    grid = TileGrid(shape=(9, 7), tile=4, halo=1, scale=3)
    out = stitch(nearest(3), image, grid, merger=DictMerger(np.zeros((2, 27, 21))))
    np.testing.assert_array_equal(out, nearest(3)(image).numpy())


# ----------------------------------------------------------------------------- halo


def test_support_radius_formula():
    cfg = ZSSRConfig()  # depth 8, k 3, 10 back-projection iterations
    assert support_radius(cfg, 2) == 2 + 4 + 20 * 4
    assert support_radius(cfg, 4) == 2 + 2 + 20 * 4
    # numeric kernel of 13 HR taps at x2: w_down = 6/2 + 1/2
    assert support_radius(cfg, 2, kernel_shape=(13, 13)) == 2 + 4 + 20 * (3.5 + 2)
    no_bp = config_from_dict({"infer": {"back_projection_iters": 0, "ensemble": False}})
    assert support_radius(no_bp, 2) == 6 and dependency_radius(no_bp, 2) == 6
    assert support_radius(cfg, (2, 4)) == support_radius(cfg, 2)


def test_effective_radius_is_tighter_but_never_above_support():
    cfg = ZSSRConfig()
    for scale in (2, 3, 1.5):
        eff, exact = dependency_radius(cfg, scale), dependency_radius(cfg, scale, tolerance=0)
        assert 6 < eff < exact
        assert dependency_radius(cfg, scale, tolerance=1e-9) >= eff
    # a numeric kernel known only by its shape: the support radius
    assert dependency_radius(cfg, 2, kernel_shape=(13, 13)) == support_radius(
        cfg, 2, kernel_shape=(13, 13))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"tolerance": 1.0}, r"tolerance must be a number in \[0, 1\)"),
    ({"tolerance": -1e-6}, r"tolerance must be a number in \[0, 1\)"),
    ({"down_kernel": np.ones(5)}, "down_kernel must be 2-D"),
])
def test_dependency_radius_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dependency_radius(ZSSRConfig(), 2, **kwargs)


def test_resolve_halo(caplog):
    cfg = ZSSRConfig()
    assert resolve_halo("auto", config=cfg, scale=2) == dependency_radius(cfg, 2)
    with caplog.at_level(logging.WARNING, logger="pipeline.image.halo"):
        assert resolve_halo(3, config=cfg, scale=2) == 3
    assert "tiled output will differ" in caplog.text
    for bad in (-1, "big", 2.5, True):
        with pytest.raises(ValueError, match="halo must be 'auto' or an integer >= 0"):
            resolve_halo(bad, config=cfg, scale=2)
