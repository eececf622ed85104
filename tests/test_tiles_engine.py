"""Tiled ZSSR inference equals whole-image inference, with the real engine.

A random-weight ``ZSSRNet`` (seeded) runs the paper's inference settings
(8-way ensemble with median, 10 back-projection iterations after the members
and 10 after the median) on a crop of a real image (``tests/data/tiles``, see
``tests/data/README.md``).  The halo comes from ``pipeline.image.halo``.  The nets are
narrower than the paper's (width 16, depth 8: the receptive field is the
paper's) to keep the run short; the ``slow`` test uses the paper's width.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from geometry import TileGrid
from pipeline.image.halo import AUTO_TOLERANCE, dependency_radius
from pipeline.image.stitch import stitch
from zssr.config import InferConfig, NetConfig, ZSSRConfig
from zssr.inference import predict
from zssr.kernels import kernel_from_mapping, prepare_kernel
from zssr.model import ZSSRNet

DATA = Path(__file__).parent / "data"
PAPER = ZSSRConfig()  # ensemble on, 10 back-projection iterations, depth 8 x 3x3
TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bird() -> torch.Tensor:
    """``(3, 122, 61)`` float32 in [0, 1]."""
    rgb = np.asarray(Image.open(DATA / "tiles" / "bird_crop_122x61.png"), np.float32) / 255
    return torch.from_numpy(rgb.transpose(2, 0, 1).copy())


def make_net(width: int = 16) -> ZSSRNet:
    torch.manual_seed(0)
    return ZSSRNet(3, NetConfig(width=width)).eval()


def tiled_and_whole(net, image, *, scale, tile, halo, infer=PAPER.infer, kernel=None):
    def predictor(x: torch.Tensor) -> torch.Tensor:
        return predict(net, x, scale=scale, infer=infer, down_kernel=kernel)

    grid = TileGrid(shape=tuple(image.shape[-2:]), tile=tile, halo=halo, scale=scale)
    return grid, stitch(predictor, image, grid), predictor(image).numpy()


def cut_inside(grid: TileGrid) -> bool:
    """Some read window ends inside the image: the halo is really exercised."""
    return any(t.read.shape != grid.shape for t in grid)


@pytest.mark.parametrize("tile", [(24, 24), (17, 20), (121, 60), (256, 256)],
                         ids=["24", "17x20", "1px-edge", "larger-than-image"])
def test_tiled_equals_whole_x2(bird, tile):
    halo = dependency_radius(PAPER, 2)
    grid, tiled, whole = tiled_and_whole(make_net(), bird, scale=2, tile=tile, halo=halo)
    assert tiled.shape == whole.shape == (3, 244, 122)
    assert np.abs(tiled - whole).max() <= TOL
    assert cut_inside(grid) == (tile != (256, 256))
    if tile == (121, 60):
        assert grid.tile(-1).core.shape == (1, 1)


@pytest.mark.parametrize(("scale", "crop", "tile"), [
    (3, (80, 61), (20, 20)),
    (4, (64, 61), (16, 30)),
    (1.5, (120, 60), (24, 22)),  # rows * 1.5 and cols * 1.5 integral
    ((2, 3), (90, 40), (20, 20)),
], ids=["x3", "x4", "x1.5", "x2-x3"])
def test_tiled_equals_whole_other_scales(bird, scale, crop, tile):
    image = bird[:, :crop[0], :crop[1]]
    halo = dependency_radius(PAPER, scale)
    grid, tiled, whole = tiled_and_whole(make_net(), image, scale=scale, tile=tile, halo=halo)
    assert cut_inside(grid)
    assert np.abs(tiled - whole).max() <= TOL


def test_small_odd_image_with_one_pixel_edge_tiles(bird):
    image = bird[:, 30:91, 7:54]  # 61 x 47
    halo = dependency_radius(PAPER, 2)
    grid, tiled, whole = tiled_and_whole(make_net(), image, scale=2, tile=(60, 46), halo=halo)
    assert [t.core.shape for t in grid] == [(60, 46), (60, 1), (1, 46), (1, 1)]
    assert np.abs(tiled - whole).max() <= TOL


def test_real_kernel_x2(bird):
    mapping = scipy.io.loadmat(DATA / "kernels" / "BSD100_100_lr_rand_ker_c_X2_0.mat")
    kernel = prepare_kernel(kernel_from_mapping(mapping, source="BSD100 kernel"), 2.0)
    halo = dependency_radius(PAPER, 2, down_kernel=kernel)
    assert halo < dependency_radius(PAPER, 2, down_kernel=kernel, tolerance=0)
    grid, tiled, whole = tiled_and_whole(make_net(), bird, scale=2, tile=(24, 32), halo=halo,
                                         kernel=kernel)
    assert cut_inside(grid)
    assert np.abs(tiled - whole).max() <= TOL


def test_support_halo_is_exact_and_small_halo_shows_seams(bird):
    net = make_net()
    support = dependency_radius(PAPER, 2, tolerance=0)
    grid, tiled, whole = tiled_and_whole(net, bird, scale=2, tile=(24, 61), halo=support)
    assert cut_inside(grid)
    assert np.abs(tiled - whole).max() <= 1e-6  # bitwise on CPU; 1e-6 allows other kernels
    _, seams, _ = tiled_and_whole(net, bird, scale=2, tile=(24, 61), halo=2)
    assert np.abs(seams - whole).max() > 1e-3  # the comparison can fail


def test_fractional_scale_odd_size_without_ensemble_is_exact(bird):
    image = bird[:, :61, :47]
    infer = InferConfig(ensemble=False)
    halo = dependency_radius(ZSSRConfig(infer=infer), 1.5)
    _, tiled, whole = tiled_and_whole(make_net(), image, scale=1.5, tile=(20, 14), halo=halo,
                                      infer=infer)
    assert np.abs(tiled - whole).max() <= TOL


def test_fractional_scale_odd_size_with_ensemble(bird):
    image = bird[:, :121, :47]
    grid, tiled, whole = tiled_and_whole(make_net(), image, scale=1.5, tile=(20, 14),
                                         halo=dependency_radius(PAPER, 1.5))
    # predict mirror-pads odd sizes to an integral HR size so every ensemble member
    # shares the whole image's HR grid (see zssr.inference); tiles then match exactly
    assert cut_inside(grid)
    assert np.abs(tiled - whole).max() <= TOL


@pytest.mark.parametrize("scale", [2, 3])
def test_measured_radius_matches_computed(scale, record_property):
    """Flip one LR pixel of a random image; see how far the output changes."""
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.random((3, 150, 24), dtype=np.float32))
    net = make_net()
    row = 4
    moved = image.clone()
    moved[:, row, 12] = 1 - moved[:, row, 12]

    def run(x):
        return predict(net, x, scale=scale, infer=PAPER.infer).numpy()

    change = np.abs(run(moved) - run(image)).max(axis=(0, 2))  # per HR row
    dist = (np.arange(change.size) + 0.5) / scale - 0.5 - row  # LR px from the flipped pixel
    measured = float(dist[change > 0].max())
    effective = dependency_radius(PAPER, scale)
    support = dependency_radius(PAPER, scale, tolerance=0)
    record_property("radius", {"measured": measured, "effective": effective, "support": support})
    assert (change[dist > support] == 0).all()  # nothing beyond the support radius
    assert change[dist > effective].max(initial=0) <= AUTO_TOLERANCE  # tolerance holds
    assert measured <= support and effective <= 2 * measured, (measured, effective, support)


@pytest.mark.slow
def test_tiled_equals_whole_paper_network(bird):
    halo = dependency_radius(PAPER, 2)
    grid, tiled, whole = tiled_and_whole(make_net(width=64), bird, scale=2, tile=(40, 32),
                                         halo=halo)
    assert cut_inside(grid)
    assert np.abs(tiled - whole).max() <= TOL
