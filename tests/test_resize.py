"""Tests of zssr.resize (MATLAB-compatible imresize in torch).

Oracles: the SelfExSR LR files (made by MATLAB ``imresize``), PIL's bicubic resize
(same a = -0.5 kernel and antialiasing; different boundary rule, so only interiors
are compared), scipy.ndimage.correlate for the numeric-kernel path, and exact
properties of cubic interpolation (constants and linear ramps are reproduced).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from zssr.resize import contributions, fix_scale_and_size, imresize

DATA = Path(__file__).parent / "data" / "sr"


def _ceil_shape(shape, scale) -> tuple[int, int]:
    """Oracle size: ``ceil(n * s)`` per axis with ``s`` the ratio the float stands for."""
    pair = scale if isinstance(scale, tuple) else (scale, scale)
    return tuple(int(np.ceil(Fraction(n) * Fraction(s).limit_denominator(1000)))
                 for n, s in zip(shape[-2:], pair, strict=True))


def _chw(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)).transpose(2, 0, 1)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


@pytest.mark.parametrize("name", ["bird", "head"])
@pytest.mark.parametrize("scale", [2, 3])
def test_downscale_matches_selfexsr_lr_files(name: str, scale: int) -> None:
    hr = _chw(DATA / f"{name}_HR.png")
    ref = _chw(DATA / f"{name}_SRF_{scale}_LR.png")
    h, w = hr.shape[1] - hr.shape[1] % scale, hr.shape[2] - hr.shape[2] % scale
    lr = imresize(torch.from_numpy(hr[:, :h, :w].astype(np.float64)), scale=1 / scale)
    assert lr.shape == ref.shape
    quantised = np.clip(np.round(lr.numpy()), 0, 255)
    assert _psnr(quantised, ref) >= 50.0


@pytest.mark.parametrize("scale", [0.5, 1 / 3, 2.0, 1.5])
def test_interior_matches_pil_bicubic(scale: float) -> None:
    rng = np.random.default_rng(1)
    x = ndimage.gaussian_filter(rng.random((60, 66)), 1.0).astype(np.float32)
    out_hw = _ceil_shape(x.shape, scale)
    ours = imresize(torch.from_numpy(x), scale=scale).numpy()
    pil = np.asarray(Image.fromarray(x, mode="F").resize(out_hw[::-1], Image.BICUBIC))
    m = int(np.ceil(3 * max(scale, 1 / scale)))  # stay clear of the boundary rules
    np.testing.assert_allclose(ours[m:-m, m:-m], pil[m:-m, m:-m], atol=2e-5)


@pytest.mark.parametrize(
    ("in_hw", "kwargs", "out_hw"),
    [
        ((37, 41), {"scale": 1.5}, (56, 62)),
        ((37, 41), {"scale": (2.0, 0.5)}, (74, 21)),
        ((37, 41), {"scale": (1 / 3, 1.25)}, (13, 52)),
        ((37, 41), {"output_shape": (20, 90)}, (20, 90)),
        ((37, 41), {"scale": 2.0, "output_shape": (73, 81)}, (73, 81)),
        ((10, 8), {"scale": (1.0, 0.5)}, (10, 4)),
    ],
)
def test_output_shapes(in_hw, kwargs, out_hw) -> None:
    x = torch.rand(2, 3, *in_hw, dtype=torch.float64)
    assert imresize(x, **kwargs).shape == (2, 3, *out_hw)


def test_fix_scale_and_size_follows_zssr() -> None:
    assert fix_scale_and_size((10, 7), scale=0.5, output_shape=None) == ((0.5, 0.5), (5, 4))
    assert fix_scale_and_size((10, 8), scale=None, output_shape=(20, 4)) == ((2.0, 0.5), (20, 4))
    assert fix_scale_and_size((9, 9), scale=2, output_shape=(17, 17)) == ((2.0, 2.0), (17, 17))
    assert fix_scale_and_size((50, 51), scale=2, output_shape=None)[1] == (100, 102)
    assert fix_scale_and_size((101, 100), scale=0.5, output_shape=None)[1] == (51, 50)
    assert fix_scale_and_size((101, 100), scale=(0.5, 0.25), output_shape=None)[1] == (51, 25)
    # the exact rule: 50 x 1.1 is 55 rows (MATLAB's float product 55.000000000000007 gives 56)
    assert fix_scale_and_size((50, 21), scale=(1.1, 9 / 7), output_shape=None)[1] == (55, 27)


@pytest.mark.parametrize("kernel", ["cubic", "linear", "box", "lanczos2", "lanczos3"])
@pytest.mark.parametrize("scale", [0.5, 1.5, 3.0, (2.0, 0.4)])
def test_constant_image_stays_constant(kernel: str, scale) -> None:
    x = torch.full((1, 23, 17), 0.37, dtype=torch.float64)
    out = imresize(x, scale=scale, kernel=kernel)
    torch.testing.assert_close(out, torch.full_like(out, 0.37), rtol=0, atol=1e-12)


def test_linear_ramp_round_trip() -> None:
    rows = torch.arange(40, dtype=torch.float64)
    cols = torch.arange(30, dtype=torch.float64)
    ramp = (0.5 * rows[:, None] - 0.25 * cols[None, :])[None]  # (1, 40, 30)
    up = imresize(ramp, scale=2.0)
    # cubic interpolation reproduces linear functions away from the mirrored edges
    pos_r = (torch.arange(80, dtype=torch.float64) + 0.5) / 2 - 0.5
    pos_c = (torch.arange(60, dtype=torch.float64) + 0.5) / 2 - 0.5
    expected = 0.5 * pos_r[:, None] - 0.25 * pos_c[None, :]
    torch.testing.assert_close(up[0, 4:-4, 4:-4], expected[4:-4, 4:-4], rtol=0, atol=1e-12)
    back = imresize(up, scale=0.5)
    torch.testing.assert_close(back[0, 4:-4, 4:-4], ramp[0, 4:-4, 4:-4], rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [0.5, 1 / 3, 2.0, 1.5])
def test_float32_agrees_with_float64(scale: float) -> None:
    x64 = torch.rand(3, 45, 38, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out64 = imresize(x64, scale=scale)
    out32 = imresize(x64.float(), scale=scale)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out64, rtol=0, atol=1e-5)


def test_leading_dims_and_determinism() -> None:
    x = torch.rand(2, 3, 31, 29, generator=torch.Generator().manual_seed(2))
    batch = imresize(x, scale=1.7)
    single = imresize(x[1, 2], scale=1.7)
    torch.testing.assert_close(batch[1, 2], single, rtol=0, atol=0)
    assert torch.equal(imresize(x, scale=1.7), batch)


def test_input_not_modified_and_identity_returns_copy() -> None:
    x = torch.rand(1, 8, 9)
    keep = x.clone()
    same = imresize(x, scale=1.0)
    assert torch.equal(same, x) and same.data_ptr() != x.data_ptr()
    imresize(x, scale=0.5)
    assert torch.equal(x, keep)


def test_contributions_are_normalised_compact_and_cached() -> None:
    w, idx = contributions(100, 25, 0.25, "cubic", True)
    assert w.shape == idx.shape and w.shape[0] == 25
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    assert idx.min() >= 0 and idx.max() < 100
    assert w.shape[1] <= 4 * 4 + 3  # 4 / scale taps plus the rounding margin
    assert not w.flags.writeable
    assert contributions(100, 25, 0.25, "cubic", True)[0] is w


def test_symmetric_and_replicate_boundaries() -> None:
    _, sym = contributions(5, 10, 2.0, "cubic", False, "symmetric")
    _, rep = contributions(5, 10, 2.0, "cubic", False, "replicate")
    # first output pixel sits at input 0.25 - 0.5: taps -2..1 -> mirror 1,0,0,1 / clamp 0,0,0,1
    assert sym[0].tolist()[:4] == [1, 0, 0, 1]
    assert rep[0].tolist()[:4] == [0, 0, 0, 1]


def _correlate_subsample(img: np.ndarray, k: np.ndarray, scale: float, out_hw) -> np.ndarray:
    """ZSSR's numeric_kernel with scipy (reference implementation)."""
    full = np.stack([ndimage.correlate(c, k) for c in img])  # default mode 'reflect'
    rows = np.round(np.linspace(0, img.shape[1] - 1 / scale, out_hw[0])).astype(int)
    cols = np.round(np.linspace(0, img.shape[2] - 1 / scale, out_hw[1])).astype(int)
    return full[:, rows[:, None], cols[None, :]]


@pytest.mark.parametrize(
    ("kshape", "scale", "hw"),
    [
        ((13, 13), 0.5, (50, 47)),  # rows evenly spaced (strided conv), cols not
        ((8, 8), 0.5, (50, 47)),  # even-sized kernel
        ((9, 6), 1 / 3, (50, 47)),
        ((11, 11), 0.4, (50, 47)),
        ((5, 7), 1 / 3, (48, 48)),  # both evenly spaced
        ((13, 13), 0.3, (3, 4)),  # kernel larger than the image; 1 output pixel
    ],
)
def test_numeric_kernel_matches_scipy_reference(kshape, scale, hw) -> None:
    rng = np.random.default_rng(3)
    img = rng.random((3, *hw))
    k = rng.random(kshape)
    k /= k.sum()
    out_hw = _ceil_shape(img.shape, scale)
    ref = _correlate_subsample(img, k, scale, out_hw)
    ours = imresize(torch.from_numpy(img), scale=scale, kernel=k).numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    ours_t = imresize(torch.from_numpy(img).float(), scale=scale, kernel=torch.from_numpy(k))
    np.testing.assert_allclose(ours_t.numpy(), ref, atol=1e-5)
    batch = imresize(torch.from_numpy(np.stack([img, img])), scale=scale, kernel=k)
    np.testing.assert_allclose(batch[1].numpy(), ref, atol=1e-12)


def test_numeric_kernel_with_scale_and_shape() -> None:
    img = np.random.default_rng(4).random((1, 21, 21))
    k = np.ones((3, 3)) / 9
    ours = imresize(torch.from_numpy(img), scale=0.5, output_shape=(10, 10), kernel=k).numpy()
    np.testing.assert_allclose(ours, _correlate_subsample(img, k, 0.5, (10, 10)), atol=1e-12)


@pytest.mark.parametrize(
    ("x", "kwargs", "exc", "match"),
    [
        (torch.rand(5, 5), {}, ValueError, "needs scale=, output_shape= or both"),
        (torch.rand(5, 5), {"scale": 0.0}, ValueError, "scale must be finite and > 0"),
        (torch.rand(5, 5), {"scale": float("nan")}, ValueError, "scale must be finite"),
        (torch.rand(5, 5), {"scale": (1.0, 2.0, 3.0)}, ValueError, "a pair"),
        (torch.rand(5, 5), {"output_shape": (0, 3)}, ValueError, "output_shape must be two"),
        (torch.rand(5, 5), {"output_shape": (3,)}, ValueError, "output_shape must be two"),
        (torch.ones(5, 5, dtype=torch.int64), {"scale": 2}, TypeError, "floating-point"),
        (torch.rand(5), {"scale": 2}, TypeError, "at least 2 dims"),
        (np.ones((5, 5)), {"scale": 2}, TypeError, "expects a torch.Tensor"),
        (torch.rand(0, 5), {"scale": 2}, ValueError, "empty image"),
        (torch.rand(5, 5), {"scale": 2, "kernel": "bilinear"}, ValueError, "unknown kernel"),
        (torch.rand(5, 5), {"scale": 2, "boundary": "wrap"}, ValueError, "unknown boundary"),
        (torch.rand(5, 5), {"scale": 2, "kernel": np.ones((3, 3))}, ValueError,
         "only downscales"),
        (torch.rand(5, 5), {"scale": 0.5, "kernel": np.ones(3)}, ValueError, "2-D array"),
        (torch.rand(5, 5), {"scale": 0.5, "kernel": np.ones((2, 2), dtype=bool)}, TypeError,
         "real numbers"),
    ],
)
def test_errors(x, kwargs, exc, match) -> None:
    with pytest.raises(exc, match=match):
        imresize(x, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    x = torch.rand(3, 64, 57, dtype=torch.float32, generator=torch.Generator().manual_seed(5))
    for scale in (0.5, 1.5, 2.0):
        cpu = imresize(x, scale=scale)
        gpu = imresize(x.cuda(), scale=scale)
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-5)
    k = np.full((5, 5), 1 / 25)
    torch.testing.assert_close(imresize(x.cuda(), scale=0.5, kernel=k).cpu(),
                               imresize(x, scale=0.5, kernel=k), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("hw", "scale", "boundary"), [
    ((7, 1000), 2.0, "symmetric"),      # a long axis: many banded runs
    ((1500, 5), 0.5, "replicate"),      # long rows axis, antialiased downscale
    ((130, 70), 1 / 3, "symmetric"),    # runs whose taps reach past the mirrored edge
    ((3, 4), 4.0, "symmetric"),         # fewer outputs than one run
])
def test_banded_products_equal_the_tap_sum(hw, scale, boundary) -> None:
    """Each axis is ``out[o] = sum_t w[o, t] * x[idx[o, t]]`` straight from ``contributions``."""
    x = torch.rand(2, *hw, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    out = imresize(x, scale=scale, boundary=boundary)
    ref = x.numpy()
    for axis in sorted((1, 2), key=lambda a: scale):  # as imresize: H first on ties
        n_out = out.shape[axis]
        w, idx = contributions(ref.shape[axis], n_out, scale, "cubic", True, boundary)
        ref = np.moveaxis((np.take(np.moveaxis(ref, axis, -1), idx, axis=-1) * w).sum(-1),
                          -1, axis)
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-12)
