"""The standard bicubic SR benchmark protocol (Set5, Set14, ...), reproduced exactly.

Found empirically against the published figures (bicubic PSNR-Y: Set5 x2/x3/x4 =
33.68 / 30.41 / 28.43 dB, Set14 x2 = 30.24 dB) and the SelfExSR LR files:

1. **HR**: the 8-bit image cropped from the top-left to a multiple of the scale
   (:func:`zssr.metrics.crop_to_multiple`).
2. **LR** (:func:`make_lr`): MATLAB ``imresize(hr_uint8, 1/scale, 'bicubic')`` as
   current MATLAB computes it on ``uint8``: antialiased cubic, *replicate*
   boundary (indices clamped), rows first, and the result rounded half away from
   zero to ``uint8`` after *each* one-dimensional pass. This is bit-identical to
   every LR file of SelfExSR (``jbhuang0604/SelfExSR``, Set5 and Set14 at x2, x3,
   x4; 42 files checked, max abs difference 0).
3. **SR** (:func:`bicubic_baseline`): :func:`zssr.resize.imresize` of the LR by
   ``scale`` in float64 (cubic, ZSSR's default symmetric boundary), clipped to
   [0, 255] and *not* rounded.
4. **Score** (:func:`score`): RGB images on float luma Y (BT.601 studio range,
   :func:`zssr.metrics.rgb_to_y`), grayscale images on their own values; ``scale``
   pixels shaved from every border; PSNR and SSIM by scikit-image with
   ``data_range=255`` (SSIM with the MATLAB-like Gaussian settings).

This gives Set5 33.6846 / 30.4078 / 28.4333 and Set14 x2 30.2378 dB, each within
0.005 dB of the published figure (``bench/bicubic_baseline.py`` prints the table).
Nearby variants (Set5 x2/x3/x4, Set14 x2) round to a different two-decimal
figure in at least one case:

* SR rounded to ``uint8``: 33.6786 / 30.4058 / 28.4318 / 30.2348;
* SR not clipped: 33.6836 / 30.4068 / 28.4321 / 30.2310;
* Y rounded to ``uint8`` (MATLAB ``rgb2ycbcr`` on ``uint8``): 33.6504 / 30.3894 /
  28.4204 / 30.2254;
* everything in MATLAB ``uint8`` (SR by :func:`matlab_imresize_uint8`, Y rounded):
  33.6404 / 30.3864 / 28.4177 / 30.2200;
* LR by float symmetric-boundary bicubic, not quantised: 33.6914 / 30.4087 /
  28.4337 / 30.2548.
"""

from __future__ import annotations

import numpy as np
import torch

from zssr.metrics import crop_to_multiple, psnr, ssim
from zssr.resize import imresize

__all__ = ["matlab_imresize_uint8", "make_lr", "bicubic_baseline", "score"]


def _round_uint8(x: torch.Tensor) -> torch.Tensor:
    """MATLAB's conversion of doubles to uint8: round half away from zero, saturate."""
    return torch.clamp(torch.floor(x + 0.5), 0.0, 255.0)


def _check_uint8(image: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise TypeError(f"{name} must be a uint8 array (C, H, W), got dtype {a.dtype}")
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"{name} must be a (C, H, W) or (H, W) array, got shape {a.shape}")
    return a


def matlab_imresize_uint8(image: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB ``imresize(image, scale, 'bicubic')`` for a ``uint8`` ``(C, H, W)`` array.

    One pass per dimension (rows first, MATLAB's order for equal scales), replicate
    boundary, each pass rounded to ``uint8``. Returns ``uint8``.
    """
    a = _check_uint8(image, "image")
    x = torch.from_numpy(a.astype(np.float64))
    for axis_scale in ((scale, 1.0), (1.0, scale)):
        x = _round_uint8(imresize(x, scale=axis_scale, boundary="replicate"))
    return x.numpy().astype(np.uint8)


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """The benchmark LR of an 8-bit HR ``(C, H, W)``: crop to a multiple, MATLAB bicubic.

    Bit-identical to the SelfExSR ``img_NNN_SRF_k_LR.png`` files. Returns ``uint8``.
    """
    cropped = crop_to_multiple(_check_uint8(hr, "hr"), scale)
    return matlab_imresize_uint8(cropped, 1.0 / scale)


def bicubic_baseline(hr: np.ndarray, scale: int) -> np.ndarray:
    """The bicubic SR of the benchmark: :func:`make_lr`, then float bicubic upscaling.

    Returns float64 ``(C, H', W')`` in [0, 255], where ``(H', W')`` is the HR cropped to
    a multiple of ``scale``. Not rounded (see the module docstring).
    """
    lr = make_lr(hr, scale)
    up = imresize(torch.from_numpy(lr.astype(np.float64)), scale=float(scale))
    return np.clip(up.numpy(), 0.0, 255.0)


def score(sr: np.ndarray, hr: np.ndarray, scale: int) -> tuple[float, float]:
    """``(psnr_y, ssim_y)`` of an SR against its 8-bit HR, by the benchmark protocol.

    ``hr`` is cropped to a multiple of ``scale`` here; ``sr`` must already have that
    shape. Both are on the 0..255 scale. RGB is scored on Y, grayscale as is.
    """
    ref = crop_to_multiple(_check_uint8(hr, "hr"), scale)
    kwargs = {"scale": scale, "data_range": 255.0, "y_channel": True}
    return psnr(sr, ref, **kwargs), ssim(sr, ref, **kwargs)
