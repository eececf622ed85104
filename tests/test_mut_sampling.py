"""Tests that kill the mutants of ``zssr/sampling.py`` (run by ``bench/mutation.py``).

Random draws are scripted (:class:`ScriptedRng`), so each father is a known function of
the image.  Expected values come from NumPy here: ``np.pad(mode="symmetric")`` for the
mirror extension, ``np.rot90``/``np.flip`` for the dihedral group, and for affine fathers
a *coordinate image* (odc-geo style): bicubic resampling (PyTorch's a = -0.75 cubic)
reproduces a linear function to within 0.05 px, so each father pixel holds its own
source position,
which is written out from the augmentation's definition (scale, aspect, reflection,
rotation, shear about the crop centre).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zssr.config import TrainConfig
from zssr.resize import imresize
from zssr.sampling import (
    ArrayCropSource,
    FatherSampler,
    Window,
    _mirror_index,
    dihedral,
    mirror_window,
    rescale_window,
    undo_dihedral,
)

CPU = torch.device("cpu")


class ScriptedRng:
    """Stands in for ``np.random.Generator``: each method returns its next scripted value."""

    def __init__(self, **values: list) -> None:
        self.values = {k: list(v) for k, v in values.items()}
        self.calls: list[tuple] = []

    def _next(self, name: str, *args):
        self.calls.append((name, *args))
        return self.values[name].pop(0)

    def random(self):
        return self._next("random")

    def integers(self, lo, hi):
        return self._next("integers", lo, hi)

    def standard_normal(self):
        return self._next("standard_normal")

    def uniform(self, lo, hi):
        return self._next("uniform", lo, hi)


def _sampler(image, rng, *, mask=None, clip=(0.0, 1.0), **train) -> FatherSampler:
    cfg = TrainConfig(**train)
    c = image.shape[0]
    return FatherSampler(ArrayCropSource(image, mask), cfg, rng=rng,
                         clip_range=(torch.full((c,), clip[0]), torch.full((c,), clip[1])),
                         device=CPU)


def test_mirror_index_is_numpy_symmetric_padding():
    for n in (1, 2, 5):
        ext = np.pad(np.arange(n), 4 * n, mode="symmetric")  # ext[i + 4n] = mirror of i
        idx = np.arange(-4 * n, 5 * n)
        np.testing.assert_array_equal(_mirror_index(idx, n), ext[idx + 4 * n])


def test_mirror_window_indices():
    rows, cols = mirror_window(Window(-2, 3, 4, 5), (3, 6))
    assert rows.tolist() == [1, 0, 0, 1] and cols.tolist() == [3, 4, 5, 5, 4]


def test_crop_source_reads_the_mirror_extended_image():
    img = np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5)
    mask = np.ones((4, 5), np.uint8)
    mask[1, 2] = 0
    src = ArrayCropSource(img, mask)
    assert src.channels == 2 and src.shape == (4, 5)
    pix, valid = src(Window(-3, 2, 9, 7))
    ext = np.pad(img, ((0, 0), (3, 2), (0, 4)), mode="symmetric")
    np.testing.assert_array_equal(pix, ext[:, 0:9, 2:9])
    ext_m = np.pad(mask.astype(bool), ((3, 2), (0, 4)), mode="symmetric")
    np.testing.assert_array_equal(valid, ext_m[0:9, 2:9])
    assert valid.dtype == bool and pix.dtype == np.float32
    _, all_valid = ArrayCropSource(img)(Window(0, 0, 4, 5))
    assert all_valid.all() and all_valid.shape == (4, 5)
    with pytest.raises(ValueError, match=r"^expected \(C, H, W\), got shape \(4, 5\)$"):
        ArrayCropSource(img[0])
    for dtype in (np.float64, np.uint8):  # served as float32 working units
        pix, _ = ArrayCropSource(img.astype(dtype))(Window(0, 0, 2, 2))
        assert pix.dtype == np.float32


def test_crop_source_rescales():
    img = np.random.default_rng(0).random((1, 8, 8)).astype(np.float32)
    pix, valid = ArrayCropSource(img)(Window(0, 0, 8, 8), scale=0.5)
    ref = imresize(torch.from_numpy(img), scale=0.5, output_shape=(4, 4)).numpy()
    np.testing.assert_allclose(pix, ref, atol=1e-6)
    assert valid.shape == (4, 4) and valid.all()


def test_rescale_window_sizes_and_validity():
    pix = np.ones((1, 10, 10), np.float32)
    valid = np.ones((10, 10), bool)
    same = rescale_window(pix, valid, Window(0, 0, 10, 10), 1.0)
    assert same[0] is pix and same[1] is valid
    p, v = rescale_window(pix, valid, Window(0, 0, 10, 10), 0.35)  # round(3.5) = 4
    assert p.shape == (1, 4, 4) and v.shape == (4, 4) and v.all()
    ramp = np.linspace(0, 1, 100, dtype=np.float32).reshape(1, 10, 10)
    p, v = rescale_window(ramp, valid, Window(0, 0, 10, 10), 0.33)  # round(3.3) = 3, not 4
    ref = imresize(torch.from_numpy(ramp), scale=0.33, output_shape=(3, 3)).numpy()
    np.testing.assert_allclose(p, ref, rtol=0, atol=1e-6)  # the scale, not 3 / 10
    assert not np.allclose(p, imresize(torch.from_numpy(ramp), output_shape=(3, 3)).numpy(),
                           rtol=0, atol=1e-4)
    hole = valid.copy()
    hole[4, 4] = False
    mask_ref = imresize(torch.from_numpy(hole[None].astype(np.float32)), scale=0.33,
                        output_shape=(3, 3)).numpy()[0] > 0.999
    np.testing.assert_array_equal(rescale_window(ramp, hole, Window(0, 0, 10, 10), 0.33)[1],
                                  mask_ref)
    assert not mask_ref.all() and mask_ref.any()
    p, v = rescale_window(pix[:, :1, :3], valid[:1, :3], Window(0, 0, 1, 3), 0.3)
    assert p.shape == (1, 1, 1)  # never below one pixel
    hole = valid.copy()
    hole[0, 0] = False
    p, v = rescale_window(pix, hole, Window(0, 0, 10, 10), 0.5)
    assert not v[0, 0] and v[4, 4] and v[0, 4]  # invalid where the hole is under the pixel


@pytest.mark.parametrize("k", range(8))
def test_dihedral_is_rot90_then_flip(k):
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    ref = np.rot90(x, k % 4, axes=(1, 2))
    ref = ref[..., ::-1] if k >= 4 else ref
    np.testing.assert_array_equal(dihedral(torch.from_numpy(x), k).numpy(), ref)
    np.testing.assert_array_equal(undo_dihedral(torch.from_numpy(np.ascontiguousarray(ref)),
                                                k).numpy(), x)


def test_modes_follow_the_probabilities():
    img = np.zeros((1, 20, 20), np.float32)
    # p0 = 0.05, p1 = 0.45: u < 0.05 leave, u < 0.5 no_interp, else affine
    s = _sampler(img, ScriptedRng(random=[0.0, 0.0499, 0.05, 0.4999, 0.5, 0.99]))
    assert [s._mode() for _ in range(6)] == ["leave_as_is", "leave_as_is", "no_interp",
                                             "no_interp", "affine", "affine"]


def test_leave_as_is_is_a_plain_crop():
    img = np.arange(30 * 25, dtype=np.float32).reshape(1, 30, 25) / 1000
    rng = ScriptedRng(random=[0.01], integers=[7, 4])
    f = _sampler(img, rng, crop_size=10)._draw()
    assert f.mode == "leave_as_is"
    assert rng.calls[1:] == [("integers", 0, 21), ("integers", 0, 16)]
    np.testing.assert_array_equal(f.pixels.numpy(), img[:, 7:17, 4:14])
    assert f.valid.dtype == torch.bool and bool(f.valid.all())


@pytest.mark.parametrize("k", [0, 3, 5])
def test_no_interp_applies_a_dihedral_transform(k):
    img = np.random.default_rng(1).random((2, 12, 16)).astype(np.float32)
    mask = np.ones((12, 16), bool)
    mask[3, 5] = False
    rng = ScriptedRng(random=[0.3], integers=[2, 6, k])
    f = _sampler(img, rng, mask=mask, crop_size=10)._draw()
    assert f.mode == "no_interp" and rng.calls[-1] == ("integers", 0, 8)
    crop, crop_m = img[:, 2:12, 6:16], mask[2:12, 6:16]
    ref = np.rot90(crop, k % 4, axes=(1, 2))
    ref_m = np.rot90(crop_m, k % 4)
    if k >= 4:
        ref, ref_m = ref[..., ::-1], ref_m[..., ::-1]
    np.testing.assert_array_equal(f.pixels.numpy(), ref)
    np.testing.assert_array_equal(f.valid.numpy(), ref_m)


def test_no_rotation_keeps_the_crop():
    img = np.random.default_rng(2).random((1, 12, 12)).astype(np.float32)
    rng = ScriptedRng(random=[0.3], integers=[1, 2])
    f = _sampler(img, rng, crop_size=8, augment_allow_rotation=False)._draw()
    np.testing.assert_array_equal(f.pixels.numpy(), img[:, 1:9, 2:10])


def test_crop_is_limited_by_a_small_image():
    img = np.zeros((1, 6, 40), np.float32)
    s = _sampler(img, ScriptedRng(random=[0.01], integers=[0, 3]), crop_size=16)
    assert s.crop == (6, 16)
    f = s._draw()
    assert tuple(f.pixels.shape) == (1, 6, 16)


def _coordinates(rows: int, cols: int) -> np.ndarray:
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return np.stack([r, c]).astype(np.float32)


def _expected_positions(a: np.ndarray, ch: int, cw: int, cx: float, cy: float):
    """Source pixel indices (row, col) of each father pixel: inverse map about the centre."""
    ys = np.arange(ch) + 0.5 - ch / 2
    xs = np.arange(cw) + 0.5 - cw / 2
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    inv = np.linalg.inv(a)
    x = inv[0, 0] * gx + inv[0, 1] * gy + cx - 0.5
    y = inv[1, 0] * gx + inv[1, 1] * gy + cy - 0.5
    return y, x


@pytest.mark.parametrize(("scale", "diff", "flip", "theta", "shx", "shy", "allow"), [
    (0.8, 0.1, 1.0, 0.3, 0.05, -0.02, True),
    (0.6, -0.2, -1.0, 0.9, 0.0, 0.1, True),
    (0.9, 0.0, 1.0, 0.0, 0.1, 0.0, False),
])
def test_affine_father_samples_the_mapped_positions(scale, diff, flip, theta, shx, shy, allow):
    rows, cols, crop = 80, 90, 16
    img = _coordinates(rows, cols)
    cfg = dict(crop_size=crop, augment_min_scale=0.5, augment_max_scale=1.0,
               augment_scale_diff_sigma=0.25, augment_shear_sigma=0.1,
               augment_allow_rotation=allow)
    u_scale = (scale - 0.5) / 0.5
    normals = [diff / 0.25] + ([flip] if allow else []) + [shx / 0.1, shy / 0.1]
    randoms = [0.9, u_scale] + ([theta / (2 * math.pi)] if allow else [])
    rng = ScriptedRng(random=randoms, standard_normal=normals, uniform=[37.25, 41.5])
    s = _sampler(img, rng, clip=(-1e3, 1e3), **cfg)
    f = s._draw()
    assert f.mode == "affine" and tuple(f.pixels.shape) == (2, crop, crop)
    reflect = flip if allow else 1.0
    th = theta if allow else 0.0
    sx, sy = reflect * (scale + diff / 2), scale - diff / 2
    rot = np.array([[math.cos(th), math.sin(th)], [-math.sin(th), math.cos(th)]])
    a = np.array([[1.0, shx], [shy, 1.0]]) @ rot @ np.diag([sx, sy])
    np.testing.assert_allclose(s.rng.values["uniform"], [])  # both centre draws used
    cx, cy = 37.25, 41.5
    # the centre is drawn inside [e, n - e], e the half-extent of the crop's pre-image
    corners = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]]).T * crop / 2
    pre = np.linalg.inv(a) @ corners
    ex, ey = np.abs(pre[0]).max(), np.abs(pre[1]).max()
    uni = [c for c in rng.calls if c[0] == "uniform"]
    np.testing.assert_allclose([c[1:] for c in uni], [(ex, cols - ex), (ey, rows - ey)])
    y, x = _expected_positions(a, crop, crop, cx, cy)
    np.testing.assert_allclose(f.pixels[0].numpy(), y, atol=0.06)
    np.testing.assert_allclose(f.pixels[1].numpy(), x, atol=0.06)
    assert bool(f.valid.all())


def test_affine_father_is_clipped_and_masked():
    rows = cols = 60
    img = _coordinates(rows, cols)
    mask = np.ones((rows, cols), bool)
    mask[:, :30] = False  # left half invalid
    rng = ScriptedRng(random=[0.9, 1.0, 0.0], standard_normal=[0.0, 1.0, 0.0, 0.0],
                      uniform=[30.0, 30.0])
    s = _sampler(img, rng, mask=mask, clip=(0.0, 29.5), crop_size=10)
    f = s._draw()
    # scale 1, no rotation: father pixel (i, j) is source (25 + i, 25 + j)
    assert float(f.pixels.max()) == 29.5 and float(f.pixels.min()) == 25.0
    assert f.valid[:, :5].sum() == 0 and bool(f.valid[:, 5:].all())


def test_affine_centre_when_the_crop_does_not_fit():
    img = _coordinates(12, 12)
    rng = ScriptedRng(random=[0.9, 1.0, 0.0], standard_normal=[0.0, 1.0, 0.0, 0.0])
    s = _sampler(img, rng, crop_size=12, clip=(-1e3, 1e3))
    f = s._draw()  # pre-image as large as the image: centred, no uniform draw
    assert not [c for c in rng.calls if c[0] == "uniform"]
    y, x = _expected_positions(np.eye(2), 12, 12, 6.0, 6.0)
    np.testing.assert_allclose(f.pixels[0, 3:-3, 3:-3].numpy(), y[3:-3, 3:-3], atol=1e-4)
    np.testing.assert_allclose(f.pixels[1, 3:-3, 3:-3].numpy(), x[3:-3, 3:-3], atol=1e-4)


def test_aspect_scale_has_a_floor():
    s = _sampler(np.zeros((1, 20, 20), np.float32),
                 ScriptedRng(random=[0.0, 0.0], standard_normal=[40.0, 1.0, 0.0, 0.0]),
                 augment_min_scale=0.5, augment_scale_diff_sigma=0.25)
    a = s._affine_matrix()  # diff = 10: sx = 0.5 + 5, sy = max(0.5 - 5, 1e-3)
    rot = np.array([[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(a, rot @ np.diag([5.5, 1e-3]))


def test_sample_retries_until_enough_valid_pixels():
    img = np.zeros((1, 10, 20), np.float32)
    mask = np.zeros((10, 20), bool)
    mask[:, 10:] = True
    # leave_as_is crops of 10 x 10 at col 0 (0 % valid), 5 (50 %), 10 (100 %)
    rng = ScriptedRng(random=[0.0] * 3, integers=[0, 0, 0, 5, 0, 10])
    f = _sampler(img, rng, mask=mask, crop_size=10, min_valid_fraction=0.5).sample()
    assert f.valid.float().mean().item() == 0.5 and rng.values["integers"] == [0, 10]
    rng = ScriptedRng(random=[0.0] * 3, integers=[0, 0, 0, 1, 0, 2])
    f = _sampler(img, rng, mask=mask, crop_size=10, min_valid_fraction=0.5).sample(max_tries=3)
    assert rng.values["integers"] == [] and f.valid.float().mean().item() == pytest.approx(0.2)


def test_pyramid_validation_and_pick():
    base = ArrayCropSource(np.zeros((1, 10, 10), np.float32))
    big = ArrayCropSource(np.ones((1, 20, 20), np.float32))
    bigger = ArrayCropSource(np.full((1, 30, 30), 2.0, np.float32))
    clip = (torch.zeros(1), torch.ones(1))
    cfg = TrainConfig(augment_min_scale=0.5, augment_max_scale=1.0)
    with pytest.raises(ValueError, match=r"^pyramid scales must increase above 1 with 1 "
                                         r"bands, got 1\.0 after 1\.0$"):
        FatherSampler(base, cfg, rng=ScriptedRng(), clip_range=clip, device=CPU,
                      pyramid=[(big, 1.0)])
    two = ArrayCropSource(np.zeros((2, 20, 20), np.float32))
    with pytest.raises(ValueError, match="with 1 bands, got 2.0 after 1.0"):
        FatherSampler(base, cfg, rng=ScriptedRng(), clip_range=clip, device=CPU,
                      pyramid=[(two, 2.0)])
    # top = 1.0 * 3 = 3: scale = u * 2.5 + 0.5
    rng = ScriptedRng(random=[0.0, 0.3, 0.5, 1.0])
    s = FatherSampler(base, cfg, rng=rng, clip_range=clip, device=CPU,
                      pyramid=[(big, 2.0), (bigger, 3.0)])
    assert s._pick("leave_as_is") == (base, 1.0)
    src, rel = s._pick("affine")  # scale 0.5: the image itself
    assert src is base and rel == pytest.approx(0.5)
    src, rel = s._pick("affine")  # 0.3 * 2.5 + 0.5 = 1.25: the x2 version
    assert src is big and rel == pytest.approx(1.25 / 2)
    src, rel = s._pick("affine")  # 1.75: x2
    assert src is big and rel == pytest.approx(1.75 / 2)
    src, rel = s._pick("affine")  # 3.0: x3
    assert src is bigger and rel == pytest.approx(1.0)
    assert FatherSampler(base, cfg, rng=ScriptedRng(), clip_range=clip,
                         device=CPU)._pick("affine") == (base, None)


def test_pyramid_scale_reaches_the_affine_matrix():
    base = ArrayCropSource(_coordinates(40, 40))
    big = ArrayCropSource(_coordinates(80, 80))
    cfg = TrainConfig(crop_size=8, augment_min_scale=0.5, augment_max_scale=1.0,
                      augment_allow_rotation=False, augment_scale_diff_sigma=0.0,
                      augment_shear_sigma=0.0)
    clip = (torch.full((2,), -1e3), torch.full((2,), 1e3))
    # mode affine (0.9); scale = 0.6 * 1.5 + 0.5 = 1.4 -> source x2, relative 0.7
    rng = ScriptedRng(random=[0.9, 0.6], standard_normal=[0.0, 0.0, 0.0],
                      uniform=[40.0, 40.0])
    s = FatherSampler(base, cfg, rng=rng, clip_range=clip, device=CPU, pyramid=[(big, 2.0)])
    f = s._draw()
    y, x = _expected_positions(np.diag([0.7, 0.7]), 8, 8, 40.0, 40.0)
    np.testing.assert_allclose(f.pixels[0].numpy(), y, atol=0.06)
    np.testing.assert_allclose(f.pixels[1].numpy(), x, atol=0.06)


def test_affine_centre_is_drawn_when_the_pre_image_fits_once():
    """cols = 16 > 2 * ex = 12 (identity map, 12 px crop): the centre is still drawn."""
    img = _coordinates(16, 16)
    rng = ScriptedRng(random=[0.9, 1.0, 0.0], standard_normal=[0.0, 1.0, 0.0, 0.0],
                      uniform=[7.0, 9.0])
    s = _sampler(img, rng, crop_size=12, clip=(-1e3, 1e3))
    f = s._draw()
    assert [c for c in rng.calls if c[0] == "uniform"] == [("uniform", 6.0, 10.0),
                                                           ("uniform", 6.0, 10.0)]
    y, x = _expected_positions(np.eye(2), 12, 12, 7.0, 9.0)
    np.testing.assert_allclose(f.pixels[0].numpy(), y, atol=0.06)
    np.testing.assert_allclose(f.pixels[1].numpy(), x, atol=0.06)


def test_affine_defaults_to_the_image_itself():
    img = _coordinates(40, 40)
    # the reflection draw is exactly 0: sign 0 counts as no reflection (1.0)
    rng = ScriptedRng(random=[1.0, 0.0], standard_normal=[0.0, 0.0, 0.0, 0.0],
                      uniform=[20.0, 20.0])
    f = _sampler(img, rng, crop_size=8, clip=(-1e3, 1e3))._affine()
    y, x = _expected_positions(np.eye(2), 8, 8, 20.0, 20.0)
    np.testing.assert_allclose(f.pixels[0].numpy(), y, atol=0.06)
    np.testing.assert_allclose(f.pixels[1].numpy(), x, atol=0.06)


def test_sample_gives_up_after_twenty_draws():
    img = np.zeros((1, 10, 10), np.float32)
    mask = np.zeros((10, 10), bool)  # never valid: every try fails
    rng = ScriptedRng(random=[0.0] * 20, integers=[0, 0] * 20)
    f = _sampler(img, rng, mask=mask, crop_size=8).sample()  # a 21st draw would raise
    assert rng.values == {"random": [], "integers": []} and not bool(f.valid.any())


def _keys_cubic(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys' cubic convolution kernel (PyTorch's bicubic uses a = -0.75)."""
    t = np.abs(t)
    return np.where(t <= 1, (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1,
                    np.where(t < 2, a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a, 0.0))


def _bicubic_at(img: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """img (H, W) interpolated at pixel-index positions (y, x), all taps inside."""
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    out = np.zeros(y.shape)
    for i in range(-1, 3):
        for j in range(-1, 3):
            out += _keys_cubic(y - (y0 + i)) * _keys_cubic(x - (x0 + j)) * img[y0 + i, x0 + j]
    return out


def test_affine_father_is_bicubic_and_its_mask_nearest():
    """On a curved image bicubic differs from bilinear; one invalid pixel seen 0.4 px
    off its centre diagonally is invalid by nearest (a bilinear mask would read 0.64)."""
    rows = cols = 40
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    img = np.sin(r / 3.0)[None] * np.cos(c / 4.0)[None]
    mask = np.ones((rows, cols), bool)
    mask[12, 12] = False  # under the father's corner pixel, far from the window centre
    rng = ScriptedRng(random=[0.9, 1.0, 0.0], standard_normal=[0.0, 1.0, 0.0, 0.0],
                      uniform=[20.4, 20.4])
    f = _sampler(img.astype(np.float32), rng, mask=mask, crop_size=16, clip=(-9, 9))._draw()
    y, x = _expected_positions(np.eye(2), 16, 16, 20.4, 20.4)  # 12.4 ... 27.4
    np.testing.assert_allclose(f.pixels[0].numpy(), _bicubic_at(img[0], y, x), atol=1e-5)
    expected_valid = ~((np.rint(y) == 12) & (np.rint(x) == 12))
    np.testing.assert_array_equal(f.valid.numpy(), expected_valid)
    assert not expected_valid.all()
