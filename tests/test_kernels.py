"""Tests of zssr.kernels (degradation kernels: shift, Gaussian PSF, validation)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.io import loadmat

from zssr.kernels import (
    MAX_KERNEL_SIZE,
    KernelError,
    gaussian_kernel,
    kernel_from_mapping,
    kernel_shift,
    prepare_kernel,
    validate_kernel,
)
from zssr.resize import imresize

KERNEL_MAT = Path(__file__).parent / "data" / "kernels" / "BSD100_100_lr_rand_ker_c_X2_0.mat"


def _wanted_com(shape: tuple[int, int], sf) -> np.ndarray:
    """ZSSR utils.kernel_shift (Python 2 integer division): shape // 2 + 0.5 * (sf - shape % 2)."""
    return np.array(shape) // 2 + 0.5 * (np.asarray(sf, dtype=float) - np.array(shape) % 2)


@pytest.mark.parametrize("shape", [(9, 9), (8, 8), (9, 8)])
@pytest.mark.parametrize("sf", [2.0, 3.0, (2.0, 4.0)])
def test_kernel_shift_moves_centre_of_mass_where_zssr_says(shape, sf) -> None:
    rng = np.random.default_rng(0)
    k = rng.random(shape) ** 4
    k /= k.sum()
    out = kernel_shift(k, sf)
    wanted = _wanted_com(shape, sf)
    pad = math.ceil(np.max(np.abs(wanted - np.array(ndimage.center_of_mass(k))))) + 1
    assert out.shape == (shape[0] + 2 * pad, shape[1] + 2 * pad)
    # the cubic-spline shift moves the centre of mass up to ~0.02 px off for spiky kernels
    np.testing.assert_allclose(np.array(ndimage.center_of_mass(out)) - pad, wanted, atol=0.05)
    assert out.sum() == pytest.approx(1.0, abs=0.01)


def test_kernel_shift_of_smooth_kernel_is_precise() -> None:
    k = gaussian_kernel((1.2, 0.8), size=9)
    out = kernel_shift(k, 2)
    pad = (out.shape[0] - 9) // 2
    assert pad == 2  # |shift| = 0.5 px in both dims -> ceil(0.5) + 1
    np.testing.assert_allclose(np.array(ndimage.center_of_mass(out)) - pad, [4.5, 4.5],
                               atol=1e-3)


def test_gaussian_kernel() -> None:
    k = gaussian_kernel(1.0)
    assert k.shape == (7, 7)
    assert k.sum() == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(k), k.shape) == (3, 3)
    np.testing.assert_allclose(k, k.T)
    np.testing.assert_allclose(k, k[::-1, ::-1])
    assert gaussian_kernel(0.4).shape == (5, 5)
    wide = gaussian_kernel((0.5, 2.0))
    assert wide.shape == (13, 13)
    assert wide[6, 9] > wide[9, 6]  # wider along columns
    assert gaussian_kernel(1.0, size=3).shape == (3, 3)


@pytest.mark.parametrize(
    ("sigma", "size", "match"),
    [(0.0, None, "sigma must be finite and > 0"), (float("nan"), None, "sigma"),
     (1.0, 4, "odd integer"), (1.0, MAX_KERNEL_SIZE + 1, "odd integer"), (20.0, None, "size")],
)
def test_gaussian_kernel_errors(sigma, size, match) -> None:
    with pytest.raises(KernelError, match=match):
        gaussian_kernel(sigma, size=size)


def test_validate_kernel_normalises() -> None:
    k = validate_kernel(np.ones((3, 4), dtype=np.int32), source="x")
    assert k.dtype == np.float64 and k.sum() == pytest.approx(1.0)
    # small negative lobes (as in estimated kernels) are allowed
    neg = np.full((3, 3), 0.2)
    neg[0, 0] = -0.1
    assert validate_kernel(neg, source="x").sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kernel", "match"),
    [
        (np.ones(9), r"k\.mat: expected a 2-D array, got 1-D"),
        (np.ones((3, 3, 3)), r"k\.mat: expected a 2-D array, got 3-D"),
        (np.zeros((5, 5)), r"k\.mat: all zeros"),
        (np.full((3, 3), np.nan), r"k\.mat: contains NaN"),
        (np.array([[1.0, np.inf]]), "NaN or infinite"),
        (np.ones((65, 3)), r"k\.mat: too large, shape \(65, 3\)"),
        (np.zeros((0, 3)), "is empty"),
        (-np.ones((3, 3)), "sums to -9"),
        (np.ones((2, 2), dtype=complex), "expected real numbers"),
        ([["a", "b"]], "expected real numbers"),
    ],
)
def test_validate_kernel_errors(kernel, match) -> None:
    with pytest.raises(KernelError, match=match):
        validate_kernel(kernel, source="k.mat")


def test_kernel_error_is_value_error() -> None:
    assert issubclass(KernelError, ValueError)


def test_kernel_from_loadmat_file() -> None:
    k = kernel_from_mapping(loadmat(KERNEL_MAT), source=KERNEL_MAT.name)
    assert k.shape == (9, 9) and k.dtype == np.float64
    assert k.sum() == pytest.approx(1.0)


def test_kernel_from_mapping_missing_key_lists_variables() -> None:
    mapping = {"__header__": b"x", "__version__": "1.0", "K": np.ones((3, 3)), "psf": 1}
    with pytest.raises(KernelError, match=r"ker\.mat: no variable 'Kernel'; "
                                          r"variables present: 'K', 'psf'"):
        kernel_from_mapping(mapping, source="ker.mat")
    with pytest.raises(KernelError, match="variables present: none"):
        kernel_from_mapping({"__header__": b""}, source="empty.mat")
    assert kernel_from_mapping(mapping, source="ker.mat", key="K").shape == (3, 3)


def test_kernel_from_mapping_names_variable_on_bad_value() -> None:
    with pytest.raises(KernelError, match=r"bad\.mat \(variable 'Kernel'\): all zeros"):
        kernel_from_mapping({"Kernel": np.zeros((3, 3))}, source="bad.mat")


def test_prepare_kernel() -> None:
    raw = loadmat(KERNEL_MAT)["Kernel"]
    k = prepare_kernel(raw, 2.0, source="k.mat")
    assert isinstance(k, torch.Tensor) and k.dtype == torch.float32
    expected = kernel_shift(raw / raw.sum(), 2.0)
    np.testing.assert_allclose(k.numpy(), expected, atol=1e-7)
    assert prepare_kernel(raw, (2, 2)).shape == k.shape


def _blob(n: int, centre: tuple[float, float]) -> torch.Tensor:
    yy, xx = np.mgrid[0:n, 0:n]
    return torch.from_numpy(np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / 32.0)[None])


@pytest.mark.parametrize("sf", [2, 3, 4])
@pytest.mark.parametrize("ksize", [(9, 9), (8, 8), (8, 9)])
def test_prepared_kernel_is_aligned_with_bicubic(sf: int, ksize) -> None:
    """LR pixel m of a scale-s downscale sits at HR coordinate s*m + (s-1)/2 (MATLAB grid)."""
    centre = (40.3, 47.0)
    hr = _blob(96, centre)
    k = prepare_kernel(gaussian_kernel(1.0, size=9)[: ksize[0], : ksize[1]], sf)
    for kernel in ("cubic", k):
        lr = imresize(hr, scale=1 / sf, kernel=kernel).numpy()[0]
        expected = (np.array(centre) - (sf - 1) / 2) / sf
        np.testing.assert_allclose(ndimage.center_of_mass(lr), expected, atol=2e-3)


@pytest.mark.parametrize(("scale", "message"), [
    (0.0, "scale must be >= 1 (a super-resolution factor), got 0.0"),
    (-2.0, "scale must be >= 1 (a super-resolution factor), got -2.0"),
    (float("inf"), "scale must be finite, got inf"),
    ((2.0, 2.0, 2.0), "scale must be a number or a pair (rows, cols), got (2.0, 2.0, 2.0)"),
    (None, "scale must be a number, got None (NoneType)"),
])
def test_prepare_kernel_bad_scale(scale, message) -> None:
    with pytest.raises(KernelError, match=re.escape(f"kernel from k.mat: {message}")):
        prepare_kernel(np.ones((3, 3)), scale, source="k.mat")
