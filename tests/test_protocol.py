"""Tests of zssr.protocol (the bicubic benchmark protocol) on two Set5 images.

Expected PSNR/SSIM values were printed by ``bench/bicubic_baseline.py`` on the full
images (whose Set5 means reproduce the published 33.68 / 30.41 dB).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zssr.protocol import bicubic_baseline, make_lr, matlab_imresize_uint8, score

DATA = Path(__file__).parent / "data" / "sr"


def _chw(path: Path) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(Image.open(path)).transpose(2, 0, 1))


@pytest.mark.parametrize("name", ["bird", "head"])
@pytest.mark.parametrize("scale", [2, 3])
def test_make_lr_is_bit_identical_to_selfexsr(name: str, scale: int) -> None:
    lr = make_lr(_chw(DATA / f"{name}_HR.png"), scale)
    assert lr.dtype == np.uint8
    np.testing.assert_array_equal(lr, _chw(DATA / f"{name}_SRF_{scale}_LR.png"))


@pytest.mark.parametrize(
    ("name", "scale", "psnr_y", "ssim_y"),
    [("bird", 2, 36.83958, 0.97279), ("bird", 3, 32.59210, 0.92652),
     ("head", 2, 34.89026, 0.86317), ("head", 3, 32.90730, 0.80112)],
)
def test_bicubic_baseline_scores(name, scale, psnr_y, ssim_y) -> None:
    hr = _chw(DATA / f"{name}_HR.png")
    sr = bicubic_baseline(hr, scale)
    assert sr.dtype == np.float64 and sr.min() >= 0 and sr.max() <= 255
    assert sr.shape == (3, hr.shape[1] - hr.shape[1] % scale, hr.shape[2] - hr.shape[2] % scale)
    p, s = score(sr, hr, scale)
    assert p == pytest.approx(psnr_y, abs=1e-4)
    assert s == pytest.approx(ssim_y, abs=1e-4)


def test_matlab_imresize_uint8_grayscale_and_errors() -> None:
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (25, 1))
    out = matlab_imresize_uint8(gray, 0.5)
    assert out.shape == (1, 13, 13) and out.dtype == np.uint8
    with pytest.raises(TypeError, match="must be a uint8 array"):
        make_lr(gray.astype(np.float32), 2)
    with pytest.raises(ValueError, match=r"must be a \(C, H, W\) or \(H, W\) array"):
        make_lr(np.zeros((1, 1, 4, 4), dtype=np.uint8), 2)
