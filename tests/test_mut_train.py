"""Tests that kill the mutants of ``zssr/train.py`` (run by ``bench/mutation.py``).

Expected values are computed here: the learning-rate decision from the closed-form
least-squares slope and its standard error (``s^2 / Sxx`` with ``s^2 = SSE / (n - 2)``),
the L1 loss and the reconstruction error with NumPy, the sons with ``imresize`` and a
freshly seeded generator.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zssr.config import TrainConfig
from zssr.resize import imresize
from zssr.sampling import ArrayCropSource
from zssr.train import Degradation, LearningRatePolicy, _EvalSet, _make_son, as_scale, masked_l1


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope and its standard error."""
    xm, ym = x.mean(), y.mean()
    sxx = ((x - xm) ** 2).sum()
    slope = ((x - xm) * (y - ym)).sum() / sxx
    resid = y - (ym + slope * (x - xm))
    return slope, math.sqrt((resid ** 2).sum() / (len(x) - 2) / sxx)


def test_as_scale():
    assert as_scale(2) == (2.0, 2.0) and as_scale((2, 3)) == (2.0, 3.0)
    assert as_scale([1.5, 2]) == (1.5, 2.0) and type(as_scale(2)[0]) is float


def test_policy_points_and_gates():
    cfg = TrainConfig(run_test_every=10, learning_rate_slope_range=45, min_iters=25,
                      learning_rate_policy_check_every=5)
    pol = LearningRatePolicy(cfg)
    assert pol.points == 4 and pol.lr == cfg.learning_rate and pol.change_iters == [0]
    assert LearningRatePolicy(TrainConfig(run_test_every=50,
                                          learning_rate_slope_range=60)).points == 2
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
