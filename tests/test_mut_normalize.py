"""Tests that kill the mutants of ``zssr/normalize.py`` (run by ``bench/mutation.py``).

Every expected value is written out by hand or computed here with plain NumPy from the
policy definitions in the module docstring, never by ``Normalizer`` itself.
"""

from __future__ import annotations

import numpy as np
import pytest

from zssr.normalize import NormalizationError, Normalizer


def _params(n: Normalizer) -> tuple:
    return n.offset, n.span, n.lo, n.hi


def test_dtype_policy_uses_the_integer_range():
    x = np.array([[[10, 20], [30, 40]], [[0, 5], [6, 7]]], dtype=np.uint16)
    n = Normalizer.fit(x)  # default policy "dtype"
    assert _params(n) == ((0.0, 0.0), (65535.0, 65535.0), (0.0, 0.0), (65535.0, 65535.0))
    assert n.dtype == np.dtype(np.uint16)
    np.testing.assert_array_equal(n.forward(x), (x / 65535.0).astype(np.float32))
    lo, hi = n.clip_range
    np.testing.assert_array_equal(lo, [0, 0])
    np.testing.assert_array_equal(hi, [1, 1])


def test_dtype_policy_signed_integers():
    x = np.array([[[-5, 7]]], dtype=np.int8)
    n = Normalizer.fit(x, policy="dtype")
    assert _params(n) == ((-128.0,), (255.0,), (-128.0,), (127.0,))
    assert n.forward(x).tolist() == [[[np.float32(123 / 255), np.float32(135 / 255)]]]


def test_dtype_policy_value_range_wins():
    x = np.array([[[100, 4000]]], dtype=np.uint16)
    n = Normalizer.fit(x, policy="dtype", value_range=(0, 4095))
    assert _params(n) == ((0.0,), (4095.0,), (0.0,), (4095.0,))
    # the clip range is the declared one: 5000 working -> raw 4095
    assert n.inverse(np.array([[[2.0, -1.0]]], np.float32)).tolist() == [[[4095, 0]]]


def test_dtype_policy_float_uses_the_data_range():
    x = np.array([[[2.0, np.nan, 6.0, -np.inf]]], dtype=np.float32)
    n = Normalizer.fit(x, policy="dtype")
    assert _params(n) == ((2.0,), (4.0,), (2.0,), (6.0,))


def test_minmax_policy_per_band_with_mask():
    x = np.array([[[1, 50, 9]], [[3, 200, 4]]], dtype=np.uint8)
    mask = np.array([[True, False, True]])
    n = Normalizer.fit(x, policy="minmax", mask=mask)
    assert _params(n) == ((1.0, 3.0), (8.0, 1.0), (0.0, 0.0), (255.0, 255.0))
    lo, hi = n.clip_range
    np.testing.assert_allclose(lo, [-1 / 8, -3.0], rtol=1e-7)
    np.testing.assert_allclose(hi, [254 / 8, 252.0], rtol=1e-7)
    assert lo.dtype == np.float32 and hi.dtype == np.float32


def test_percentile_policy_is_numpy_percentile_of_valid_pixels():
    rng = np.random.default_rng(0)
    x = rng.normal(10.0, 3.0, (2, 20, 30)).astype(np.float32)
    mask = rng.random((20, 30)) > 0.3
    n = Normalizer.fit(x, policy="percentile", percentiles=(5.0, 90.0), mask=mask)
    for b in range(2):
        v = x[b][mask].astype(np.float64)
        p5, p90 = np.percentile(v, [5.0, 90.0])
        assert n.offset[b] == pytest.approx(p5, abs=0)
        assert n.span[b] == pytest.approx(p90 - p5, rel=1e-12)
        assert (n.lo[b], n.hi[b]) == (float(v.min()), float(v.max()))


def test_percentile_default_is_half_a_percent():
    x = np.arange(1001, dtype=np.float64).reshape(1, 1, 1001)
    n = Normalizer.fit(x, policy="percentile")
    assert n.offset == (5.0,) and n.span == (990.0,)  # 0.5 % and 99.5 % of 0..1000


def test_none_policy_is_the_identity():
    x = np.array([[[0.25, 3.0]]], dtype=np.float32)
    n = Normalizer.fit(x, policy="none")
    assert _params(n) == ((0.0,), (1.0,), (0.25,), (3.0,))
    np.testing.assert_array_equal(n.forward(x), x)


def test_constant_band_is_shifted_only():
    x = np.full((1, 2, 2), 7.0, np.float32)
    n = Normalizer.fit(x, policy="minmax")
    assert n.offset == (7.0,) and n.span == (1.0,)
    x = np.full((1, 2, 2), 7, np.uint8)
    n = Normalizer.fit(x, policy="dtype", value_range=(3, 3))
    assert n.span == (1.0,)


def test_inverse_rounds_clips_and_keeps_the_dtype():
    x = np.array([[[0, 100, 255]]], dtype=np.uint8)
    n = Normalizer.fit(x, policy="minmax")  # offset 0, span 255
    work = np.array([[[100.4 / 255, 100.6 / 255, 1.5]]], np.float32)
    out = n.inverse(work)
    assert out.dtype == np.uint8 and out.tolist() == [[[100, 101, 255]]]
    neg = n.inverse(np.array([[[-0.5, 0.0, 0.5]]], np.float32))
    assert neg.tolist() == [[[0, 0, 128]]]  # rint(127.5) = 128 (half to even)


def test_inverse_float_is_not_rounded():
    x = np.array([[[0.0, 10.0]]], dtype=np.float32)
    n = Normalizer.fit(x, policy="minmax")
    out = n.inverse(np.array([[[0.123, 0.5]]], np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[[1.23, 5.0]]], rtol=1e-6)


def test_round_trip_is_exact_for_16_bit():
    x = np.array([[[0, 1, 32767, 65534, 65535]]], dtype=np.uint16)
    n = Normalizer.fit(x)
    np.testing.assert_array_equal(n.inverse(n.forward(x)), x)


@pytest.mark.parametrize(("image", "kwargs", "match"), [
    (np.zeros((2, 2)), {}, r"^expected a \(bands, rows, cols\) array, got shape \(2, 2\)$"),
    (np.zeros((1, 2, 2), complex), {},
     r"^unsupported dtype complex128; expected an integer or real floating dtype$"),
    (np.zeros((1, 2, 2), bool), {}, r"^unsupported dtype bool"),
    (np.zeros((2, 2, 2)), {"mask": np.zeros((2, 2), bool)}, r"^band 1 has no valid pixels$"),
    (np.stack([np.ones((2, 2)), np.full((2, 2), np.nan)]), {}, r"^band 2 has no valid pixels$"),
    (np.zeros((1, 2, 2)), {"policy": "zscore"},
     r"^unknown normalisation policy 'zscore'; allowed: dtype, percentile, minmax, none$"),
])
def test_fit_errors(image, kwargs, match):
    with pytest.raises(NormalizationError, match=match):
        Normalizer.fit(image, **kwargs)


def test_band_count_mismatch():
    n = Normalizer.fit(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(NormalizationError, match=r"^normaliser fitted for 2 bands, got 3$"):
        n.forward(np.zeros((3, 2, 2), np.uint8))
    with pytest.raises(NormalizationError, match=r"^normaliser fitted for 2 bands, got 1$"):
        n.inverse(np.zeros((1, 2, 2), np.float32))


def test_a_0_1_integer_mask_selects_pixels_not_indices():
    x = np.array([[[1.0, 50.0, 9.0, 4.0]]], dtype=np.float32)
    mask = np.array([[1, 0, 1, 0]], dtype=np.uint8)  # as read from a mask band
    n = Normalizer.fit(x, policy="minmax", mask=mask)
    assert n.offset == (1.0,) and n.span == (8.0,)  # pixels 1 and 9, not rows 0/1 of x[0]


def test_a_span_below_one_is_kept():
    x = np.array([[[0.2, 0.7, 0.45]]], dtype=np.float64)
    n = Normalizer.fit(x, policy="minmax")
    assert n.offset == (0.2,) and n.span == pytest.approx((0.5,), rel=1e-15)
    np.testing.assert_allclose(n.forward(x), [[[0.0, 1.0, 0.5]]], atol=1e-7)


def test_inverse_adds_the_offset_back():
    x = np.array([[[100, 150, 200]]], dtype=np.uint8)
    n = Normalizer.fit(x, policy="minmax")  # offset 100, span 100
    out = n.inverse(np.array([[[0.0, 0.25, 1.0]]], np.float32))
    assert out.tolist() == [[[100, 125, 200]]]
