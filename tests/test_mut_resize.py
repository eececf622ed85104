"""Tests that kill the mutants of ``zssr/resize.py`` (run by ``bench/mutation.py``).

tests/test_resize.py checks the numbers against MATLAB; these pin each error message
whole (a partial ``match=`` lets a mangled message pass) and the size rules, with
expected values written out by hand.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from zssr.resize import fix_scale_and_size, imresize

CASES = [
    (torch.rand(5, 5), {}, ValueError,
     "imresize needs scale=, output_shape= or both; got neither"),
    (torch.rand(5, 5), {"scale": 0.0}, ValueError, "scale must be finite and > 0, got 0.0"),
    (torch.rand(5, 5), {"scale": (1.0, -2.0)}, ValueError,
     "scale must be finite and > 0, got (1.0, -2.0)"),
    (torch.rand(5, 5), {"scale": (1.0, 2.0, 3.0)}, ValueError,
     "scale must be a number or a pair (H, W), got (1.0, 2.0, 3.0)"),
    (torch.rand(5, 5), {"output_shape": (0, 3)}, ValueError,
     "output_shape must be two integers >= 1 (H, W), got (0, 3)"),
    (torch.rand(5, 5), {"output_shape": (2.5, 3)}, ValueError,
     "output_shape must be two integers >= 1 (H, W), got (2.5, 3)"),
    (torch.ones(5, 5, dtype=torch.int64), {"scale": 2}, TypeError,
     "imresize expects a floating-point tensor with at least 2 dims (..., H, W), got dtype "
     "torch.int64 and shape (5, 5); convert with x.float()"),
    (np.ones((5, 5)), {"scale": 2}, TypeError, "imresize expects a torch.Tensor, got ndarray"),
    (torch.rand(0, 5), {"scale": 2}, ValueError,
     "imresize got an empty image of shape (0, 5)"),
    (torch.rand(5, 5), {"scale": 2, "kernel": "bilinear"}, ValueError,
     "unknown kernel 'bilinear'; choose one of cubic, linear, box, lanczos2, lanczos3"),
    (torch.rand(5, 5), {"scale": 2, "boundary": "wrap"}, ValueError,
     "unknown boundary 'wrap'; choose 'symmetric' or 'replicate'"),
    (torch.rand(5, 5), {"scale": (0.5, 2), "kernel": np.ones((3, 3))}, ValueError,
     "a numeric kernel only downscales (scale <= 1); got scale (0.5, 2.0). "
     "Upscale with a named kernel such as 'cubic'"),
    (torch.rand(5, 5), {"scale": 0.5, "kernel": np.ones(3)}, ValueError,
     "a numeric kernel must be a non-empty 2-D array, got shape (3,)"),
    (torch.rand(5, 5), {"scale": 0.5, "kernel": np.ones((2, 2), dtype=bool)}, TypeError,
     "a numeric kernel must hold real numbers, got dtype torch.bool"),
]


@pytest.mark.parametrize(("x", "kwargs", "exc", "message"), CASES)
def test_whole_error_messages(x, kwargs, exc, message):
    with pytest.raises(exc, match=f"^{re.escape(message)}$"):
        imresize(x, **kwargs)


def test_sizes_by_hand():
    assert fix_scale_and_size((10, 7), scale=(1.5, 2.0), output_shape=None)[1] == (15, 14)
    assert fix_scale_and_size((3, 3), scale=(4 / 3, 0.5), output_shape=None)[1] == (4, 2)
    assert fix_scale_and_size((10, 7), scale=0.5, output_shape=None) == ((0.5, 0.5), (5, 4))
    assert fix_scale_and_size((10, 8), scale=None, output_shape=(20, 4)) == ((2.0, 0.5),
                                                                             (20, 4))
    assert fix_scale_and_size((10, 8), scale=2, output_shape=(19, 17)) == ((2.0, 2.0),
                                                                          (19, 17))
    shape = fix_scale_and_size((10, 8), scale=None, output_shape=(20.0, 4))[1]
    assert all(type(v) is int for v in shape)
    assert fix_scale_and_size((9, 7), scale=(0.5, 1 / 3), output_shape=None)[1] == (5, 3)


def test_unit_scale_is_a_copy():
    x = torch.rand(2, 5, 6)
    y = imresize(x, scale=1.0)
    assert torch.equal(x, y) and y is not x
    y[0, 0, 0] = 5.0
    assert x[0, 0, 0] != 5.0


# ----------------------------------------------------------------------------- kernels


def _keys(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel, written per piece."""
    out = np.zeros_like(x)
    for i, t in enumerate(np.abs(x)):
        if t <= 1:
            out[i] = (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1
        elif t < 2:
            out[i] = a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a
    return out


X = np.concatenate([np.linspace(-3.5, 3.5, 141), [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]])


def test_kernel_functions_and_widths():
    from zssr.resize import KERNELS

    assert {k: w for k, (_, w) in KERNELS.items()} == {
        "cubic": 4.0, "linear": 2.0, "box": 1.0, "lanczos2": 4.0, "lanczos3": 6.0}
    np.testing.assert_allclose(KERNELS["cubic"][0](X), _keys(X), atol=1e-12)
    np.testing.assert_allclose(KERNELS["linear"][0](X), np.maximum(0, 1 - np.abs(X)),
                               atol=1e-12)
    np.testing.assert_array_equal(KERNELS["box"][0](X), ((X >= -0.5) & (X < 0.5)) * 1.0)
    for a in (2, 3):
        ref = np.where(np.abs(X) < a, np.sinc(X) * np.sinc(X / a), 0.0)
        np.testing.assert_allclose(KERNELS[f"lanczos{a}"][0](X), ref, atol=2e-6)


# ----------------------------------------------------------------------------- boundaries


@pytest.mark.parametrize("boundary", ["symmetric", "replicate"])
@pytest.mark.parametrize(("scale", "kernel"), [(2.0, "cubic"), (0.5, "cubic"),
                                                (3.0, "lanczos3"), (0.5, "linear")])
def test_boundary_rule_equals_explicit_padding(boundary, scale, kernel):
    """Resizing equals resizing an image padded by NumPy in that mode, then cropping:
    with 8 px of padding no tap reaches the padded image's own border."""
    x = torch.from_numpy(np.random.default_rng(3).random((2, 10, 12)))
    p = 8
    mode = "symmetric" if boundary == "symmetric" else "edge"
    padded = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (p, p), (p, p)), mode=mode))
    ref = imresize(padded, scale=scale, kernel=kernel)
    q = int(p * scale)
    ref = ref[..., q:q + int(10 * scale), q:q + int(12 * scale)]
    got = imresize(x, scale=scale, kernel=kernel, boundary=boundary)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)


def test_the_boundary_rules_differ():
    x = torch.arange(20.0, dtype=torch.float64).reshape(4, 5) ** 2
    assert not torch.allclose(imresize(x, scale=2.0, boundary="replicate"),
                              imresize(x, scale=2.0, boundary="symmetric"))


# ----------------------------------------------------------------------------- numeric kernels


def _correlate_subsample(x: np.ndarray, k: np.ndarray, scale, out) -> np.ndarray:
    from scipy.ndimage import correlate

    h, w = x.shape
    full = correlate(x, k, mode="reflect")  # scipy 'reflect' = half-sample symmetric
    rows = np.round(np.linspace(0, h - 1 / scale[0], out[0])).astype(int)
    cols = np.round(np.linspace(0, w - 1 / scale[1], out[1])).astype(int)
    return full[np.ix_(rows, cols)]


@pytest.mark.parametrize(("shape", "scale", "ksize"), [
    ((12, 10), (0.5, 0.5), (5, 5)),    # evenly spaced: strided convolution
    ((12, 10), (0.4, 0.3), (7, 3)),    # uneven positions: gather
    ((9, 8), (1.0, 0.5), (5, 4)),      # scale 1 on one axis is allowed
    ((10, 10), (0.5, 0.25), (1, 1)),   # a 1 x 1 kernel
    ((8, 9), (0.5, 1.0), (4, 5)),      # ... and on the other axis
])
def test_numeric_kernel_is_correlate_then_subsample(shape, scale, ksize):
    rng = np.random.default_rng(7)
    x = rng.random(shape)
    k = rng.random(ksize)
    k /= k.sum()
    out = tuple(int(np.ceil(n * s - 1e-9)) for n, s in zip(shape, scale, strict=True))
    got = imresize(torch.from_numpy(x), scale=scale, kernel=k)
    assert tuple(got.shape) == out
    np.testing.assert_allclose(got.numpy(), _correlate_subsample(x, k, scale, out), atol=1e-12)
    got32 = imresize(torch.from_numpy(x).float(), scale=scale, kernel=torch.from_numpy(k))
    np.testing.assert_allclose(got32.numpy(), _correlate_subsample(x, k, scale, out), atol=1e-5)


def test_numeric_kernel_refuses_upscaling_on_either_axis():
    for scale in ((2.0, 0.5), (0.5, 1.5)):
        with pytest.raises(ValueError, match="a numeric kernel only downscales"):
            imresize(torch.rand(6, 6), scale=scale, kernel=np.ones((3, 3)) / 9)


def test_integer_numeric_kernel():
    x = torch.rand(8, 8, dtype=torch.float64)
    ref = imresize(x, scale=0.5, kernel=np.ones((3, 3)) / 9)
    got = imresize(x, scale=0.5, kernel=np.ones((3, 3), dtype=np.int64)) / 9
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- passes


def test_axis_order_smaller_scale_first():
    """One pass per axis, the smaller scale first (bitwise: the order rounds differently)."""
    x = torch.rand(2, 9, 11, generator=torch.Generator().manual_seed(1))
    for sy, sx in ((2.0, 0.5), (0.5, 2.0), (3.0, 1.5)):
        first = (0, sy) if sy <= sx else (1, sx)
        one = imresize(x, scale=(first[1], 1.0) if first[0] == 0 else (1.0, first[1]))
        two = imresize(one, scale=(1.0, sx) if first[0] == 0 else (sy, 1.0))
        assert torch.equal(imresize(x, scale=(sy, sx)), two)


def test_unit_axes():
    x = torch.rand(3, 5, 7)
    assert imresize(x, scale=(1.0, 2.0)).shape == (3, 5, 14)
    assert imresize(x, scale=(2.0, 1.0)).shape == (3, 10, 7)
    # a scale other than 1 with an unchanged size still resamples
    y = imresize(x, scale=1.2, output_shape=(5, 7))
    assert y.shape == x.shape and not torch.allclose(y, x)
    one = torch.rand(1, 6)  # a single row is an image
    assert imresize(one, scale=2.0).shape == (2, 12)


def test_size_rule_names_the_scale():
    with pytest.raises(ValueError, match=r"^scale must be finite and > 0, got 0$"):
        fix_scale_and_size((3, 3), scale=0, output_shape=None)
    with pytest.raises(ValueError, match=r"^scale must be finite and > 0, got -1$"):
        fix_scale_and_size((3, 3), scale=-1, output_shape=None)
    with pytest.raises(ValueError, match=r"^scale 1.2345678 is not a ratio of small integers"):
        fix_scale_and_size((3, 3), scale=1.2345678, output_shape=None)
    with pytest.raises(ValueError, match=r"^1 / scale 1.2345678 is not a ratio of small"):
        fix_scale_and_size((3, 3), scale=1 / 1.2345678, output_shape=None)
    # with an output shape the scale only sets the weights: any positive float will do
    assert fix_scale_and_size((3, 3), scale=1.2345678, output_shape=(4, 4))[1] == (4, 4)


def test_unit_scale_axis_is_not_touched():
    """With scale 1 an axis is skipped, not resampled by near-identity weights (lanczos
    weights at whole-pixel offsets are ~1e-8, not 0): rows stay independent, bitwise."""
    x = torch.rand(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = x.clone()
    y[0] += 1.0
    a = imresize(x, scale=(1.0, 2.0), kernel="lanczos3")
    b = imresize(y, scale=(1.0, 2.0), kernel="lanczos3")
    assert torch.equal(a[1:], b[1:]) and not torch.equal(a[0], b[0])


def test_scale_one_with_another_size_resamples_that_axis():
    x = torch.rand(5, 6)
    assert imresize(x, scale=1.0, output_shape=(7, 6)).shape == (7, 6)
    assert imresize(x, output_shape=(1, 3)).shape == (1, 3)  # a size of 1 is allowed


def test_boundary_indices_directly():
    """Called directly too: imresize caches its weights (lru_cache), so a defect here can
    hide behind weights computed earlier in the same process."""
    from zssr.resize import _boundary_indices

    idx = np.arange(-9, 14)
    for n in (1, 4):
        np.testing.assert_array_equal(_boundary_indices(idx, n, "replicate"),
                                      [min(max(i, 0), n - 1) for i in idx])
        ext = np.pad(np.arange(n), 20, mode="symmetric")
        np.testing.assert_array_equal(_boundary_indices(idx, n, "symmetric"), ext[idx + 20])
