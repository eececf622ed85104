"""Tests that kill the mutants of ``zssr/inference.py`` the engine tests let live.

Each expected value is computed here, independently of ``zssr.inference``: the whole
``predict`` is rebuilt from its definition (the paper's ``final_test``) with NumPy's
``rot90``/``flip``/``pad(mode="symmetric")``/``median`` and exact ``Fraction`` sizes;
only the network and ``imresize`` (tested against MATLAB in tests/test_resize.py) are
shared.  Run by ``bench/mutation.py``; fast (about a second).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from zssr.config import InferConfig, NetConfig
from zssr.inference import (
    _block_sides,
    _integral_pad,
    _mirror_pad,
    back_project,
    ensemble_members,
    forward_blocked,
    median,
    predict,
)
from zssr.kernels import prepare_kernel
from zssr.model import build_model
from zssr.resize import imresize
from zssr.sampling import dihedral
from zssr.train import Degradation


def _frac(s: float) -> Fraction:
    return Fraction(s).limit_denominator(1000)


def _hr(n: int, s: float) -> int:
    return math.ceil(n * _frac(s))


def _resize(x: np.ndarray, scale: tuple[float, float], shape: tuple[int, int],
            kernel: object = "cubic") -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return imresize(t, scale=scale, output_shape=shape, kernel=kernel).numpy()


def _bp(sr: np.ndarray, lr: np.ndarray, scale: tuple[float, float], iters: int,
        lo: np.ndarray, hi: np.ndarray, kernel: object) -> np.ndarray:
    inv = (1 / scale[0], 1 / scale[1])
    for _ in range(iters):
        err = lr - _resize(sr, inv, lr.shape[-2:], kernel)
        sr = np.clip(sr + _resize(err, scale, sr.shape[-2:]), lo, hi)
    return sr


def _transforms(ensemble: bool, scale: tuple[float, float]) -> list[tuple[int, bool]]:
    """(quarter turns, mirror) of each member: the dihedral group, or its axis-keeping part."""
    if not ensemble:
        return [(0, False)]
    if scale[0] != scale[1]:
        return [(0, False), (2, False), (0, True), (2, True)]
    return [(r, f) for r in range(4) for f in (False, True)]


def reference_predict(net: torch.nn.Module, lr: np.ndarray, scale: tuple[float, float], *,
                      ensemble: bool, iters: int, lo: np.ndarray, hi: np.ndarray,
                      kernel: object = "cubic") -> np.ndarray:
    c, h, w = lr.shape
    final = (_hr(h, scale[0]), _hr(w, scale[1]))
    if ensemble:  # mirror-pad to a size whose HR size is integral
        pads = [next(p for p in range(1000) if ((n + p) * _frac(s)).denominator == 1)
                for n, s in zip((h, w), scale, strict=True)]
        lr = np.pad(lr, ((0, 0), (0, pads[0]), (0, pads[1])), mode="symmetric")
    members = []
    for turns, mirror in _transforms(ensemble, scale):
        x = np.rot90(lr, turns, axes=(1, 2))
        x = x[:, :, ::-1] if mirror else x
        s = scale if turns % 2 == 0 else scale[::-1]
        up = _resize(x, s, (_hr(x.shape[1], s[0]), _hr(x.shape[2], s[1])))
        with torch.no_grad():
            y = net(torch.from_numpy(up)[None].contiguous())[0].numpy()
        y = np.clip(y, lo, hi)
        y = y[:, :, ::-1] if mirror else y
        members.append(_bp(np.rot90(y, -turns, axes=(1, 2)), lr, scale, iters, lo, hi, kernel))
    sr = _bp(np.median(np.stack(members), axis=0), lr, scale, iters, lo, hi, kernel)
    return sr[:, : final[0], : final[1]]


def _image(c: int, h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((c, h, w), dtype=np.float32)


CASES = [  # (channels, rows, cols, scale, ensemble, iters, batch)
    (3, 11, 8, (2.0, 2.0), True, 2, True),      # non-square: odd members swap the axes
    (3, 11, 8, (2.0, 2.0), True, 2, False),     # members one at a time
    (1, 9, 7, (1.5, 1.5), True, 1, True),       # 9 * 1.5 not integral: mirror padding
    (2, 7, 9, (2.0, 1.5), True, 1, True),       # anisotropic: 4 axis-keeping members
    (2, 10, 6, (2.0, 2.0), False, 3, True),     # one member
    (1, 9, 7, (1.5, 1.5), False, 1, True),      # one member, no padding: 14 x 11 HR
    # 21 * (9 / 7) = 27.000000000000004 in floats: the HR size is 27, a bare ceil says 28
    (1, 21, 8, (9 / 7, 9 / 7), True, 1, True),
    (1, 21, 8, (9 / 7, 9 / 7), False, 1, True),
]


@pytest.mark.parametrize(("c", "h", "w", "scale", "ensemble", "iters", "batch"), CASES)
def test_predict_equals_an_independent_final_test(c, h, w, scale, ensemble, iters, batch):
    net = build_model(c, NetConfig(depth=3, width=8), seed=3).eval()
    lr = _image(c, h, w, seed=h * w)
    lo = np.linspace(0.15, 0.25, c, dtype=np.float32)[:, None, None]  # clipping is active
    hi = np.linspace(0.8, 0.7, c, dtype=np.float32)[:, None, None]
    ref = reference_predict(net, lr, scale, ensemble=ensemble, iters=iters, lo=lo, hi=hi)
    infer = InferConfig(ensemble=ensemble, back_projection_iters=iters, batch_members=batch)
    sr = predict(net, torch.from_numpy(lr), scale=scale, infer=infer,
                 clip_range=(torch.from_numpy(lo.ravel()), torch.from_numpy(hi.ravel())))
    assert sr.shape == (c, _hr(h, scale[0]), _hr(w, scale[1]))
    np.testing.assert_allclose(sr.numpy(), ref, rtol=0, atol=2e-5)


def test_predict_with_a_numeric_down_kernel():
    net = build_model(1, NetConfig(depth=3, width=8), seed=5).eval()
    lr = _image(1, 9, 10, seed=7)
    g = np.exp(-0.5 * (np.arange(-3, 4) / 1.2) ** 2)
    kernel = prepare_kernel(np.outer(g, g), 2.0)
    lo, hi = np.full((1, 1, 1), 0.0, np.float32), np.full((1, 1, 1), 1.0, np.float32)
    ref = reference_predict(net, lr, (2.0, 2.0), ensemble=True, iters=2, lo=lo, hi=hi,
                            kernel=kernel)
    bicubic = reference_predict(net, lr, (2.0, 2.0), ensemble=True, iters=2, lo=lo, hi=hi)
    sr = predict(net, torch.from_numpy(lr), scale=2, down_kernel=kernel,
                 infer=InferConfig(ensemble=True, back_projection_iters=2))
    np.testing.assert_allclose(sr.numpy(), ref, rtol=0, atol=2e-5)
    assert np.abs(ref - bicubic).max() > 1e-3  # the kernel matters here


def test_predict_restores_the_training_flag_and_rejects_2d_input():
    net = build_model(1, NetConfig(depth=3, width=4), seed=0).train()
    predict(net, torch.rand(1, 6, 5), scale=2, infer=InferConfig(back_projection_iters=0))
    assert net.training
    net.eval()
    predict(net, torch.rand(1, 6, 5), scale=2, infer=InferConfig(back_projection_iters=0))
    assert not net.training
    with pytest.raises(ValueError, match=r"^expected \(C, h, w\), got shape \(6, 5\)$"):
        predict(net, torch.rand(6, 5), scale=2)


def test_ensemble_members_are_the_dihedral_group_or_its_axis_keeping_part():
    assert ensemble_members(False, (2.0, 2.0)) == [0]
    assert ensemble_members(False, (2.0, 3.0)) == [0]
    assert ensemble_members(True, (2.0, 2.0)) == list(range(8))
    aniso = ensemble_members(True, (2.0, 3.0))
    assert aniso == [0, 2, 4, 6]
    x = torch.arange(6.0).reshape(2, 3)  # axis-keeping: the shape is unchanged
    assert all(dihedral(x, k).shape == (2, 3) for k in aniso)
    assert ensemble_members(True, (3.0, 2.0)) == [0, 2, 4, 6]


@pytest.mark.parametrize(("n", "scale"), [(9, 1.5), (10, 1.5), (7, 4 / 3), (5, 2.0),
                                          (11, 1.25), (7, 1.2)])
def test_integral_pad_is_the_smallest_integral_size(n, scale):
    s = _frac(scale)
    expected = next(p for p in range(1000) if ((n + p) * s).denominator == 1)
    assert _integral_pad(n, s) == expected


def test_integral_pad_reaches_the_largest_denominator():
    assert _integral_pad(3, Fraction(1009, 1000)) == 997
    assert _integral_pad(1000, Fraction(1001, 1000)) == 0


@pytest.mark.parametrize(("pr", "pc"), [(0, 0), (1, 0), (0, 3), (4, 6), (9, 2)])
def test_mirror_pad_is_numpy_symmetric(pr, pc):
    x = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(2, 4, 5)
    ref = np.pad(x.numpy(), ((0, 0), (0, pr), (0, pc)), mode="symmetric")
    np.testing.assert_array_equal(_mirror_pad(x, pr, pc).numpy(), ref)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 8])
def test_median_is_numpy_median(n):
    s = torch.from_numpy(np.random.default_rng(n).standard_normal((n, 3, 4)).astype(np.float32))
    np.testing.assert_allclose(median(s).numpy(), np.median(s.numpy(), axis=0), atol=1e-7)


def test_back_project_is_the_clipped_iteration():
    lr = _image(2, 7, 6, seed=1)
    sr = _image(2, 14, 12, seed=2) * 1.4 - 0.2
    lo = np.array([0.0, 0.1], np.float32)[:, None, None]
    hi = np.array([1.0, 0.9], np.float32)[:, None, None]
    for iters in (0, 1, 3):
        ref = _bp(sr, lr, (2.0, 2.0), iters, lo, hi, "cubic")
        out = back_project(torch.from_numpy(sr), torch.from_numpy(lr), Degradation((2.0, 2.0)),
                           iters, torch.from_numpy(lo), torch.from_numpy(hi))
        np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-5)


def test_back_project_converges_to_a_consistent_image():
    """Unclipped, many passes make ``down(sr) == lr`` (the paper's consistency)."""
    lr = torch.from_numpy(_image(1, 8, 8, seed=4))
    deg = Degradation((2.0, 2.0))
    sr = back_project(torch.zeros(1, 16, 16), lr, deg, 60, torch.tensor(-9.0), torch.tensor(9.0))
    assert (deg.down(sr, output_shape=(8, 8)) - lr).abs().max() < 1e-3


def test_predict_output_is_matlab_ceil():
    model = build_model(1, NetConfig(depth=2, width=2), seed=0)
    infer = InferConfig(ensemble=False, back_projection_iters=0)
    for (h, w), scale, expected in (((9, 7), 1.5, (14, 11)), ((10, 7), (2.0, 1.5), (20, 11)),
                                    ((3, 3), 4 / 3, (4, 4))):
        assert predict(model, torch.rand(1, h, w), scale=scale, infer=infer).shape[-2:] == (
            expected)


def test_bf16_runs_under_autocast_and_returns_fp32():
    net = build_model(2, NetConfig(depth=3, width=8), seed=1).eval()
    x = torch.rand(1, 2, 12, 10)
    with torch.inference_mode():
        fp32 = forward_blocked(net, x, "fp32", block_bytes=0)
        bf16 = forward_blocked(net, x, "bf16", block_bytes=0)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            ref = net(x.contiguous(memory_format=torch.channels_last)).float()
    assert bf16.dtype == torch.float32
    assert not torch.equal(bf16, fp32)  # bf16 rounding shows
    torch.testing.assert_close(bf16, ref, rtol=0, atol=0)


@pytest.mark.parametrize(("h", "w", "pixels", "radius", "expected"), [
    # square-ish: side = isqrt(pixels) - 2r = 40 - 10 = 30; 100 -> 4 parts of 25
    (100, 70, 1600, 5, (25, 24)),
    # narrow (w <= side): whole rows, 1600 // (20 + 10) - 10 = 43 -> 100 in 3 parts: 34
    (100, 20, 1600, 5, (34, 20)),
    # w == side exactly is still narrow: side = isqrt(1763) - 10 = 31,
    # 1763 // (31 + 10) - 10 = 33 -> 66 in 2 parts (square blocks: 3 parts of 22)
    (66, 31, 1763, 5, (33, 31)),
    (31, 66, 1763, 5, (31, 33)),  # h == side is still short
    # short (h <= side): whole columns, 1600 // (12 + 10) - 10 = 62 -> 100 in 2 parts: 50
    (12, 100, 1600, 5, (12, 50)),
    # short: 1600 // (10 + 10) - 10 = 70 -> 300 in 5 parts of 60
    (10, 300, 1600, 5, (10, 60)),
    # tiny budgets are raised to 16-pixel parts
    (100, 100, 900, 10, (15, 15)),  # side 10 -> 16: 7 parts of 15
])
def test_block_sides_are_equal_parts_within_the_budget(h, w, pixels, radius, expected):
    assert _block_sides(h, w, pixels, radius) == expected


def test_blocked_forward_uses_blocks_and_batches(monkeypatch):
    """A budget forces whole-image batches and blocks; each call stays within it."""
    import zssr.inference as inference

    net = build_model(1, NetConfig(depth=3, width=4), seed=2).eval()
    sizes = []
    real = inference._net

    def spy(model, x, precision):
        sizes.append(tuple(x.shape))
        return real(model, x, precision)

    monkeypatch.setattr(inference, "_net", spy)
    budget = 4 * 4 * 400  # width 4: 400 px per call
    x = torch.rand(5, 1, 10, 10)
    with torch.inference_mode():
        whole = net(x.contiguous(memory_format=torch.channels_last))
        out = forward_blocked(net, x, block_bytes=budget)
    torch.testing.assert_close(out, whole, rtol=0, atol=1e-6)
    assert sizes == [(4, 1, 10, 10), (1, 1, 10, 10)]  # 400 // 100 = 4 images per call
    sizes.clear()
    x = torch.rand(1, 1, 30, 30)
    with torch.inference_mode():
        out = forward_blocked(net, x, block_bytes=budget)
        whole = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, whole, rtol=0, atol=1e-6)
    # radius 3 (depth 3, 3x3): side isqrt(400) - 6 = 14 -> 16 -> 2 blocks of 15 per axis,
    # each read with its 3-px margin inside the image: 18 x 18
    assert sizes == [(1, 1, 18, 18)] * 4
    sizes.clear()
    x = torch.rand(2, 1, 30, 30)
    with torch.inference_mode():
        out = forward_blocked(net, x, block_bytes=budget)
        whole = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, whole, rtol=0, atol=1e-6)
    assert sizes == [(1, 1, 18, 18)] * 8
    sizes.clear()
    x = torch.rand(2, 1, 20, 20)  # h * w == 400: whole images, one per call
    with torch.inference_mode():
        forward_blocked(net, x, block_bytes=budget)
    assert sizes == [(1, 1, 20, 20)] * 2
    sizes.clear()
    with torch.inference_mode():  # a 1-byte budget still blocks (16-px parts)
        forward_blocked(net, torch.rand(1, 1, 30, 30), block_bytes=1)
    assert sizes == [(1, 1, 18, 18)] * 4


class _Wrapped(torch.nn.Module):
    """A network with a partial or missing ``cfg`` (any ``nn.Module`` may be passed)."""

    def __init__(self, net: torch.nn.Module, cfg: object) -> None:
        super().__init__()
        self.net = net
        if cfg is not None:
            self.cfg = cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_blocked_forward_without_a_full_config(monkeypatch):
    from types import SimpleNamespace

    import zssr.inference as inference

    net = build_model(1, NetConfig(depth=3, width=4), seed=2).eval()
    calls = []
    real = inference._net
    monkeypatch.setattr(inference, "_net",
                        lambda m, x, p: calls.append(tuple(x.shape)) or real(m, x, p))
    x = torch.rand(1, 1, 30, 30)
    with torch.inference_mode():
        whole = net(x.contiguous(memory_format=torch.channels_last))
        for cfg in (None, SimpleNamespace(width=4)):  # no radius known: one call
            calls.clear()
            out = forward_blocked(_Wrapped(net, cfg), x, block_bytes=4 * 4 * 400)
            assert calls == [(1, 1, 30, 30)]
            torch.testing.assert_close(out, whole, rtol=0, atol=1e-6)
        # radius but no width: the input's 1 channel sets the budget, 4 * 1 bytes per px:
        # 1600 px, side 40 - 6 = 34 -> 64 in 2 blocks of 32, read with 3-px margins
        x = torch.rand(1, 1, 64, 64)
        whole = net(x.contiguous(memory_format=torch.channels_last))
        calls.clear()
        out = forward_blocked(_Wrapped(net, SimpleNamespace(receptive_radius=3)), x,
                              block_bytes=4 * 1 * 1600)
    assert calls == [(1, 1, 35, 35)] * 4
    torch.testing.assert_close(out, whole, rtol=0, atol=1e-6)


def test_blocked_forward_single_call_cases(monkeypatch):
    import zssr.inference as inference

    net = build_model(1, NetConfig(depth=3, width=4), seed=2).eval()
    calls = []
    real = inference._net
    monkeypatch.setattr(inference, "_net",
                        lambda m, x, p: calls.append(tuple(x.shape)) or real(m, x, p))
    with torch.inference_mode():
        forward_blocked(net, torch.rand(2, 1, 10, 10), block_bytes=0)
        forward_blocked(net, torch.rand(2, 1, 10, 10), block_bytes=4 * 4 * 200)  # 200 = n h w
        forward_blocked(net, torch.rand(1, 1, 10, 10))  # default BLOCK_BYTES
    assert calls == [(2, 1, 10, 10), (2, 1, 10, 10), (1, 1, 10, 10)]


def test_bf16_reaches_every_blocked_path():
    """Batched whole images and spatial blocks both run under bf16 autocast."""
    net = build_model(2, NetConfig(depth=3, width=4), seed=1).eval()
    budget = 4 * 4 * 400  # 400 px per call
    for x in (torch.rand(5, 2, 10, 10), torch.rand(1, 2, 30, 30)):  # batches; blocks
        with torch.inference_mode():
            fp32 = forward_blocked(net, x, "fp32", block_bytes=budget)
            bf16 = forward_blocked(net, x, "bf16", block_bytes=budget)
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
                ref = net(x.contiguous(memory_format=torch.channels_last)).float()
        assert not torch.equal(bf16, fp32)
        torch.testing.assert_close(bf16, ref, rtol=0, atol=0.05)


def test_blocked_output_is_contiguous_for_a_channels_last_input():
    net = build_model(2, NetConfig(depth=3, width=4), seed=2).eval()
    x = torch.rand(1, 2, 30, 30).contiguous(memory_format=torch.channels_last)
    assert not x.is_contiguous()
    with torch.inference_mode():
        out = forward_blocked(net, x, block_bytes=4 * 4 * 400)
    assert out.is_contiguous()


@pytest.mark.parametrize("batch", [True, False])
def test_predict_passes_the_precision_on(batch):
    net = build_model(1, NetConfig(depth=3, width=8), seed=4).eval()
    lr = torch.from_numpy(_image(1, 8, 9, seed=3))
    out = {p: predict(net, lr, scale=2, infer=InferConfig(
        ensemble=True, back_projection_iters=0, batch_members=batch, precision=p))
        for p in ("fp32", "bf16")}
    assert not torch.equal(out["bf16"], out["fp32"])  # bf16 rounding reached the network
    torch.testing.assert_close(out["bf16"], out["fp32"], rtol=0, atol=0.05)


# ----------------------------------------------------------------------------- chosen members


def test_chosen_members_keeps_the_groups_order_and_only_the_chosen():
    from zssr.inference import chosen_members

    assert chosen_members(list(range(8)), ()) == list(range(8))
    assert chosen_members(list(range(8)), (5, 0)) == [0, 5]  # the group's order, not the choice's
    assert chosen_members([0, 2, 4, 6], (6, 2)) == [2, 6]


def test_chosen_members_names_the_first_unavailable_member():
    from zssr.config import ConfigError
    from zssr.inference import chosen_members

    with pytest.raises(ConfigError, match=r"^config key 'infer.ensemble_members': member 3 is "
                       r"not available at this scale; allowed: \[0, 2, 4, 6\]$"):
        chosen_members([0, 2, 4, 6], (0, 3, 5))
    with pytest.raises(ConfigError, match="member 1 is not"):
        chosen_members([0, 2, 4, 6], (1,))
