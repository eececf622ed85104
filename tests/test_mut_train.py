"""Tests that kill the mutants of ``zssr/train.py`` (run by ``bench/mutation.py``).

Expected values are computed here: the learning-rate decision from the closed-form
least-squares slope and its standard error (``s^2 / Sxx`` with ``s^2 = SSE / (n - 2)``),
the L1 loss and the reconstruction error with NumPy, the sons with ``imresize`` and a
freshly seeded generator.
"""

from __future__ import annotations

import importlib
import math
import pickle
import re

import numpy as np
import pytest
import torch

from geometry import Scale
from zssr.config import NetConfig, TrainConfig
from zssr.kernels import gaussian_kernel, prepare_kernel
from zssr.model import build_model
from zssr.resize import imresize
from zssr.sampling import ArrayCropSource, FatherSampler
from zssr.train import (
    Degradation,
    LearningRatePolicy,
    TrainEvent,
    TrainingDivergedError,
    TrainingHistory,
    _check_diverged,
    _EvalSet,
    _make_son,
    masked_l1,
    train,
)

train_module = importlib.import_module("zssr.train")  # zssr.train is also the function


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope and its standard error."""
    xm, ym = x.mean(), y.mean()
    sxx = ((x - xm) ** 2).sum()
    slope = ((x - xm) * (y - ym)).sum() / sxx
    resid = y - (ym + slope * (x - xm))
    return slope, math.sqrt((resid ** 2).sum() / (len(x) - 2) / sxx)


def test_degradation_scale_is_exact_and_sizes_sons_by_geometry():
    deg = Degradation((2, 3))
    assert deg.scale == Scale(2, 3) and deg.scale.floats == (2.0, 3.0)
    assert Degradation([1.5, 2]).scale.floats == (1.5, 2.0)
    # sons are ceil(n / s): 9 / 1.5 = 6, 7 / 1.5 = 4.67 -> 5; 11 / 1.1 = 10 exactly
    assert Degradation(1.5).down(torch.rand(1, 9, 7)).shape == (1, 6, 5)
    assert Degradation(1.1).down(torch.rand(1, 11, 22)).shape == (1, 10, 20)


def test_policy_points_and_gates():
    cfg = TrainConfig(run_test_every=10, learning_rate_slope_range=45, min_iters=25,
                      learning_rate_policy_check_every=5)
    pol = LearningRatePolicy(cfg)
    assert pol.points == 4 and pol.lr == cfg.learning_rate and pol.change_iters == [0]
    assert LearningRatePolicy(TrainConfig(run_test_every=50,
                                          learning_rate_slope_range=60)).points == 3
    for it in range(0, 40, 10):
        pol.record(it, 1.0 - it / 100)  # a straight descent: slope -0.01, std ~0: kept
    assert pol.test_iters == [0, 10, 20, 30] and pol.errors == [1.0, 0.9, 0.8, 0.7]
    assert not pol.step(24)  # (1 + 24) % 5 == 0 but 24 - 0 <= min_iters
    assert not pol.step(25)  # not a check iteration
    assert not pol.step(29)  # a check iteration, 29 > 25, still improving: kept
    assert pol.lr == cfg.learning_rate


@pytest.mark.parametrize(("errors", "drop"), [
    ([1.0, 0.99, 0.985, 0.97, 0.96], False),          # improving clearly
    ([1.0, 1.001, 0.999, 1.002, 0.998], True),       # noise only
    ([1.0, 0.9, 1.05, 0.8, 1.1], True),              # noisy, slope lost in it
    ([1.0, 1.01, 1.02, 1.03, 1.05], True),           # getting worse
])
def test_policy_decision_is_the_slope_test(errors, drop):
    cfg = TrainConfig(run_test_every=10, learning_rate_slope_range=40, min_iters=0,
                      learning_rate_policy_check_every=1, learning_rate_change_ratio=1.5)
    pol = LearningRatePolicy(cfg)
    its = [0, 10, 20, 30, 40]
    for it, e in zip(its, errors, strict=True):
        pol.record(it, e)
    slope, std = _ols(np.array(its[-4:], float), np.array(errors[-4:]))  # the last 4 points
    assert bool(-1.5 * slope < std) is drop
    assert pol.step(41) is drop
    assert pol.lr == pytest.approx(cfg.learning_rate / (10 if drop else 1))
    assert pol.change_iters == ([0, 41] if drop else [0])


def test_policy_needs_enough_points_and_counts_from_the_last_change():
    cfg = TrainConfig(run_test_every=10, learning_rate_slope_range=40, min_iters=20,
                      learning_rate_policy_check_every=1)
    pol = LearningRatePolicy(cfg)
    for it in (0, 10, 20):
        pol.record(it, 1.0 + it)
    assert not pol.step(30)  # 3 points < 4
    pol.record(30, 40.0)
    assert pol.step(30)  # getting worse: drop at 30
    pol.record(40, 50.0)
    assert not pol.step(50)  # 50 - 30 <= 20
    assert pol.step(51)
    assert pol.change_iters == [0, 30, 51]


def test_policy_finished():
    pol = LearningRatePolicy(TrainConfig(learning_rate=1e-3, min_learning_rate=1e-3))
    assert not pol.finished
    pol.lr = 0.99e-3
    assert pol.finished


def test_masked_l1():
    rng = np.random.default_rng(0)
    out, tgt = rng.random((3, 4, 5)), rng.random((3, 4, 5))
    valid = rng.random((4, 5)) > 0.4
    ref = (np.abs(out - tgt) * valid).sum() / (valid.sum() * 3)
    got = masked_l1(torch.from_numpy(out), torch.from_numpy(tgt), torch.from_numpy(valid))
    assert float(got) == pytest.approx(ref, rel=1e-12)
    none = masked_l1(torch.from_numpy(out), torch.from_numpy(tgt),
                     torch.zeros(4, 5, dtype=torch.bool))
    assert float(none) == 0.0  # no valid pixel: 0 / max(0, 1)


def test_degradation_is_imresize():
    hr = torch.rand(2, 12, 10)
    deg = Degradation((2.0, 2.5))
    torch.testing.assert_close(deg.down(hr), imresize(hr, scale=(0.5, 0.4)), rtol=0, atol=0)
    torch.testing.assert_close(deg.down(hr, output_shape=(5, 4)),
                               imresize(hr, scale=(0.5, 0.4), output_shape=(5, 4)))
    lr = torch.rand(2, 6, 4)
    torch.testing.assert_close(deg.up(lr, (12, 10)),
                               imresize(lr, scale=(2.0, 2.5), output_shape=(12, 10)))
    # a size that is not n * s: the weights still use the scale, not size / n
    torch.testing.assert_close(deg.up(lr, (13, 11)),
                               imresize(lr, scale=(2.0, 2.5), output_shape=(13, 11)),
                               rtol=0, atol=0)
    assert not torch.allclose(deg.up(lr, (13, 11)), imresize(lr, output_shape=(13, 11)))
    k = torch.ones(3, 3) / 9
    kd = Degradation((2.0, 2.0), k)
    torch.testing.assert_close(kd.down(hr), imresize(hr, scale=0.5, kernel=k))


def test_sons_noise_and_clip():
    father = torch.rand(1, 16, 16) * 1.2 - 0.1
    deg = Degradation((2.0, 2.0))
    lo, hi = torch.tensor(0.0).view(1, 1, 1), torch.tensor(1.0).view(1, 1, 1)
    gen = torch.Generator().manual_seed(5)
    clean = _make_son(father, deg, 0.0, gen, lo, hi)
    assert torch.equal(clean, torch.clamp(imresize(father, scale=0.5), 0, 1))
    assert torch.equal(torch.randn(3, generator=gen),
                       torch.randn(3, generator=torch.Generator().manual_seed(5)))  # unused
    noisy = _make_son(father, deg, 0.05, torch.Generator().manual_seed(7), lo, hi)
    noise = torch.randn((1, 8, 8), generator=torch.Generator().manual_seed(7))
    ref = torch.clamp(imresize(father, scale=0.5) + noise * 0.05, 0, 1)
    torch.testing.assert_close(noisy, ref, rtol=0, atol=1e-7)


class _Scaled(torch.nn.Module):
    """A fixed 'network': 1.1 * x - 0.05 (no parameters to train)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.1 * x - 0.05


def _reference_error(hr_windows, valid_windows, lo, hi) -> float:
    total = count = 0.0
    for hr, valid in zip(hr_windows, valid_windows, strict=True):
        t = torch.from_numpy(hr)
        son = torch.clamp(imresize(t, scale=0.5), lo, hi)
        up = imresize(son, scale=2.0, output_shape=hr.shape[-2:]).numpy()
        out = np.clip(1.1 * up - 0.05, lo, hi)
        total += (((out - hr) ** 2) * valid).sum()
        count += valid.sum() * hr.shape[0]
    return total / max(count, 1.0)


def test_eval_set_small_image_is_one_window():
    img = np.random.default_rng(1).random((2, 20, 18)).astype(np.float32)
    mask = np.ones((20, 18), bool)
    mask[:4] = False
    cfg = TrainConfig(eval_windows=2, eval_window_size=20)  # 360 <= 800: the whole image
    ev = _EvalSet(ArrayCropSource(img, mask), cfg, Degradation((2.0, 2.0)),
                  np.random.default_rng(0), torch.device("cpu"), 0.2, 0.8)
    assert len(ev.items) == 1 and tuple(ev.items[0][0].shape) == (2, 20, 18)
    got = ev.error(_Scaled(), 0.2, 0.8)  # a clip range that cuts: sons and outputs clipped
    assert got == pytest.approx(_reference_error([img], [mask], 0.2, 0.8), rel=1e-5)
    edge = TrainConfig(eval_windows=10, eval_window_size=6)  # 360 == 10 * 36: still whole
    assert len(_EvalSet(ArrayCropSource(img), edge, Degradation((2.0, 2.0)),
                        np.random.default_rng(0), torch.device("cpu"), 0.0, 1.0).items) == 1


def test_eval_set_windows_of_a_large_image():
    img = np.random.default_rng(2).random((1, 40, 30)).astype(np.float32)
    cfg = TrainConfig(eval_windows=3, eval_window_size=16)  # 1200 > 3 * 256
    rng = np.random.default_rng(9)
    ev = _EvalSet(ArrayCropSource(img), cfg, Degradation((2.0, 2.0)), rng,
                  torch.device("cpu"), 0.0, 1.0)
    draws = np.random.default_rng(9)
    wins = [(int(draws.integers(0, 25)), int(draws.integers(0, 15))) for _ in range(3)]
    hrs = [img[:, r:r + 16, c:c + 16] for r, c in wins]
    assert len(ev.items) == 3
    many = _EvalSet(ArrayCropSource(img), TrainConfig(eval_windows=40, eval_window_size=4),
                    Degradation((2.0, 2.0)), np.random.default_rng(4), torch.device("cpu"),
                    0.0, 1.0)
    draws = np.random.default_rng(4)
    for hr, _, _ in many.items:  # every window start is drawn in [0, n - size]
        r, c = int(draws.integers(0, 37)), int(draws.integers(0, 27))
        np.testing.assert_array_equal(hr.numpy(), img[:, r:r + 4, c:c + 4])
    for (hr, valid, _), ref in zip(ev.items, hrs, strict=True):
        np.testing.assert_array_equal(hr.numpy(), ref)
        assert bool(valid.all())
    got = ev.error(_Scaled(), 0.0, 1.0)
    assert got == pytest.approx(_reference_error(hrs, [np.ones((16, 16))] * 3, 0.0, 1.0),
                                rel=1e-5)


def test_eval_set_window_limited_by_a_narrow_image():
    img = np.zeros((1, 100, 10), np.float32)
    cfg = TrainConfig(eval_windows=1, eval_window_size=16)  # 1000 > 256
    ev = _EvalSet(ArrayCropSource(img), cfg, Degradation((2.0, 2.0)),
                  np.random.default_rng(0), torch.device("cpu"), 0.0, 1.0)
    assert tuple(ev.items[0][0].shape) == (1, 16, 10)


def test_policy_fits_at_least_three_points():
    # slope_range == 2 * run_test_every passes validate(); a line through 2 points has no
    # standard error (np.polyfit(cov=True) raised ValueError here before the fix)
    cfg = TrainConfig(run_test_every=10, learning_rate_slope_range=20, min_iters=0,
                      learning_rate_policy_check_every=1)
    cfg.validate()
    pol = LearningRatePolicy(cfg)
    assert pol.points == 3
    pol.record(0, 1.0)
    pol.record(10, 1.1)
    assert not pol.step(10)  # 2 points: no fit yet
    pol.record(20, 1.2)
    assert pol.step(20)  # getting worse: dropped
    assert pol.lr == pytest.approx(cfg.learning_rate / 10)


# --- the divergence check and its error -----------------------------------------------


def _message(it, quantity, value, lr, setting="train.learning_rate", where=""):
    head = f"{where}: " if where else ""
    return (f"{head}training diverged by iteration {it} ({quantity} {value}, learning rate "
            f"{lr}); lower {setting}, e.g. --set {setting}={lr / 10:g}")


def test_diverged_error_message_and_attributes():
    err = TrainingDivergedError(iteration=7, loss=12345.0, learning_rate=0.01)
    assert isinstance(err, FloatingPointError)
    assert str(err) == ("training diverged by iteration 7 (loss 12345, learning rate 0.01); "
                        "lower train.learning_rate, e.g. --set train.learning_rate=0.001")
    assert (err.iteration, err.loss, err.learning_rate) == (7, 12345.0, 0.01)
    assert (err.setting, err.where, err.quantity) == ("train.learning_rate", "", "loss")
    warm = TrainingDivergedError(iteration=0, loss=float("inf"), learning_rate=2.0,
                                 setting="train.warm_learning_rate", where="a.png",
                                 quantity="reconstruction error")
    assert str(warm) == ("a.png: training diverged by iteration 0 (reconstruction error inf, "
                         "learning rate 2); lower train.warm_learning_rate, e.g. "
                         "--set train.warm_learning_rate=0.2")


def test_diverged_error_located_and_pickled():
    err = TrainingDivergedError(iteration=3, loss=2e5, learning_rate=0.5,
                                quantity="sum of a weight tensor")
    here = err.located(where="x.tif")
    assert (here.iteration, here.loss, here.learning_rate, here.quantity, here.setting,
            here.where) == (3, 2e5, 0.5, "sum of a weight tensor", "train.learning_rate", "x.tif")
    assert str(here) == ("x.tif: training diverged by iteration 3 (sum of a weight tensor "
                         "200000, learning rate 0.5); lower train.learning_rate, e.g. "
                         "--set train.learning_rate=0.05")
    warm = err.located(where="y.dcm", setting="train.warm_learning_rate")
    assert warm.setting == "train.warm_learning_rate" and warm.where == "y.dcm"
    assert str(warm).endswith("lower train.warm_learning_rate, e.g. "
                              "--set train.warm_learning_rate=0.05")
    back = pickle.loads(pickle.dumps(warm))
    assert type(back) is TrainingDivergedError and str(back) == str(warm)
    assert back.__dict__ == warm.__dict__


def test_check_diverged_threshold_is_exclusive():
    losses = torch.tensor([0.1, 0.2, 5.0, 0.3])
    _check_diverged(losses, 0, 4, 0.5, 0.01, 5.0)  # a loss equal to the limit is fine
    with pytest.raises(TrainingDivergedError, match=re.escape(_message(2, "loss", "5.5", 0.01))):
        _check_diverged(torch.tensor([0.1, 0.2, 5.5, 0.3]), 0, 4, 0.5, 0.01, 5.0)


def test_check_diverged_names_the_first_bad_loss_of_the_window():
    nan = float("nan")
    losses = torch.tensor([nan, 0.1, 0.1, nan, 50.0, 0.0])
    _check_diverged(losses, 1, 3, None, 0.01, 10.0)  # NaN at 0 and 3: outside [1, 3)
    with pytest.raises(TrainingDivergedError,
                       match=re.escape(_message(3, "loss", "nan", 0.01))) as info:
        _check_diverged(losses, 2, 6, None, 0.01, 10.0)
    err = info.value
    assert err.iteration == 3 and math.isnan(err.loss) and err.learning_rate == 0.01
    assert err.quantity == "loss"
    with pytest.raises(TrainingDivergedError) as info:  # finite but above the limit
        _check_diverged(losses, 4, 6, None, 0.03, 10.0)
    assert (info.value.iteration, info.value.loss, info.value.learning_rate) == (4, 50.0, 0.03)
    with pytest.raises(TrainingDivergedError) as info:  # the window's first entry
        _check_diverged(torch.tensor([float("inf"), 1.0]), 0, 2, None, 0.01, 10.0)
    assert info.value.iteration == 0 and info.value.loss == math.inf


@pytest.mark.parametrize("rec", [float("nan"), float("inf")])
def test_check_diverged_reconstruction_error(rec):
    losses = torch.tensor([0.1, 0.2, 0.3])
    _check_diverged(losses, 0, 3, 1e30, 0.01, 10.0)  # a large finite error is no divergence
    with pytest.raises(TrainingDivergedError,
                       match=re.escape(_message(2, "reconstruction error", rec, 0.02))) as info:
        _check_diverged(losses, 1, 3, rec, 0.02, 10.0)
    err = info.value
    assert err.iteration == 2 and err.learning_rate == 0.02
    assert err.quantity == "reconstruction error"
    assert math.isnan(err.loss) if math.isnan(rec) else err.loss == rec


def test_check_diverged_weights():
    net = torch.nn.Module()
    net.a = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    net.b = torch.nn.Parameter(torch.tensor([float("inf"), 1.0]))
    net.c = torch.nn.Parameter(torch.tensor([-float("inf")]))
    losses = torch.tensor([0.1, 0.2])
    _check_diverged(losses, 0, 2, None, 0.01, 10.0)  # no model: weights not looked at
    with pytest.raises(TrainingDivergedError,
                       match=re.escape(_message(1, "sum of a weight tensor", "inf", 0.04))) as info:
        _check_diverged(losses, 0, 2, None, 0.04, 10.0, net)
    err = info.value  # the first non-finite tensor (b), not c (-inf)
    assert (err.iteration, err.loss, err.learning_rate) == (1, math.inf, 0.04)
    assert err.quantity == "sum of a weight tensor"
    with torch.no_grad():
        net.b[0] = 3.0
        net.c[0] = 4.0
    _check_diverged(losses, 0, 2, None, 0.04, 10.0, net)


def test_history_to_dict():
    h = TrainingHistory(iterations=3, losses=[0.5, 0.25, 0.125], test_iters=[0],
                        reconstruction_errors=[0.01], lr_change_iters=[2],
                        learning_rates=[1e-3], stop_reason="max_iters 3 reached", seconds=1.5,
                        warm_started=True, steps=[{"scale": 2}])
    assert h.to_dict() == {
        "iterations": 3, "losses": [0.5, 0.25, 0.125], "test_iters": [0],
        "reconstruction_errors": [0.01], "lr_change_iters": [2], "learning_rates": [1e-3],
        "stop_reason": "max_iters 3 reached", "seconds": 1.5, "warm_started": True,
        "steps": [{"scale": 2}]}


def test_masked_l1_single_valid_pixel_and_weight_precision():
    out = torch.tensor([[[0.0, 5.0], [1.0, 1.0]]])
    tgt = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])
    valid = torch.tensor([[False, True], [False, False]])
    assert float(masked_l1(out, tgt, valid)) == 5.0  # |5 - 0| / (1 pixel * 1 channel)
    # float32 weights on a float64 output: summed in the output's precision
    rng = np.random.default_rng(3)
    o, t = rng.random((2, 30, 30)), rng.random((2, 30, 30))
    w = rng.random((30, 30)).astype(np.float32)
    w64 = w.astype(np.float64)
    ref = (np.abs(o - t) * w64).sum() / (w64.sum() * 2)
    got = masked_l1(torch.from_numpy(o), torch.from_numpy(t), torch.from_numpy(w))
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(ref, rel=1e-13)


# --- the training loop -------------------------------------------------------------------


class _Shift(torch.nn.Module):
    """out = x + b: one weight.  While b is above every father - upsampled son, the L1
    gradient of b is +1, so each Adam step lowers b by exactly the learning rate."""

    def __init__(self, b: float = 0.0) -> None:
        super().__init__()
        self.b = torch.nn.Parameter(torch.tensor([b]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b


class _NanWhenEval(_Shift):
    """Trains fine, but its reconstruction (eval mode) output is NaN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b if self.training else x * float("nan")


def _blocks(rows: int = 24, cols: int = 24, seed: int = 0) -> np.ndarray:
    """(1, rows, cols) in [0, 1]: 4-pixel blocks near 0 or 1 (hard edges make bicubic
    overshoot, so the clip of the sons matters) plus a little noise."""
    rng = np.random.default_rng(seed)
    b = rng.integers(0, 2, (rows // 4 + 1, cols // 4 + 1)).repeat(4, 0).repeat(4, 1)
    img = b[:rows, :cols] * 0.9 + 0.05 + rng.normal(0, 0.03, (rows, cols))
    return np.clip(img, 0, 1)[None].astype(np.float32)


def _cfg(**kw) -> TrainConfig:
    base = {"max_iters": 9, "run_test_every": 3, "learning_rate_slope_range": 9,
            "min_iters": 1000, "crop_size": 16, "learning_rate": 0.01,
            "eval_windows": 2, "eval_window_size": 8}  # 24 x 24 > 2 * 8 * 8: drawn windows
    base.update(kw)
    return TrainConfig(**base)


def _clip(lo: float, hi: float, dtype=torch.float32):
    return (torch.tensor([lo], dtype=dtype), torch.tensor([hi], dtype=dtype))


@pytest.fixture
def fathers(monkeypatch):
    """Every father the loop draws, in order."""
    seen = []
    real = FatherSampler.sample

    def spy(self, *args, **kwargs):
        f = real(self, *args, **kwargs)
        seen.append((f.pixels.clone(), f.valid.clone()))
        return f

    monkeypatch.setattr(FatherSampler, "sample", spy)
    return seen


def _expected_loss(father, valid, b, *, kernel=None, noise_std=0.0, gen=None) -> float:
    son = imresize(father, scale=0.5, kernel=kernel if kernel is not None else "cubic")
    if noise_std:
        son = son + torch.randn(son.shape, generator=gen) * noise_std
    son = torch.clamp(son, 0.0, 1.0)
    up = imresize(son, scale=2.0, output_shape=tuple(father.shape[-2:]))  # the father's shape
    w = valid.to(torch.float64)
    diff = (up.double() + b - father.double()).abs()
    return float((diff * w).sum() / (w.sum() * father.shape[0]))


@pytest.mark.parametrize("kernel, noise_std, seed, shape", [
    (None, 0.0, 0, (24, 24)),
    ("gauss", 0.05, 3, (24, 24)),
    (None, 0.0, 1, (21, 19)),  # smaller than the crop, odd: 2 x the son's size is not the father's
])
def test_each_loss_is_the_l1_of_the_father_and_its_son(fathers, kernel, noise_std, seed, shape):
    k = prepare_kernel(gaussian_kernel(1.2, size=9), 2.0) if kernel else None
    cfg = _cfg(noise_std=noise_std, crop_size=16 if shape == (24, 24) else 32)
    net = _Shift(2.0)
    torch.manual_seed(123)  # the noise comes from the seed, not from torch's global generator
    hist = train(net, ArrayCropSource(_blocks(*shape)), scale=2, cfg=cfg, kernel=k, seed=seed)
    assert len(fathers) == hist.iterations == len(hist.losses) == 9
    sides = {(16, 16)} if shape == (24, 24) else {(21, 19), (19, 21)}  # whole image, maybe turned
    assert {tuple(f.shape[-2:]) for f, _ in fathers} <= sides
    gen = torch.Generator().manual_seed(seed)
    for i, ((father, valid), loss) in enumerate(zip(fathers, hist.losses, strict=True)):
        b = 2.0 - 0.01 * i  # one Adam step of exactly the learning rate per iteration
        ref = _expected_loss(father, valid, b, kernel=k, noise_std=noise_std, gen=gen)
        assert loss == pytest.approx(ref, rel=2e-6), i
    assert float(net.b) == pytest.approx(2.0 - 9 * 0.01, abs=1e-6)


def test_default_seed_is_zero_and_seeds_differ(fathers):
    img = ArrayCropSource(_blocks())
    runs = []
    for seed in (None, 0, 1):
        fathers.clear()
        kw = {} if seed is None else {"seed": seed}
        hist = train(_Shift(2.0), img, scale=2, cfg=_cfg(noise_std=0.02), **kw)
        runs.append((hist.losses, [f for f, _ in fathers]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))
    assert runs[0][0] != runs[2][0]


def test_reconstruction_error_is_measured_on_clipped_sons_and_outputs():
    img = _blocks(seed=1)
    lo, hi = 0.3, 0.7  # a clip range that cuts the data, the sons and the outputs
    cfg = _cfg(max_iters=4, run_test_every=2, learning_rate=1e-12, min_learning_rate=0.0,
               eval_windows=4,
               eval_window_size=16)  # 24 x 24 <= 4 * 16 * 16: the whole image
    hist = train(_Shift(0.0), ArrayCropSource(img), scale=2, cfg=cfg, clip_range=_clip(lo, hi))
    hr = torch.from_numpy(img)
    son = torch.clamp(imresize(hr, scale=0.5), lo, hi)
    out = torch.clamp(imresize(son, scale=2.0, output_shape=(24, 24)), lo, hi)
    ref = float(((out.double() - hr.double()) ** 2).mean())  # b moved by 1e-12 only
    assert hist.test_iters == [0, 2]
    assert hist.reconstruction_errors == pytest.approx([ref, ref], rel=1e-5)


def test_events_test_points_and_history():
    events = []
    cfg = _cfg(learning_rate=0.1)
    net = _Shift(10.0)
    hist = train(net, ArrayCropSource(_blocks()), scale=2, cfg=cfg, on_event=events.append)
    assert hist.test_iters == [0, 3, 6] and len(hist.reconstruction_errors) == 3
    assert hist.iterations == 9 and len(hist.losses) == 9
    assert hist.stop_reason == "max_iters 9 reached"
    assert hist.learning_rates == [0.1, 0.1, 0.1] and hist.lr_change_iters == []
    # every test iteration and the last one (8); not 7 (= max_iters - 2)
    assert [e.iteration for e in events] == [0, 3, 6, 8]
    assert all(isinstance(e, TrainEvent) and e.max_iters == 9 and e.learning_rate == 0.1
               for e in events)
    assert [e.loss for e in events] == [hist.losses[i] for i in (0, 3, 6, 8)]
    assert [e.reconstruction_error for e in events] == [*hist.reconstruction_errors, None]
    for i, loss in enumerate(hist.losses):  # b = 10 - 0.1 i, outputs above every father
        assert 10 - 0.1 * i - 0.2 < loss < 10 - 0.1 * i + 0.2
    assert float(net.b) == pytest.approx(10 - 0.9, abs=1e-5)


def test_rate_drops_reach_the_optimizer_and_stop_training(monkeypatch):
    rising = iter(1.0 + 0.1 * k for k in range(100))  # getting worse: drop at each check
    monkeypatch.setattr(train_module._EvalSet, "error", lambda self, model, lo, hi: next(rising))
    events = []
    cfg = _cfg(max_iters=40, run_test_every=2, learning_rate_slope_range=6, min_iters=4,
               learning_rate_policy_check_every=1, learning_rate=0.1, min_learning_rate=5e-4)
    net = _Shift(10.0)
    hist = train(net, ArrayCropSource(_blocks()), scale=2, cfg=cfg, on_event=events.append)
    # 3 points from iteration 4; a drop needs more than min_iters since the last one
    assert hist.lr_change_iters == [5, 10, 15]
    assert hist.stop_reason == "learning rate 1.0e-04 < 5.0e-04"
    assert hist.iterations == 16 and len(hist.losses) == 16
    assert hist.test_iters == list(range(0, 16, 2))
    assert hist.reconstruction_errors == pytest.approx([1.0 + 0.1 * k for k in range(8)])
    assert hist.learning_rates == pytest.approx([0.1] * 3 + [0.01] * 3 + [0.001] * 2)
    assert [e.learning_rate for e in events] == pytest.approx([0.1] * 3 + [0.01] * 2
                                                              + [0.001] * 3)
    # steps 0-5 at 0.1, 6-10 at 0.01, 11-15 at 0.001 (a drop applies from the next step)
    assert float(net.b) == pytest.approx(10 - 6 * 0.1 - 5 * 0.01 - 5 * 0.001, abs=1e-5)


class _Clock:
    """perf_counter that advances one second per reading."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now


def test_time_budget_is_checked_at_test_points(monkeypatch):
    monkeypatch.setattr(train_module, "time", _Clock())
    cfg = _cfg(max_iters=20, run_test_every=2, max_seconds=3.0)
    hist = train(_Shift(2.0), ArrayCropSource(_blocks()), scale=2, cfg=cfg)
    # readings: start 1001; tests at 0, 2, 4, 6 read 1002..1005 (1, 2, 3, then 4 s > 3)
    assert hist.iterations == 7 and len(hist.losses) == 7
    assert hist.stop_reason == "time budget 3s spent"
    assert hist.seconds == 5.0  # the last reading (1006) - the start
    unbudgeted = train(_Shift(2.0), ArrayCropSource(_blocks()), scale=2,
                       cfg=_cfg(max_iters=7, run_test_every=2))
    assert unbudgeted.iterations == 7 and unbudgeted.stop_reason == "max_iters 7 reached"


def test_max_iters_argument_overrides_the_config():
    net = _Shift(2.0)
    events = []
    hist = train(net, ArrayCropSource(_blocks()), scale=2, cfg=_cfg(max_iters=5), max_iters=3,
                 on_event=events.append)
    assert hist.iterations == 3 and len(hist.losses) == 3
    assert hist.stop_reason == "max_iters 3 reached"
    assert [(e.iteration, e.max_iters) for e in events] == [(0, 3), (2, 3)]
    none = train(net, ArrayCropSource(_blocks()), scale=2, cfg=_cfg(), max_iters=0)
    assert none.iterations == 0 and none.losses == [] and none.test_iters == []
    assert none.stop_reason == "max_iters 0 reached"
    assert float(net.b) == pytest.approx(2.0 - 3 * 0.01, abs=1e-6)  # untouched by 0 steps


def test_pyramid_fathers_are_used(fathers):
    base = ArrayCropSource(_blocks())
    big = ArrayCropSource(np.full((1, 48, 48), 0.75, np.float32))
    cfg = _cfg(max_iters=30, run_test_every=10, augment_leave_as_is_probability=0.0)
    train(_Shift(2.0), base, scale=2, cfg=cfg, father_sources=[(big, 2.0)])
    from_big = [bool((f == 0.75).all()) for f, _ in fathers]
    assert any(from_big) and not all(from_big)


def test_float64_clip_range_trains_the_float32_net():
    net = build_model(1, NetConfig(depth=2, width=4), seed=0)
    hist = train(net, ArrayCropSource(_blocks()), scale=2, cfg=_cfg(max_iters=2),
                 clip_range=_clip(0.0, 1.0, torch.float64))
    assert hist.iterations == 2 and all(math.isfinite(x) for x in hist.losses)


# The loss limit is 1e4 times the clip range's width; a fixed offset b gives a loss of
# about |b| at iteration 0 (a rate of 1e-12 keeps b where it is).
@pytest.mark.parametrize("lo, hi, b, raises", [
    (0.0, 1.0, 2e4, True), (0.0, 1.0, 5e3, False),
    (-500.0, 500.0, 2e4, False), (-500.0, 500.0, 2e7, True),  # limit 1e7
    (0.0, 0.01, 500.0, True), (0.0, 0.01, 50.0, False),  # limit 100
])
def test_exploded_loss_limit_scales_with_the_data_range(lo, hi, b, raises):
    img = ArrayCropSource(_blocks() * (hi - lo) + lo)
    cfg = _cfg(max_iters=1, run_test_every=1, learning_rate=1e-12)
    if not raises:
        hist = train(_Shift(b), img, scale=2, cfg=cfg, clip_range=_clip(lo, hi))
        assert hist.losses[0] == pytest.approx(b, rel=0.1)
        return
    with pytest.raises(TrainingDivergedError, match=re.escape(
            "lower train.learning_rate, e.g. --set train.learning_rate=1e-13")) as info:
        train(_Shift(b), img, scale=2, cfg=cfg, clip_range=_clip(lo, hi))
    assert info.value.iteration == 0 and info.value.quantity == "loss"
    assert info.value.loss == pytest.approx(b, rel=0.1)


def _diverge(**kw):
    """A step size of 1e6 throws b (0.5) to about -1e6 at the first step: loss 1 is ~1e6."""
    cfg = _cfg(learning_rate=1e6, **kw)
    with pytest.raises(TrainingDivergedError, match=re.escape(
            "lower train.learning_rate, e.g. --set train.learning_rate=100000")) as info:
        train(_Shift(0.5), ArrayCropSource(_blocks()), scale=2, cfg=cfg)
    err = info.value
    assert err.quantity == "loss" and err.learning_rate == 1e6
    assert 0.9e6 < err.loss < 1.1e6
    return err


def test_divergence_between_test_points_names_its_iteration():
    assert _diverge(max_iters=6, run_test_every=3).iteration == 1  # found at test 3


def test_divergence_at_a_test_point_is_found_there():
    assert _diverge(max_iters=3, run_test_every=1).iteration == 1


def test_divergence_after_the_last_test_point_is_found_at_the_end():
    assert _diverge(max_iters=2, run_test_every=5).iteration == 1


def test_nan_weights_from_the_start_stop_at_iteration_zero():
    with pytest.raises(TrainingDivergedError) as info:
        train(_Shift(float("nan")), ArrayCropSource(_blocks()), scale=2, cfg=_cfg())
    err = info.value
    assert err.iteration == 0 and err.quantity == "loss" and math.isnan(err.loss)
    assert err.learning_rate == 0.01


def test_nan_reconstruction_error_stops_training():
    with pytest.raises(TrainingDivergedError, match=re.escape(
            "training diverged by iteration 0 (reconstruction error nan")) as info:
        train(_NanWhenEval(2.0), ArrayCropSource(_blocks()), scale=2,
              cfg=_cfg(max_iters=3, run_test_every=2))
    assert info.value.iteration == 0 and info.value.quantity == "reconstruction error"
    assert info.value.learning_rate == 0.01


def test_nan_weight_after_the_last_step_is_found_at_the_end():
    net = _Shift(2.0)
    grads = []

    def poison_second(g: torch.Tensor) -> torch.Tensor:
        grads.append(g)
        return g * float("nan") if len(grads) == 2 else g

    net.b.register_hook(poison_second)
    with pytest.raises(TrainingDivergedError, match=re.escape(
            "training diverged by iteration 1 (sum of a weight tensor nan, learning rate "
            "0.01)")) as info:
        train(net, ArrayCropSource(_blocks()), scale=2, cfg=_cfg(max_iters=2, run_test_every=5))
    assert info.value.iteration == 1 and math.isnan(info.value.loss)
    assert info.value.quantity == "sum of a weight tensor" and len(grads) == 2


def test_policy_keeps_the_rate_on_a_flat_noiseless_error():
    # errors exactly 0 (a perfect reconstruction): the fitted slope and its standard error
    # are both exactly 0, and the official rule drops the rate only when
    # -ratio * slope < std (strict): 0 < 0 is false, so the rate is kept
    cfg = TrainConfig(run_test_every=10, learning_rate_slope_range=30, min_iters=0,
                      learning_rate_policy_check_every=1)
    pol = LearningRatePolicy(cfg)
    for it in (0, 10, 20):
        pol.record(it, 0.0)
    slope, std = _ols(np.array([0.0, 10.0, 20.0]), np.zeros(3))
    assert (slope, std) == (0.0, 0.0) and not -1.5 * slope < std
    assert not pol.step(21)
    assert pol.lr == cfg.learning_rate and pol.change_iters == [0]


class _UsedOnce(_Shift):
    """out = x + b, plus c in the first training forward only: c gets one gradient."""

    def __init__(self, b: float) -> None:
        super().__init__(b)
        self.c = torch.nn.Parameter(torch.tensor([0.0]))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
            if self.calls == 1:
                return x + self.b + self.c
        return x + self.b


def test_a_parameter_without_gradient_is_not_moved_by_adam_momentum():
    # c's one gradient is +1 (outputs above every father), so Adam's first step moves it by
    # exactly the learning rate; afterwards its gradient is dropped (None) and Adam skips
    # it. A zeroed gradient instead would let the stored momentum keep moving it.
    net = _UsedOnce(2.0)
    hist = train(net, ArrayCropSource(_blocks()), scale=2, cfg=_cfg(max_iters=5))
    assert hist.iterations == 5 and net.calls == 5
    assert net.c.item() == pytest.approx(-0.01, abs=1e-7)
    assert net.b.item() == pytest.approx(2.0 - 5 * 0.01, abs=1e-6)
