"""Engine tests on real image crops (tests/data/engine, see tests/data/README.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DATA, tiny_config
from PIL import Image

from zssr import super_resolve
from zssr.config import InferConfig, NetConfig, TrainConfig
from zssr.inference import forward_blocked, median, predict
from zssr.model import ZSSRNet, build_model, count_flops
from zssr.resize import imresize
from zssr.sampling import ArrayCropSource, FatherSampler, Window, dihedral, undo_dihedral
from zssr.train import LearningRatePolicy, train


def load(name: str) -> np.ndarray:
    a = np.asarray(Image.open(DATA / "engine" / name))
    return a if a.ndim == 2 else np.moveaxis(a, -1, 0)


def work(name: str) -> np.ndarray:
    a = load(name).astype(np.float32) / 255
    return a if a.ndim == 3 else a[None]


def test_model_shapes_init_and_flops():
    net = ZSSRNet(4, NetConfig())
    convs = [m for m in net.body if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8 and all(c.bias is None for c in convs)
    assert convs[0].in_channels == 4 and convs[-1].out_channels == 4
    w = convs[3].weight
    assert abs(float(w.detach().std()) - np.sqrt(0.1 / (64 * 9))) < 0.002
    assert count_flops(1, NetConfig(depth=2, width=2, kernel_size=3), 10) == 2 * (2 * 9 + 2 * 9) * 10
    a = build_model(3, NetConfig(), seed=1)
    b = build_model(3, NetConfig(), seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("k", range(8))
def test_each_dihedral_transform_is_undone_exactly(k):
    x = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(2, 5, 7)
    y = dihedral(x, k)
    assert torch.equal(undo_dihedral(y, k), x)
    if k:
        assert not torch.equal(y.reshape(-1), x.reshape(-1)) or y.shape != x.shape


def test_all_eight_transforms_distinct():
    x = torch.arange(16.0).reshape(1, 4, 4)
    outs = {tuple(dihedral(x, k).flatten().tolist()) for k in range(8)}
    assert len(outs) == 8


def test_median_matches_numpy():
    s = torch.randn(8, 2, 3, 3)
    assert np.allclose(median(s).numpy(), np.median(s.numpy(), axis=0), atol=1e-7)
    s7 = torch.randn(7, 3)
    assert np.allclose(median(s7).numpy(), np.median(s7.numpy(), axis=0))


@pytest.mark.parametrize("name", ["butterfly_64.png", "bridge_47x53.png"])
def test_zero_residual_ensemble_equals_bicubic(name):
    lr = torch.from_numpy(work(name))
    net = ZSSRNet(lr.shape[0], NetConfig(depth=3, width=4))
    for p in net.parameters():
        torch.nn.init.zeros_(p)
    sr = predict(net, lr, scale=2, infer=InferConfig(ensemble=True, back_projection_iters=0),
                 clip_range=(-10.0, 10.0))
    ref = imresize(lr, scale=2.0)
    assert sr.shape == ref.shape
    assert torch.allclose(sr, ref, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 3, 90, 90), (2, 3, 70, 41), (3, 3, 13, 200),
                                   (1, 3, 200, 9), (8, 3, 16, 16)])
def test_blocked_forward_is_the_whole_forward(shape):
    """Blocks with a receptive-radius margin give the network's own output, edges included
    (a tiny budget forces many blocks: square, whole-row, whole-column, batch splits)."""
    net = build_model(3, NetConfig(depth=5, width=8), seed=1).eval()
    x = torch.from_numpy(work("butterfly_64.png")).repeat(1, 4, 4)[None].repeat(shape[0], 1,
                                                                             1, 1)
    x = x[..., : shape[2], : shape[3]].contiguous()
    with torch.inference_mode():
        whole = net(x.contiguous(memory_format=torch.channels_last))
        blocked = forward_blocked(net, x, block_bytes=4 * 8 * 40 * 40)  # 40^2 px per block
    assert blocked.shape == whole.shape
    torch.testing.assert_close(blocked, whole, rtol=0, atol=1e-6)


def _noisy_flat(n_points):
    return [1.0 + (1e-3 if i % 2 else -1e-3) for i in range(n_points)]


def test_learning_rate_policy_drops_at_predicted_iterations():
    cfg = TrainConfig()
    pol = LearningRatePolicy(cfg)
    errors = iter(_noisy_flat(100))
    drops = []
    for it in range(3000):
        if it % cfg.run_test_every == 0:
            pol.record(it, next(errors))
        if pol.step(it):
            drops.append(it)
        if pol.finished:
            break
    # first check with (1 + it) % 60 == 0 and it - 0 > 256 is it = 299; then 256 more each time
    assert drops == [299, 599, 899]
    assert pol.finished and it == 899


def test_learning_rate_policy_keeps_rate_while_improving():
    cfg = TrainConfig()
    pol = LearningRatePolicy(cfg)
    for it in range(1200):
        if it % cfg.run_test_every == 0:
            pol.record(it, 1.0 - 5e-4 * it + (1e-6 if (it // 50) % 2 else 0))
        assert not pol.step(it)
    assert pol.lr == cfg.learning_rate


def test_fathers_have_crop_shape_and_respect_clip(rng):
    img = work("butterfly_64.png")
    cfg = TrainConfig(crop_size=32)
    src = ArrayCropSource(img)
    sampler = FatherSampler(src, cfg, rng=rng, clip_range=(torch.zeros(3), torch.ones(3)),
                            device=torch.device("cpu"))
    modes = set()
    for _ in range(60):
        f = sampler.sample()
        modes.add(f.mode)
        assert f.pixels.shape == (3, 32, 32) and f.valid.shape == (32, 32)
        assert float(f.pixels.min()) >= 0 and float(f.pixels.max()) <= 1
    assert modes == {"leave_as_is", "no_interp", "affine"}


def test_crop_source_is_boundless_by_mirroring():
    img = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    mask = np.ones((3, 4), bool)
    mask[2, 3] = False  # one nodata pixel
    pix, valid = ArrayCropSource(img, mask)(Window(-1, -1, 5, 6))
    assert pix.shape == (1, 5, 6)
    assert pix[0, 0, 0] == img[0, 0, 0] and pix[0, 1, 0] == img[0, 0, 0]  # mirrored
    assert pix[0, 4, 5] == img[0, 2, 3]  # row 3 -> 2 and col 4 -> 3, mirrored inside
    # outside pixels are mirrored image content (valid); only nodata and its mirrors are not
    invalid = {(int(a), int(b)) for a, b in zip(*np.where(~valid), strict=True)}
    assert invalid == {(3, 4), (3, 5), (4, 4), (4, 5)}


def test_fathers_avoid_invalid_regions(rng):
    img = work("butterfly_64.png")
    mask = np.zeros(img.shape[1:], bool)
    mask[:, :40] = True
    src = ArrayCropSource(img, mask)
    cfg = TrainConfig(crop_size=24, min_valid_fraction=0.9)
    sampler = FatherSampler(src, cfg, rng=rng, clip_range=(torch.zeros(3), torch.ones(3)),
                            device=torch.device("cpu"))
    fracs = [sampler.sample().valid.float().mean().item() for _ in range(30)]
    assert min(fracs) >= 0.9


def test_training_lowers_the_loss_on_a_real_image():
    img = work("butterfly_64.png")
    torch.manual_seed(0)
    net = build_model(3, NetConfig(depth=4, width=32), seed=0)
    cfg = TrainConfig(max_iters=150, crop_size=32, run_test_every=10,
                      learning_rate_slope_range=50, min_iters=1000)
    hist = train(net, ArrayCropSource(img), scale=2, cfg=cfg, seed=0)
    assert hist.iterations == 150
    first, last = np.mean(hist.losses[:15]), np.mean(hist.losses[-15:])
    assert last < 0.9 * first
    rec = hist.reconstruction_errors
    assert rec[-1] < 0.8 * rec[0], rec


def test_same_seed_same_output():
    img = load("bridge_47x53.png")
    cfg = tiny_config()
    a, ha = super_resolve(img, scale=2, config=cfg, seed=3)
    b, hb = super_resolve(img, scale=2, config=cfg, seed=3)
    c, _ = super_resolve(img, scale=2, config=cfg, seed=4)
    assert np.array_equal(a, b) and ha.losses == hb.losses
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("name, shape, dtype", [
    ("bridge_47x53.png", (94, 106), np.uint8),
    ("bird_rgba_48x60.png", (4, 96, 120), np.uint8),
    ("bridge16_47x53.png", (94, 106), np.uint16),
])
def test_round_trip_dtype_and_range(name, shape, dtype):
    img = load(name)
    sr, hist = super_resolve(img, scale=2, config=tiny_config())
    assert sr.shape == shape and sr.dtype == dtype
    # the output stays close to the input's statistics, in the same units
    assert abs(float(sr.mean()) - float(img.mean())) < 0.05 * np.iinfo(dtype).max
    assert hist.iterations == 20


def test_float_multiband_round_trip_keeps_units():
    rng = np.random.default_rng(1)
    base = work("butterfly_64.png")
    bands = np.concatenate([base, base[:1] * 0.5 + 0.1]) * 3000.0 - 200.0  # 4 bands, real units
    bands = bands.astype(np.float32) + rng.normal(0, 1, bands.shape).astype(np.float32)
    sr, _ = super_resolve(bands, scale=2, config=tiny_config())
    assert sr.shape == (4, 128, 128) and sr.dtype == np.float32
    for b in range(4):  # clipped to each band's own range
        assert sr[b].min() >= bands[b].min() - 1e-3 and sr[b].max() <= bands[b].max() + 1e-3
    down = imresize(torch.from_numpy(sr), scale=0.5).numpy()
    assert np.abs(down - bands).mean() < 0.05 * (bands.max() - bands.min())


def test_non_integer_and_gradual_scales():
    img = load("bridge_47x53.png")
    sr, _ = super_resolve(img, scale=1.5, config=tiny_config())
    assert sr.shape == (71, 80)
    from zssr.config import config_from_dict
    cfg = config_from_dict({"train": {"max_iters": 5, "crop_size": 16}, "net": {"depth": 3, "width": 4},
                            "infer": {"back_projection_iters": 1}, "scale_steps": [2, 4]})
    sr4, hist = super_resolve(img, scale=4, config=cfg)
    assert sr4.shape == (188, 212) and len(hist.steps) == 2 and hist.iterations == 10


def test_bad_scale_is_an_error():
    from geometry import ScaleError
    from zssr.config import ConfigError
    with pytest.raises(ScaleError, match=r"^scale must be >= 1 \(a super-resolution factor\), "
                       "got 0$"):
        super_resolve(load("bridge_47x53.png"), scale=0, config=tiny_config())
    with pytest.raises(ScaleError, match="col scale must be >= 1"):
        super_resolve(load("bridge_47x53.png"), scale=(2, -2), config=tiny_config())
    with pytest.raises(ConfigError, match=r"^scale must upscale at least one axis, got 1$"):
        super_resolve(load("bridge_47x53.png"), scale=1, config=tiny_config())


def test_warm_start_uses_the_short_schedule_and_returns_weights():
    img = load("bridge_47x53.png")
    cfg = tiny_config(max_iters=30, warm_max_iters=7)
    state: dict = {}
    _, cold = super_resolve(img, scale=2, config=cfg, state_out=state)
    assert cold.iterations == 30 and not cold.warm_started and state
    sr, warm = super_resolve(img, scale=2, config=cfg, init_state=state)
    assert warm.iterations == 7 and warm.warm_started
    assert warm.learning_rates[0] == cfg.train.warm_learning_rate


def test_bf16_inference_stays_close_to_fp32():
    lr = torch.from_numpy(work("butterfly_64.png"))[:, :24, :24]
    net = build_model(3, NetConfig(depth=3, width=8), seed=0)
    a = predict(net, lr, scale=2, infer=InferConfig(back_projection_iters=1))
    b = predict(net, lr, scale=2, infer=InferConfig(back_projection_iters=1, precision="bf16"))
    assert a.dtype == b.dtype == torch.float32
    assert float((a - b).abs().max()) < 0.02


def test_pyramid_fathers_follow_the_official_source_rule(rng):
    # three constant versions of one image, told apart by value: 0 (x1), 1 (x1.5), 0.5 (x2)
    base = ArrayCropSource(np.zeros((1, 40, 40), np.float32))
    pyramid = [(ArrayCropSource(np.ones((1, 60, 60), np.float32)), 1.5),
               (ArrayCropSource(np.full((1, 80, 80), 0.5, np.float32)), 2.0)]
    clip = (torch.zeros(1), torch.ones(1))

    def values(cfg: TrainConfig, n: int = 300) -> list[float]:
        s = FatherSampler(base, cfg, rng=rng, clip_range=clip, device=torch.device("cpu"),
                          pyramid=pyramid)
        return [round(float(s.sample().pixels.mean()), 3) for _ in range(n)]

    # leave_as_is: scale 1, always the input itself
    assert set(values(TrainConfig(crop_size=16, augment_leave_as_is_probability=1.0))) == {0.0}
    # otherwise the scale is uniform in [0.5, 2] and picks the smallest version at least that
    # large: the input for <= 1 (1/3 of draws), x1.5 for (1, 1.5], x2 for (1.5, 2]
    vals = values(TrainConfig(crop_size=16, augment_leave_as_is_probability=0.0,
                              augment_no_interpolate_probability=0.5))
    for v in (0.0, 1.0, 0.5):
        assert 0.25 < vals.count(v) / len(vals) < 0.42, (v, vals.count(v))
    with pytest.raises(ValueError, match="pyramid scales must increase"):
        FatherSampler(base, TrainConfig(), rng=rng, clip_range=clip, device=torch.device("cpu"),
                      pyramid=pyramid[::-1])


def test_sons_are_clipped_like_the_official_father_to_son():
    from zssr.train import Degradation, _make_son
    father = torch.zeros(1, 32, 32)
    father[:, 8:24, 8:24] = 1.0  # a hard edge: bicubic overshoots both ways
    deg = Degradation((2.0, 2.0))
    raw = deg.down(father)
    assert float(raw.max()) > 1.0 and float(raw.min()) < 0.0
    son = _make_son(father, deg, 0.0, torch.Generator().manual_seed(0), torch.zeros(1, 1, 1),
                    torch.ones(1, 1, 1))
    assert float(son.min()) == 0.0 and float(son.max()) == 1.0
    inside = (raw >= 0) & (raw <= 1)
    assert torch.equal(son[inside], raw[inside])  # only the overshoot changes


def test_official_gradual_sr_reuses_earlier_outputs(monkeypatch):
    import zssr.api as api
    from geometry import as_scale
    from zssr.config import ConfigError, config_from_dict
    seen = []

    def spy(model, source, **kw):
        seen.append((as_scale(kw["scale"]).floats, source.shape,
                     [(s.shape, b) for s, b in kw.get("father_sources", ())]))
        return real_train(model, source, **kw)

    real_train = api.train
    monkeypatch.setattr(api, "train", spy)
    img = load("bridge_47x53.png")
    cfg = config_from_dict({"train": {"max_iters": 4, "crop_size": 16},
                            "net": {"depth": 3, "width": 4},
                            "gradual_steps": [[1.0, 1.5], [1.5, 1.5], [2.0, 2.0]],
                            "gradual_back_projection_iters": [1, 1, 2]})
    sr, hist = super_resolve(img, scale=2, config=cfg)
    assert sr.shape == (94, 106) and sr.dtype == np.uint8
    assert [s["scale"] for s in hist.steps] == [[1.0, 1.5], [1.5, 1.5], [2.0, 2.0]]
    assert hist.iterations == 12
    # every step trains on the input at its cumulative scale; the x1.5 output (the only
    # one larger on both axes) joins the fathers' sources for the last step
    assert seen == [((1.0, 1.5), (47, 53), []), ((1.5, 1.5), (47, 53), []),
                    ((2.0, 2.0), (47, 53), [((71, 80), 1.5)])]
    with pytest.raises(ConfigError, match=r"'gradual_steps': the last step \[2.0, 2.0\] must"):
        super_resolve(img, scale=3, config=cfg)
