"""Degradation kernels (sensor PSFs) for ZSSR's "son" images.

A kernel here is a small 2-D array ``k`` in high-resolution pixels: the LR image
is ``correlate(HR, k)`` subsampled by the scale factor. Kernels come from

* an estimate (ZSSR ships MATLAB ``.mat`` files holding a variable ``Kernel``,
  made with Michaeli & Irani's blind SR). The pipeline reads the file and hands
  the ``scipy.io.loadmat`` mapping to :func:`kernel_from_mapping`;
* a model, e.g. :func:`gaussian_kernel` for a Gaussian sensor PSF.

Before use a kernel is validated (finite, 2-D, positive sum, normalised to sum 1)
and shifted (:func:`kernel_shift`) so that its centre of mass sits where
subsampling by the scale factor expects it; :func:`prepare_kernel` does both.
No file paths here: messages name the ``source`` the caller gives.

>>> k = prepare_kernel(gaussian_kernel(1.0), 2.0)
>>> tuple(k.shape), round(float(k.sum()), 3)
((11, 11), 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from geometry import ScaleError, ScaleLike, as_scale

from .errors import KernelError

__all__ = [
    "KernelError",
    "MAX_KERNEL_SIZE",
    "kernel_shift",
    "gaussian_kernel",
    "validate_kernel",
    "kernel_from_mapping",
    "prepare_kernel",
]

#: Largest accepted kernel side, in HR pixels.
MAX_KERNEL_SIZE = 64


def kernel_shift(kernel: np.ndarray, scale: float | tuple[float, float]) -> np.ndarray:
    """Shift ``kernel`` like ZSSR's ``utils.kernel_shift`` (float64 result, padded).

    The centre of mass moves to ``shape // 2 + 0.5 * (scale - shape % 2)`` (index
    coordinates of the unpadded kernel), so that the top-left LR pixel corresponds to
    the middle of the first ``scale x scale`` HR pixels. The kernel is first
    zero-padded on every side by ``ceil(max |shift|) + 1`` pixels so nothing is lost,
    then shifted with ``scipy.ndimage.shift`` (cubic spline, constant boundary).
    ``scale`` is the UPSCALING factor (e.g. 2.0), a number or ``(scale_h, scale_w)``.

    ZSSR writes ``shape / 2`` but runs on Python 2, where that is integer division;
    ``//`` reproduces what ZSSR computes (KernelGAN's port writes ``//``). With a true
    division the LR would sit half an HR pixel off the bicubic grid. With this rule an
    odd-sized kernel is aligned with bicubic downscaling exactly; an even-sized one is
    half an HR pixel off (as in ZSSR), which :func:`prepare_kernel` avoids.

    The result is not renormalised (ZSSR does not either); its sum stays 1 up to the
    spline's small error.
    """
    k = np.asarray(kernel, dtype=np.float64)
    current = np.array(ndimage.center_of_mass(k))
    shape = np.array(k.shape)
    wanted = shape // 2 + 0.5 * (np.asarray(scale, dtype=np.float64) - shape % 2)
    shift_vec = wanted - current
    pad = int(math.ceil(float(np.max(np.abs(shift_vec))))) + 1
    return ndimage.shift(np.pad(k, pad, mode="constant"), shift_vec)


def gaussian_kernel(sigma: float | tuple[float, float], *, size: int | None = None) -> np.ndarray:
    """A normalised 2-D Gaussian PSF with std ``sigma`` HR pixels (or ``(sigma_h, sigma_w)``).

    ``size`` is the odd side length; by default ``2 * ceil(3 * max(sigma)) + 1``, which
    covers +-3 sigma. The Gaussian is centred on the middle pixel and sums to 1.

    >>> gaussian_kernel(1.0).shape
    (7, 7)
    """
    sy, sx = (sigma, sigma) if np.isscalar(sigma) else tuple(sigma)  # type: ignore[misc]
    if not all(math.isfinite(s) and s > 0 for s in (sy, sx)):
        raise KernelError(f"gaussian_kernel: sigma must be finite and > 0, got {sigma!r}")
    if size is None:
        size = 2 * math.ceil(3 * max(sy, sx)) + 1
    if size < 1 or size % 2 == 0 or size > MAX_KERNEL_SIZE:
        raise KernelError(
            f"gaussian_kernel: size must be an odd integer in [1, {MAX_KERNEL_SIZE}], got {size}"
        )
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k = np.exp(-0.5 * (r[:, None] / sy) ** 2 - 0.5 * (r[None, :] / sx) ** 2)
    return k / k.sum()


def validate_kernel(kernel: Any, *, source: str) -> np.ndarray:
    """Check a kernel and return it as float64 normalised to sum 1.

    Negative entries are allowed (estimated kernels have small ones) but the sum
    must be > 0. Raises :class:`KernelError` naming ``source`` and the problem.
    """
    try:
        k = np.asarray(kernel)
    except (TypeError, ValueError) as exc:
        raise KernelError(f"kernel from {source}: not a numeric array ({exc})") from exc
    if k.dtype.kind not in "biuf":
        raise KernelError(
            f"kernel from {source}: expected real numbers, got dtype {k.dtype}"
        )
    if k.ndim != 2:
        raise KernelError(
            f"kernel from {source}: expected a 2-D array, got {k.ndim}-D shape {k.shape}"
        )
    if k.size == 0:
        raise KernelError(f"kernel from {source}: is empty (shape {k.shape})")
    if max(k.shape) > MAX_KERNEL_SIZE:
        raise KernelError(
            f"kernel from {source}: too large, shape {k.shape}; at most "
            f"{MAX_KERNEL_SIZE}x{MAX_KERNEL_SIZE} HR pixels are supported"
        )
    k = k.astype(np.float64)
    if not np.all(np.isfinite(k)):
        raise KernelError(f"kernel from {source}: contains NaN or infinite values")
    total = float(k.sum())
    if not np.any(k) or total <= 0:
        what = "all zeros" if not np.any(k) else f"sums to {total:g}"
        raise KernelError(f"kernel from {source}: {what}; a PSF must have a positive sum")
    return k / total


def kernel_from_mapping(
    mapping: Mapping[str, Any], *, source: str, key: str = "Kernel"
) -> np.ndarray:
    """The validated kernel stored under ``key`` in a ``scipy.io.loadmat`` result.

    Raises :class:`KernelError` listing the variables present when ``key`` is missing.
    """
    if key not in mapping:
        names = sorted(n for n in mapping if not n.startswith("__"))
        listed = ", ".join(repr(n) for n in names) if names else "none"
        raise KernelError(
            f"kernel file {source}: no variable {key!r}; variables present: {listed}"
        )
    return validate_kernel(mapping[key], source=f"{source} (variable {key!r})")


def prepare_kernel(
    kernel: Any, scale: ScaleLike, *, source: str = "argument"
) -> torch.Tensor:
    """Validate, normalise and :func:`kernel_shift` a kernel; float32 tensor for ``imresize``.

    ``scale`` is the upscaling factor the kernel degrades by (e.g. 2.0). A side of
    even length first gets one zero row/column appended (bottom/right), which leaves
    the PSF unchanged but makes :func:`kernel_shift` align the LR grid with bicubic
    downscaling (ZSSR leaves even kernels half an HR pixel off; its own kernels are
    9x9).
    """
    try:
        scales = as_scale(scale).floats
    except (ScaleError, TypeError) as exc:
        raise KernelError(f"kernel from {source}: {exc}") from None
    k = validate_kernel(kernel, source=source)
    k = np.pad(k, ((0, 1 - k.shape[0] % 2), (0, 1 - k.shape[1] % 2)))
    shifted = kernel_shift(k, scales)
    return torch.from_numpy(shifted.astype(np.float32))
