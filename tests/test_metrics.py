"""Tests of zssr.metrics (PSNR/SSIM conventions around scikit-image, SAM, LR consistency)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from zssr.metrics import (
    crop_to_multiple,
    lr_consistency,
    per_band_psnr,
    psnr,
    rgb_to_y,
    shave,
    spectral_angle,
    ssim,
)
from zssr.resize import imresize


def _rgb(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(3, 1, 1)


@pytest.mark.parametrize(
    ("rgb", "y"),
    [((0, 0, 0), 16.0), ((255, 255, 255), 235.0), ((255, 0, 0), 81.481),
     ((0, 255, 0), 144.553), ((0, 0, 255), 40.966), ((128, 64, 32), 16 + (65.481 * 128
                                                                          + 128.553 * 64 + 24.966 * 32) / 255)],
)
def test_rgb_to_y_known_values(rgb, y) -> None:
    assert rgb_to_y(_rgb(rgb)).item() == pytest.approx(y, abs=1e-9)


def test_rgb_to_y_other_data_range() -> None:
    assert rgb_to_y(_rgb((1.0, 1.0, 1.0)), data_range=1.0).item() == pytest.approx(235 / 255)
    assert rgb_to_y(_rgb((0, 0, 0)), data_range=65535.0).item() == pytest.approx(16 * 257)


def test_rgb_to_y_rejects_non_rgb() -> None:
    with pytest.raises(ValueError, match=r"expects a \(3, H, W\) array, got shape \(4, 2, 2\)"):
        rgb_to_y(np.zeros((4, 2, 2)))


def test_psnr_equals_skimage_on_one_band() -> None:
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (1, 20, 24)).astype(np.float64)
    sr = np.clip(hr + rng.normal(0, 5, hr.shape), 0, 255)
    expected = peak_signal_noise_ratio(hr[0, 2:-2, 2:-2], sr[0, 2:-2, 2:-2], data_range=255)
    assert psnr(sr, hr, scale=2, data_range=255.0) == pytest.approx(expected, abs=1e-12)
    assert psnr(sr[0], hr[0], scale=2, data_range=255.0) == pytest.approx(expected, abs=1e-12)


def test_psnr_hand_case() -> None:
    hr = np.zeros((1, 10, 10))
    sr = hr + 2.0  # MSE 4 -> 10 log10(255^2 / 4)
    assert psnr(sr, hr, scale=3, data_range=255.0) == pytest.approx(
        10 * np.log10(255.0**2 / 4))


def test_psnr_rgb_is_scored_on_y() -> None:
    rng = np.random.default_rng(1)
    hr = rng.integers(0, 256, (3, 16, 16)).astype(np.float64)
    sr = np.clip(hr + rng.normal(0, 8, hr.shape), 0, 255)
    y_sr, y_hr = rgb_to_y(sr)[3:-3, 3:-3], rgb_to_y(hr)[3:-3, 3:-3]
    expected = peak_signal_noise_ratio(y_hr, y_sr, data_range=255)
    assert psnr(sr, hr, scale=3, data_range=255.0) == pytest.approx(expected)
    # the same on the 0..1 scale
    assert psnr(sr / 255, hr / 255, scale=3, data_range=1.0) == pytest.approx(expected)
    per_band = per_band_psnr(sr, hr, scale=3, data_range=255.0)
    assert len(per_band) == 3
    assert psnr(sr, hr, scale=3, data_range=255.0, y_channel=False) == pytest.approx(
        np.mean(per_band))


def test_psnr_of_n_bands_is_mean_of_bands() -> None:
    rng = np.random.default_rng(2)
    hr = rng.random((4, 12, 12))
    sr = hr + rng.normal(0, [[[0.01]], [[0.02]], [[0.03]], [[0.04]]], hr.shape)
    bands = [peak_signal_noise_ratio(hr[i, 2:-2, 2:-2], sr[i, 2:-2, 2:-2], data_range=1.0)
             for i in range(4)]
    assert psnr(sr, hr, scale=2, data_range=1.0) == pytest.approx(np.mean(bands))
    assert per_band_psnr(sr, hr, scale=2, data_range=1.0) == pytest.approx(bands)


@pytest.mark.parametrize(("scale", "px"), [(2, 2), (3.0, 3), (1.5, 2), (4, 4)])
def test_shave_hides_border_errors(scale, px) -> None:
    hr = np.full((1, 20, 20), 100.0)
    hr[0, 7, 7] = 50.0  # structure in the interior
    sr = hr.copy()
    sr[0, :px] = 0
    sr[0, -px:] = 0
    sr[0, :, :px] = 0
    sr[0, :, -px:] = 0
    assert shave(sr, scale).shape == (1, 20 - 2 * px, 20 - 2 * px)
    with pytest.warns(RuntimeWarning):  # skimage: zero MSE -> inf
        assert psnr(sr, hr, scale=scale, data_range=255.0) == np.inf
    sr[0, px, px] = 0
    assert psnr(sr, hr, scale=scale, data_range=255.0) < 60


def test_ssim_matches_skimage_matlab_settings() -> None:
    rng = np.random.default_rng(3)
    hr = rng.random((1, 32, 32))
    sr = np.clip(hr + rng.normal(0, 0.05, hr.shape), 0, 1)
    expected = structural_similarity(hr[0, 2:-2, 2:-2], sr[0, 2:-2, 2:-2], data_range=1.0,
                                     gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)
    assert ssim(sr, hr, scale=2, data_range=1.0) == pytest.approx(expected)
    assert ssim(hr, hr, scale=2, data_range=1.0) == pytest.approx(1.0)


def test_spectral_angle() -> None:
    rng = np.random.default_rng(4)
    hr = rng.random((4, 6, 5)) + 0.1
    assert spectral_angle(hr, hr) == pytest.approx(0.0, abs=1e-6)
    assert spectral_angle(3 * hr, hr) == pytest.approx(0.0, abs=1e-6)  # scale-invariant
    a = np.zeros((2, 1, 3))
    b = np.zeros((2, 1, 3))
    a[0, 0, 0], b[1, 0, 0] = 1, 1  # 90 degrees
    a[0, 0, 1], b[0, 0, 1] = 1, 1  # 0 degrees
    # pixel 2 is zero in both: skipped
    assert spectral_angle(a, b) == pytest.approx(45.0)
    assert spectral_angle(np.zeros((3, 2, 2)), np.zeros((3, 2, 2))) == 0.0


def test_lr_consistency_of_exact_bicubic_pair_is_high() -> None:
    rng = np.random.default_rng(5)
    sr = rng.random((3, 40, 36))
    lr = imresize(torch.from_numpy(sr), scale=0.5).numpy()
    noisy_lr = lr + rng.normal(0, 0.01, lr.shape)
    with np.errstate(divide="ignore"):
        exact = lr_consistency(sr, lr, scale=2, data_range=1.0)
    assert exact > 100
    assert lr_consistency(sr, noisy_lr, scale=2, data_range=1.0) == pytest.approx(40, abs=1)


def test_lr_consistency_with_numeric_kernel() -> None:
    rng = np.random.default_rng(6)
    sr = rng.random((1, 40, 40))
    k = np.full((4, 4), 1 / 16)
    lr = imresize(torch.from_numpy(sr), scale=0.5, kernel=k).numpy()
    with np.errstate(divide="ignore"):
        assert lr_consistency(sr, lr, scale=2, kernel=k, data_range=1.0) > 100
    assert lr_consistency(sr, lr, scale=2, data_range=1.0) < 60  # bicubic is a different PSF


def test_crop_to_multiple() -> None:
    hr = np.arange(3 * 11 * 14).reshape(3, 11, 14)
    out = crop_to_multiple(hr, 4)
    assert out.shape == (3, 8, 12)
    np.testing.assert_array_equal(out, hr[:, :8, :12])
    assert crop_to_multiple(hr, 3.0).shape == (3, 9, 12)


@pytest.mark.parametrize(
    ("func", "args", "kwargs", "match"),
    [
        (psnr, (np.zeros((1, 8, 8)), np.zeros((1, 8, 9))), {"scale": 2, "data_range": 1.0},
         r"same shape, got \(1, 8, 8\) and \(1, 8, 9\)"),
        (psnr, (np.zeros((1, 8, 8)), np.zeros((1, 8, 8))), {"scale": 2, "data_range": 0.0},
         "data_range must be a finite number > 0"),
        (psnr, (np.zeros((1, 8, 8)), np.zeros((1, 8, 8))), {"scale": 0, "data_range": 1.0},
         "scale must be a finite number > 0"),
        (psnr, (np.zeros((1, 4, 8)), np.zeros((1, 4, 8))), {"scale": 2, "data_range": 1.0},
         "too small to shave 2 px"),
        (ssim, (np.zeros((2, 2, 2, 2)), np.zeros((2, 2, 2, 2))), {"scale": 2, "data_range": 1.0},
         r"sr: expected a \(C, H, W\) or \(H, W\) array"),
        (crop_to_multiple, (np.zeros((5, 5)), 1.5), {}, "whole-number scale"),
        (crop_to_multiple, (np.zeros((5, 5)), 8), {}, "smaller than the scale 8"),
        (lr_consistency, (np.zeros((3, 8, 8)), np.zeros((1, 4, 4))),
         {"scale": 2, "data_range": 1.0}, "sr has 3 bands but lr has 1"),
        (lr_consistency, (np.zeros((1, 8, 8)), np.zeros((1, 4, 4))),
         {"scale": 2, "data_range": -1.0}, "data_range must be"),
    ],
)
def test_errors(func, args, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        func(*args, **kwargs)
