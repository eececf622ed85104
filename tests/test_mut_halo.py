"""Tests that kill the mutants of ``pipeline/image/halo.py`` (run by ``bench/mutation.py``).

The effective radius is recomputed here by an independent route: the back-projection
passes as explicit resampling matrices (``sr += U_y (lr - D_y sr D_x^T) U_x^T``, the
bicubic operators being separable), built by resizing identity matrices with
``zssr.resize.imresize`` (tested against MATLAB in tests/test_resize.py), instead of
the module's image-domain ``Degradation`` passes.  The support radius is written out
from the formula in ``support_radius``'s docstring.
"""

from __future__ import annotations

import logging
import math
import re
from fractions import Fraction

import numpy as np
import pytest
import torch

import pipeline.image.halo as halo
from pipeline.image.halo import AUTO_TOLERANCE, dependency_radius, resolve_halo, support_radius
from zssr.config import config_from_dict
from zssr.kernels import prepare_kernel
from zssr.resize import imresize

PROBE = 40  # the module's probe half-size: the oracle uses the same probe image


def _matrices(n: int, s: Fraction, hr: int) -> tuple[np.ndarray, np.ndarray]:
    """(up: hr x n, down: n x hr) bicubic resampling matrices along one axis."""
    up = imresize(torch.eye(n, dtype=torch.float64), scale=(1.0, float(s)),
                  output_shape=(n, hr)).numpy().T
    down = imresize(torch.eye(hr, dtype=torch.float64), scale=(1.0, 1 / float(s)),
                    output_shape=(hr, n)).numpy().T
    return up, down


def oracle_reaches(cfg, scales: tuple[Fraction, Fraction], tolerance: float,
                   probe: int = PROBE) -> list[tuple[int | None, int | None]]:
    """Per axis (reach of an LR impulse, reach of an HR impulse), None: not decayed."""
    iters = cfg.infer.back_projection_iters
    tol = tolerance / (4 * iters + 1)  # 4 iters + 1 entry points of wrong values
    n = 2 * probe + 1
    hr = [math.ceil(n * s) for s in scales]
    (uy, dy), (ux, dx) = (_matrices(n, s, h) for s, h in zip(scales, hr, strict=True))
    centre = [int(probe * s + s // 2) for s in scales]
    lr_impulse = np.zeros((n, n))
    lr_impulse[probe, probe] = 1.0
    hr_impulse = np.zeros(hr)
    hr_impulse[centre[0], centre[1]] = 1.0
    responses = []
    for lr, sr in ((lr_impulse, uy @ lr_impulse @ ux.T), (np.zeros((n, n)), hr_impulse)):
        for _ in range(2 * iters):
            sr = sr + uy @ (lr - dy @ sr @ dx.T) @ ux.T
        responses.append(np.abs(sr))
    out = []
    for axis, s in enumerate(scales):
        pos = (np.arange(hr[axis]) + 0.5) / float(s) - 0.5
        reach = []
        for resp, origin in zip(responses, (probe, (centre[axis] + 0.5) / float(s) - 0.5),
                                strict=True):
            marginal, dist = resp.sum(axis=1 - axis), np.abs(pos - origin)
            reach.append(next((r for r in range(probe - 8) if marginal[dist > r].sum() <= tol),
                              None))
        out.append((reach[0], reach[1]))
    return out


def oracle_radius(cfg, scales: tuple[Fraction, Fraction], tolerance: float,
                  probe: int = PROBE) -> int:
    exact = support_radius(cfg, scales)
    reaches = oracle_reaches(cfg, scales, tolerance, probe)
    if any(r is None for pair in reaches for r in pair):
        return exact
    out = 0
    for s, (r_lr, r_hr) in zip(scales, reaches, strict=True):
        r = max(1 + Fraction(cfg.net.receptive_radius) / s + r_hr, Fraction(r_lr))
        out = max(out, math.ceil(r + 1))
    return min(out, exact)


def _cfg(iters: int = 10, depth: int = 8):
    return config_from_dict({"infer": {"back_projection_iters": iters},
                             "net": {"depth": depth}})


@pytest.mark.parametrize(("scale", "tolerance", "iters", "depth"), [
    (2, AUTO_TOLERANCE, 10, 8),
    (2, 1e-3, 10, 8),
    (3, 1e-6, 10, 8),
    (1.5, 1e-6, 10, 8),
    ((2, 3), 1e-6, 10, 8),
    ((3, 2), 1e-4, 10, 8),
    (2, 1e-6, 2, 8),
    (2, 1e-2, 1, 30),
    (4, 1e-5, 3, 4),
])
def test_effective_radius_equals_the_matrix_oracle(scale, tolerance, iters, depth):
    cfg = _cfg(iters, depth)
    scales = tuple(Fraction(v).limit_denominator(1000)
                   for v in (scale if isinstance(scale, tuple) else (scale, scale)))
    assert dependency_radius(cfg, scale, tolerance=tolerance) == oracle_radius(
        cfg, scales, tolerance)


def test_documented_values():
    cfg = _cfg()
    assert dependency_radius(cfg, 2) == 22  # module docstring: 22 px at the paper's x2
    assert dependency_radius(cfg, 2, tolerance=0) == 86
    assert resolve_halo("auto", config=cfg, scale=2) == 22


def test_support_radius_by_hand():
    cfg = _cfg(iters=3, depth=6)  # receptive radius 6
    # D = 2 + 6 / 1.5 + 6 * (2 + 2) = 30
    assert support_radius(cfg, 1.5) == 30
    # anisotropic: the larger axis, 2 + 6/2 + 24 = 29 vs 2 + 6/3 + 24 = 28
    assert support_radius(cfg, (3, 2)) == 29 and support_radius(cfg, (2, 3)) == 29
    # numeric kernel 7 x 11 HR taps at (2, 3): w_down = 3/2 + 1/2 = 2 and 5/3 + 1/2
    # rows: 2 + 3 + 6 * 4 = 29; cols: 2 + 2 + 6 * (5/3 + 1/2 + 2) = 29
    assert support_radius(cfg, (2, 3), kernel_shape=(7, 11)) == 29
    # cols 9 taps at 3: 2 + 2 + 6 * (4/3 + 1/2 + 2) = 27; rows 13 taps at 2: 2 + 3 + 6 * 5.5
    assert support_radius(cfg, (2, 3), kernel_shape=(13, 9)) == 38
    assert support_radius(cfg, 2, kernel_shape=5) == 2 + 3 + 6 * 3.5  # 5 // 2 / 2 + 1/2 = 1.5
    with pytest.raises(ValueError, match=re.escape("kernel_shape must be >= 1, got (0, 3)")):
        support_radius(cfg, 2, kernel_shape=(0, 3))


def test_a_down_kernel_uses_the_effective_radius():
    cfg = _cfg(iters=2)
    g = np.exp(-0.5 * (np.arange(-3, 4) / 1.0) ** 2)
    kernel = prepare_kernel(np.outer(g, g), 2.0)
    exact = support_radius(cfg, 2, kernel_shape=tuple(kernel.shape))
    with_kernel = dependency_radius(cfg, 2, down_kernel=kernel)
    assert with_kernel == dependency_radius(cfg, 2, down_kernel=kernel.numpy())
    assert with_kernel < exact
    assert with_kernel != dependency_radius(cfg, 2)  # the kernel changes the response
    assert dependency_radius(cfg, 2, down_kernel=kernel, tolerance=0) == exact
    assert dependency_radius(cfg, 2, kernel_shape=tuple(kernel.shape)) == exact


def test_no_back_projection_or_zero_tolerance_is_the_support():
    for iters in (0, 3):
        cfg = _cfg(iters=iters)
        assert dependency_radius(cfg, 2, tolerance=0) == support_radius(cfg, 2)
    cfg = _cfg(iters=0)
    assert dependency_radius(cfg, 2) == 2 + 4  # upsampling + network only


def test_probe_too_small_falls_back_to_the_support(monkeypatch):
    """A response that does not decay on the probe gives the (exact) support radius."""
    cfg = _cfg(iters=3)
    halo._bp_response.cache_clear()
    monkeypatch.setattr(halo, "_PROBE", 9)  # reach search range(1): nothing decays
    try:
        assert dependency_radius(cfg, 2, tolerance=1e-9) == support_radius(cfg, 2)
    finally:
        halo._bp_response.cache_clear()


@pytest.mark.parametrize("bad", [1.0, -1e-6, True, "0.1", None, 1])
def test_tolerance_errors(bad):
    with pytest.raises(ValueError, match=re.escape(
            f"tolerance must be a number in [0, 1), got {bad!r}")):
        dependency_radius(_cfg(), 2, tolerance=bad)


def test_tolerance_may_be_an_integer_zero():
    assert dependency_radius(_cfg(), 2, tolerance=0) == 86


def test_down_kernel_must_be_2d():
    with pytest.raises(ValueError, match=re.escape("down_kernel must be 2-D, got shape (5,)")):
        dependency_radius(_cfg(), 2, down_kernel=np.ones(5))


def test_resolve_halo_messages(caplog):
    cfg = _cfg()
    with caplog.at_level(logging.WARNING, logger="pipeline.image.halo"):
        assert resolve_halo(21, config=cfg, scale=2) == 21
    assert caplog.messages == [
        "halo 21 < dependency radius 22 LR px: tiled output will differ from whole-image "
        "output near tile seams; use halo='auto'"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.image.halo"):
        assert resolve_halo(22, config=cfg, scale=2) == 22
        assert type(resolve_halo(np.int64(30), config=cfg, scale=2)) is int
    assert caplog.messages == []
    assert resolve_halo(0, config=_cfg(iters=0), scale=2, tolerance=0) == 0
    assert resolve_halo("auto", config=cfg, scale=2, tolerance=0) == 86
    with pytest.raises(ValueError, match=re.escape(
            "halo must be 'auto' or an integer >= 0, got -1")):
        resolve_halo(-1, config=cfg, scale=2)


def test_resolve_halo_passes_the_kernel_on():
    cfg = _cfg(iters=2)
    g = np.exp(-0.5 * (np.arange(-3, 4) / 1.0) ** 2)
    kernel = prepare_kernel(np.outer(g, g), 2.0)
    assert resolve_halo("auto", config=cfg, scale=2, down_kernel=kernel) == dependency_radius(
        cfg, 2, down_kernel=kernel)
    assert resolve_halo("auto", config=cfg, scale=2, kernel_shape=(7, 7)) == support_radius(
        cfg, 2, kernel_shape=(7, 7))


def test_tolerance_is_shared_by_the_entry_points():
    """One pass: 4 * 1 + 1 = 5 entry points; at 3e-6 a share of 1/6 would reach 13 px."""
    cfg, scales = _cfg(iters=1), (Fraction(2), Fraction(2))
    assert oracle_radius(cfg, scales, 3e-6) == 12
    assert oracle_radius(cfg, scales, 3e-6 * 5 / 6) == 13
    assert dependency_radius(cfg, 2, tolerance=3e-6) == 12


def test_the_last_probe_distance_is_searched(monkeypatch):
    """With a 15-px probe the search covers r < 7; the LR reach is exactly 6 here."""
    cfg, scales = _cfg(iters=1), (Fraction(2), Fraction(2))
    assert max(max(p) for p in oracle_reaches(cfg, scales, 1e-3, probe=15)) == 6
    expected = oracle_radius(cfg, scales, 1e-3, probe=15)
    assert expected < support_radius(cfg, 2)
    halo._bp_response.cache_clear()
    monkeypatch.setattr(halo, "_PROBE", 15)
    try:
        assert dependency_radius(cfg, 2, tolerance=1e-3) == expected
    finally:
        halo._bp_response.cache_clear()


def test_a_kernel_tensor_that_requires_grad():
    cfg = _cfg(iters=2)
    g = np.exp(-0.5 * (np.arange(-3, 4) / 1.0) ** 2)
    kernel = prepare_kernel(np.outer(g, g), 2.0)
    assert dependency_radius(cfg, 2, down_kernel=kernel.clone().requires_grad_(True)) == \
        dependency_radius(cfg, 2, down_kernel=kernel.numpy())
