"""Image quality metrics for super-resolution, channel-first ``(C, H, W)``.

PSNR and SSIM are computed by scikit-image; this module only fixes the SR
conventions around them:

* ``shave``: ``ceil(scale)`` pixels are dropped from every border before scoring;
* 3-band inputs are treated as RGB and scored on luma Y (ITU-R BT.601, studio
  range, as MATLAB ``rgb2ycbcr``), unless ``y_channel=False``;
* 1 band: scored on that band; any other band count (or ``y_channel=False``):
  the mean of the per-band scores;
* SSIM uses the MATLAB-like settings ``gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False``.

A 2-D array is accepted as a single band. Values are given on the scale named by
``data_range`` (e.g. 0..255 for 8-bit images).

>>> hr = np.full((1, 8, 8), 100.0)
>>> round(psnr(hr + 1.0, hr, scale=2, data_range=255.0), 2)
48.13
"""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from zssr.resize import imresize

__all__ = [
    "rgb_to_y",
    "shave",
    "crop_to_multiple",
    "psnr",
    "ssim",
    "per_band_psnr",
    "spectral_angle",
    "lr_consistency",
]

#: BT.601 studio-range luma of RGB in [0, 1], on the 0..255 scale.
_Y_OFFSET = 16.0
_Y_WEIGHTS = (65.481, 128.553, 24.966)


def _as_bands(image: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or min(a.shape) < 1:
        raise ValueError(
            f"{name}: expected a (C, H, W) or (H, W) array, got shape {np.shape(image)}"
        )
    return a.astype(np.float64)


def _pair_up(sr: np.ndarray, hr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_bands(sr, "sr"), _as_bands(hr, "hr")
    if a.shape != b.shape:
        raise ValueError(
            f"sr and hr must have the same shape, got {a.shape} and {b.shape}; "
            "crop hr with crop_to_multiple() and resize sr to hr's shape"
        )
    return a, b


def rgb_to_y(rgb: np.ndarray, *, data_range: float = 255.0) -> np.ndarray:
    """Luma of a ``(3, H, W)`` RGB image, ITU-R BT.601 studio range (MATLAB ``rgb2ycbcr``).

    With RGB in [0, 1] (``r = R / data_range``): ``Y = 16 + 65.481 r + 128.553 g
    + 24.966 b`` on the 0..255 scale (Y in [16, 235]); the result is returned on the
    input's scale, i.e. multiplied by ``data_range / 255``. Float64, not rounded.

    >>> rgb_to_y(np.array([255.0, 255.0, 255.0]).reshape(3, 1, 1)).item()
    235.0
    """
    a = np.asarray(rgb, dtype=np.float64)
    if a.ndim != 3 or a.shape[0] != 3:
        raise ValueError(f"rgb_to_y expects a (3, H, W) array, got shape {a.shape}")
    unit = a / data_range
    y = _Y_OFFSET + _Y_WEIGHTS[0] * unit[0] + _Y_WEIGHTS[1] * unit[1] + _Y_WEIGHTS[2] * unit[2]
    return y * (data_range / 255.0)


def _shave_px(scale: float) -> int:
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    return math.ceil(scale)


def shave(image: np.ndarray, scale: float) -> np.ndarray:
    """Drop ``ceil(scale)`` pixels from every border of ``(..., H, W)``."""
    s = _shave_px(scale)
    a = np.asarray(image)
    if a.shape[-2] <= 2 * s or a.shape[-1] <= 2 * s:
        raise ValueError(
            f"image of shape {a.shape} is too small to shave {s} px from each border"
        )
    return a[..., s:-s, s:-s]


def crop_to_multiple(hr: np.ndarray, scale: float) -> np.ndarray:
    """Crop ``(..., H, W)`` to ``(H - H % scale, W - W % scale)``, keeping the top-left.

    ``scale`` must be a whole number (e.g. 2 or 3.0).
    """
    if not (isinstance(scale, (int, float)) and float(scale).is_integer() and scale >= 1):
        raise ValueError(f"crop_to_multiple needs a whole-number scale >= 1, got {scale!r}")
    k = int(scale)
    a = np.asarray(hr)
    h, w = a.shape[-2] - a.shape[-2] % k, a.shape[-1] - a.shape[-1] % k
    if h == 0 or w == 0:
        raise ValueError(f"image of shape {a.shape} is smaller than the scale {k}")
    return a[..., :h, :w]


def _scored_bands(
    sr: np.ndarray, hr: np.ndarray, scale: float, data_range: float, y_channel: bool
) -> tuple[np.ndarray, np.ndarray]:
    if not (math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a finite number > 0, got {data_range!r}")
    a, b = _pair_up(sr, hr)
    if y_channel and a.shape[0] == 3:
        a = rgb_to_y(a, data_range=data_range)[None]
        b = rgb_to_y(b, data_range=data_range)[None]
    return shave(a, scale), shave(b, scale)


def per_band_psnr(
    sr: np.ndarray, hr: np.ndarray, *, scale: float, data_range: float
) -> list[float]:
    """PSNR of each band after shaving ``ceil(scale)`` border pixels (dB)."""
    a, b = _scored_bands(sr, hr, scale, data_range, y_channel=False)
    return [float(peak_signal_noise_ratio(hb, ab, data_range=data_range))
            for ab, hb in zip(a, b, strict=True)]


def psnr(
    sr: np.ndarray, hr: np.ndarray, *, scale: float, data_range: float, y_channel: bool = True
) -> float:
    """PSNR in dB (Y for RGB, else the mean over bands); see the module docstring."""
    a, b = _scored_bands(sr, hr, scale, data_range, y_channel)
    return float(np.mean([peak_signal_noise_ratio(hb, ab, data_range=data_range)
                          for ab, hb in zip(a, b, strict=True)]))


def ssim(
    sr: np.ndarray, hr: np.ndarray, *, scale: float, data_range: float, y_channel: bool = True
) -> float:
    """SSIM (MATLAB-like Gaussian settings) with the same conventions as :func:`psnr`."""
    a, b = _scored_bands(sr, hr, scale, data_range, y_channel)
    return float(np.mean([
        structural_similarity(hb, ab, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False, data_range=data_range)
        for ab, hb in zip(a, b, strict=True)
    ]))


def spectral_angle(sr: np.ndarray, hr: np.ndarray) -> float:
    """Mean spectral angle (SAM) in degrees between the band vectors of each pixel.

    Pixels where either vector has zero norm are skipped; 0.0 if none remain.
    """
    a, b = _pair_up(sr, hr)
    dot = np.sum(a * b, axis=0)
    norms = np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0)
    valid = norms > 0
    if not np.any(valid):
        return 0.0
    cos = np.clip(dot[valid] / norms[valid], -1.0, 1.0)
    return float(np.degrees(np.mean(np.arccos(cos))))


def lr_consistency(
    sr: np.ndarray,
    lr: np.ndarray,
    *,
    scale: float | tuple[float, float],
    kernel: np.ndarray | torch.Tensor | None = None,
    data_range: float,
) -> float:
    """Mean per-band PSNR (dB, no shave) of the downscaled ``sr`` against ``lr``.

    ``sr`` is downscaled with :func:`zssr.resize.imresize` at ``1 / scale`` to
    ``lr``'s shape, by bicubic or by ``kernel`` (already prepared with
    :func:`zssr.kernels.prepare_kernel`). A high value means the SR explains the
    input it was made from.
    """
    a, b = _as_bands(sr, "sr"), _as_bands(lr, "lr")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"sr has {a.shape[0]} bands but lr has {b.shape[0]}")
    sh, sw = (scale, scale) if np.isscalar(scale) else scale  # type: ignore[misc]
    down = imresize(
        torch.from_numpy(a),
        scale=(1.0 / float(sh), 1.0 / float(sw)),
        output_shape=(b.shape[1], b.shape[2]),
        kernel="cubic" if kernel is None else kernel,
    ).numpy()
    if not (math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a finite number > 0, got {data_range!r}")
    return float(np.mean([peak_signal_noise_ratio(lb, db, data_range=data_range)
                          for db, lb in zip(down, b, strict=True)]))
