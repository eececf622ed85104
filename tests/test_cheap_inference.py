"""Cheaper inference (issue 19): a chosen subset of the ensemble, and tiled == whole for it.

The members are recomputed here independently (``torch.rot90``/``torch.flip`` written
out, the network called directly, ``numpy.median`` over them) and compared with
``predict``; back-projection is off there so the median is what comes out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from configs import resolve_config
from geometry import TileGrid
from pipeline.image.halo import dependency_radius
from pipeline.image.stitch import stitch
from zssr.config import (
    ConfigError,
    InferConfig,
    NetConfig,
    ZSSRConfig,
    config_from_dict,
    config_to_dict,
    parse_override,
)
from zssr.inference import predict
from zssr.model import ZSSRNet
from zssr.resize import imresize


@pytest.fixture(scope="module")
def net() -> ZSSRNet:
    torch.manual_seed(0)
    return ZSSRNet(2, NetConfig(depth=4, width=8, init_variance=2.0)).eval()


@pytest.fixture(scope="module")
def lr() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 13, 11, generator=g)


def member(net: ZSSRNet, lr: torch.Tensor, k: int) -> np.ndarray:
    """Member ``k`` by hand: rotate by 90 degrees k times (counter-clockwise), flip the
    columns if k >= 4, upsample, run the net, clip, and undo in the reverse order."""
    x = torch.rot90(lr, k % 4, dims=(1, 2))
    if k >= 4:
        x = x.flip(2)
    up = imresize(x, scale=2.0, output_shape=(2 * x.shape[1], 2 * x.shape[2]))
    with torch.no_grad():
        y = torch.clamp(net(up[None])[0], 0, 1)
    if k >= 4:
        y = y.flip(2)
    return torch.rot90(y, -(k % 4), dims=(1, 2)).numpy()


@pytest.mark.parametrize("chosen", [(0,), (5,), (0, 5), (1, 2, 6), (0, 2, 5, 7)])
def test_chosen_members_median(net, lr, chosen):
    sr = predict(net, lr, scale=2, infer=InferConfig(ensemble_members=chosen,
                                                     back_projection_iters=0))
    expect = np.median(np.stack([member(net, lr, k) for k in chosen]), axis=0)
    np.testing.assert_allclose(sr.numpy(), expect, rtol=0, atol=2e-6)
    others = [k for k in range(8) if k not in chosen]  # another subset would be told apart
    wrong = np.median(np.stack([member(net, lr, k) for k in others[:len(chosen)]]), axis=0)
    assert np.abs(sr.numpy() - wrong).max() > 1e-3


def test_empty_choice_is_the_whole_ensemble_bit_for_bit(net, lr):
    full = predict(net, lr, scale=2, infer=InferConfig(back_projection_iters=2))
    every = predict(net, lr, scale=2, infer=InferConfig(back_projection_iters=2,
                                                        ensemble_members=tuple(range(8))))
    assert torch.equal(full, every)
    two = predict(net, lr, scale=2, infer=InferConfig(back_projection_iters=2,
                                                      ensemble_members=(0, 5)))
    assert not torch.equal(full, two)


def test_an_axis_swapping_member_is_refused_at_an_anisotropic_scale(net, lr):
    with pytest.raises(ConfigError, match=r"'infer.ensemble_members': member 5 is not "
                                          r"available at this scale; allowed: \[0, 2, 4, 6\]"):
        predict(net, lr, scale=(2, 3), infer=InferConfig(ensemble_members=(0, 5)))
    sr = predict(net, lr, scale=(2, 3), infer=InferConfig(ensemble_members=(2,),
                                                          back_projection_iters=0))
    assert sr.shape == (2, 26, 33)


@pytest.mark.parametrize(("infer", "message"), [
    ({"ensemble_members": [0, 8]}, r"'infer.ensemble_members': invalid value \[0, 8\]; "
                                   r"expected distinct members in \[0, 7\]"),
    ({"ensemble_members": [-1]}, r"invalid value \[-1\]; expected distinct members"),
    ({"ensemble_members": [3, 3]}, r"invalid value \[3, 3\]; expected distinct members"),
    ({"ensemble_members": [0, 5], "ensemble": False},
     r"'infer.ensemble_members': invalid value \[0, 5\]; expected empty when "
     r"infer.ensemble is false"),
    ({"ensemble_members": 2}, r"'infer.ensemble_members': expected a list, got 2"),
])
def test_bad_member_choices_are_config_errors(infer, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"infer": infer})


def test_member_choice_round_trips_through_config_and_overrides():
    cfg = config_from_dict(parse_override("infer.ensemble_members=[0, 5]"))
    assert cfg.infer.ensemble_members == (0, 5)
    assert config_to_dict(cfg)["infer"]["ensemble_members"] == [0, 5]
    assert ZSSRConfig().infer.ensemble_members == ()  # the paper's full ensemble by default


@pytest.mark.parametrize("preset", ["scene", "scene-fast"])
def test_scene_presets_are_fast_with_cheaper_inference(preset):
    cfg, _ = resolve_config(preset=preset)
    fast, _ = resolve_config(preset="fast")
    assert cfg.train == fast.train and cfg.net == fast.net  # the same training as fast
    assert cfg.infer.precision == "bf16"
    assert len(cfg.infer.ensemble_members) in (1, 2)


@pytest.mark.parametrize(("preset", "tile"), [("scene", (20, 24)), ("scene-fast", (31, 9))])
def test_tiled_equals_whole_with_the_scene_presets(net, preset, tile):
    """The pipeline's default halo (``halo="auto"``: the effective dependency radius)
    still makes tiles equal the whole image with fewer members and bf16."""
    cfg, _ = resolve_config(preset=preset)
    g = torch.Generator().manual_seed(2)
    image = torch.rand(2, 64, 56, generator=g)
    halo = dependency_radius(cfg, 2)
    grid = TileGrid(shape=(64, 56), tile=tile, halo=halo, scale=2)
    assert any(t.read.shape != grid.shape for t in grid)  # the halo is really exercised

    def predictor(x: torch.Tensor) -> torch.Tensor:
        return predict(net, x, scale=2, infer=cfg.infer)

    whole = predictor(image).numpy()
    np.testing.assert_allclose(stitch(predictor, image, grid), whole, rtol=0, atol=1e-5)
    short = TileGrid(shape=(64, 56), tile=tile, halo=halo // 4, scale=2)
    assert np.abs(stitch(predictor, image, short) - whole).max() > 1e-5


def test_report_shows_inference_seconds_per_output_megapixel():
    from pipeline.runs.report import _image_section, infer_s_per_mp

    entry = {"key": "k", "name": "scene", "state": "finalized", "output_mp": 2.0,
             "seconds": {"train": 5.0, "infer": 30.0, "write": 1.0},
             "tiles": {"total": 8, "skipped": 0, "inferred": 6}}  # 2 tiles from an earlier run
    assert infer_s_per_mp(entry) == 30.0 / (2.0 * 6 / 8)
    assert "<th>inference s per output MP</th><td>20.00</td>" in _image_section(entry, Path("."))
    for missing in ({"output_mp": None}, {"tiles": {"total": 8, "inferred": 0}},
                    {"seconds": {}}):
        assert infer_s_per_mp({**entry, **missing}) is None


def test_tile_bar_shows_seconds_per_output_megapixel():
    import time

    from pipeline.runs.progress import TqdmRunProgress

    progress = TqdmRunProgress(enabled=True)
    progress.start(names={"a": "scene", "b": "other"}, total=2, skipped=0, failed=0,
                   dashboard=None)
    progress.tile_megapixels("a", 0.25)
    for image in ("a", "b"):  # b: no tile size known, so no s/MP
        progress.stage(image, "", 4)
    time.sleep(0.15)  # past tqdm's mininterval: the rate is measured
    for image in ("a", "b"):
        progress.tiles(image, 2)
    bar = progress._bars["a"]
    rate = bar.format_dict["rate"]  # tiles per second
    assert rate and bar.postfix == f"s/MP={1 / (rate * 0.25):.1f}"
    assert not progress._bars["b"].postfix
    progress.close()
