"""Blind estimation of an image's x2 degradation kernel from the image alone.

A direct fit of the kernel from cross-scale self-similarity of the power spectrum.
Natural scenes are close to scale invariant: their power spectrum falls as
``|f|^-alpha`` (alpha ~ 2) in every direction. If ``y = (x * k)`` keeping every 2nd
pixel, then at LR frequencies ``v`` and ``2v`` (cycles per LR pixel; ``k``'s transfer
function ``K`` at HR frequency ``v`` and ``v / 2``)::

    log P_y(2v) - log P_y(v) = -alpha log 2 + log |K(v)|^2 - log |K(v / 2)|^2

The scene's direction-dependent strength cancels in the ratio, and for a Gaussian
kernel of covariance ``S`` (HR px^2) the right side is ``-alpha log 2 - 3 pi^2 v' S v``:
linear in ``(S_yy, S_xx, S_xy, alpha)``. So the estimate is

1. ``P_y``: Welch average of Hann-windowed 64x64 LR windows that are fully valid
   (at most ``max_windows`` of them, seeded), so cost is bounded on any input;
2. a robust (Tukey-weighted) least-squares fit of ``S`` and ``alpha`` over the
   frequency pairs with ``0.04 <= |v| <= 0.245`` (so ``2v`` stays below Nyquist), with
   a weak prior pulling alpha to 2 (periodic textures such as stripes otherwise bend it);
3. the kernel: the Gaussian of covariance ``S`` on a ``size x size`` grid (HR px), or the
   bicubic kernel itself when ``S`` is within ``snap_bicubic`` (Frobenius, HR px^2) of
   bicubic's own equivalent covariance (:func:`bicubic_equivalent_cov`, fitted by the
   same model to the bicubic transfer function): data that cannot tell the two apart get
   the standard kernel, so ideal (bicubic) input is left as the presets treat it.

What ``S`` measures is the blur of the LR relative to a scale-invariant scene, which
includes any blur already in the scene; on Set5's bicubic LR the fit gives ~0.6-1.4 HR
px^2 per axis, bicubic's equivalent is 0.55. The kernel follows the correlate-then-
subsample convention of :func:`zssr.kernels.prepare_kernel` (which recentres it by its
centre of mass). x4 is composed analytically from the x2 estimate (:func:`analytic_x4`,
as KernelGAN's ``analytic_kernel``). Pixels outside ``mask`` never enter: only fully
valid windows are used.

>>> import numpy as np
>>> est = estimate_kernel(np.zeros((1, 8, 8), np.float32), scale=2)
>>> est.ok, est.reason.split(":")[0]
(False, 'too small')
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage, signal

from geometry import ScaleError, ScaleLike, as_scale

from .kernels import KernelError

__all__ = ["KernelEstimationError", "KernelEstimate", "estimate_kernel",
           "estimate_kernel_windows", "candidate_origins", "WindowReader", "analytic_x4",
           "check_kernel_priors", "centre_kernel", "gaussian_from_cov", "bicubic_x2_kernel",
           "bicubic_equivalent_cov"]

log = logging.getLogger(__name__)

WINDOW = 64  # Welch window side (LR px)
BAND = (0.04, 0.245)  # |v| range, cycles per LR px; 2v stays below Nyquist (0.5)
ALPHA_PRIOR = 2.0  # natural images' spectral slope


class KernelEstimationError(KernelError):
    """Kernel estimation cannot run with these arguments (e.g. a non-integer scale)."""


@dataclass(frozen=True)
class KernelEstimate:
    """The estimate and whether it may be used.

    ``kernel`` is a normalised, centred 2-D float64 array in HR pixels for ``scale``
    (None when the image was too small or too flat); ``model`` says what it is.
    ``ok`` is False when the input is unusable or the estimate fails
    :func:`check_kernel_priors`; ``reason`` then says why, and a caller falls back to
    its preset's kernel with a warning. ``covariance`` is the fitted x2 blur (HR px^2,
    rows/cols order), ``alpha`` the fitted spectral slope, ``windows`` how many windows.
    """

    kernel: np.ndarray | None
    scale: int
    ok: bool
    reason: str
    model: Literal["gaussian", "bicubic", "none"]
    covariance: np.ndarray | None = None
    alpha: float = float("nan")
    windows: int = 0
    seconds: float = 0.0


def _factor(scale: ScaleLike) -> int:
    """The integer factor of an isotropic x2 or x4 scale (any :func:`geometry.as_scale`
    spelling); the other scales are refused."""
    try:
        sc = as_scale(scale)
    except (ScaleError, TypeError):
        sc = None
    if sc is None or not sc.isotropic or sc.rows not in (2, 4):
        raise KernelEstimationError(
            f"kernel estimation supports scales 2 and 4 (x4 composed from x2), got "
            f"{scale!r}; give a kernel file or a preset's kernel for other scales")
    return int(sc.rows)


def _luma(image: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Band mean and the valid map (finite in every band and inside ``mask``); invalid = 0."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.dtype.kind not in "biuf":
        raise KernelEstimationError(f"expected a real (H, W) or (C, H, W) image, got shape "
                                    f"{np.shape(image)} dtype {np.asarray(image).dtype}")
    arr = arr.astype(np.float64)
    valid = np.isfinite(arr).all(axis=0)
    if mask is not None:
        if np.shape(mask) != arr.shape[1:]:
            raise KernelEstimationError(f"mask shape {np.shape(mask)} does not match the "
                                        f"image's {arr.shape[1:]}")
        valid &= np.asarray(mask, dtype=bool)
    y = np.where(valid, np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0).mean(axis=0), 0.0)
    return y, valid


def candidate_origins(shape: tuple[int, int], *, count: int, seed: int
                      ) -> list[tuple[int, int]]:
    """Origins of the WINDOW x WINDOW windows to try, in order: the half-overlapping grid
    over an image of ``shape``, or a seeded sample of ``4 * count`` of it when the grid
    holds more than ``count`` (bounded cost on large scenes)."""
    h, w = shape
    rows = np.arange(0, h - WINDOW + 1, WINDOW // 2)
    cols = np.arange(0, w - WINDOW + 1, WINDOW // 2)
    grid = [(int(r), int(c)) for r in rows for c in cols]
    if len(grid) > count:
        rng = np.random.default_rng(seed)
        grid = [grid[i] for i in np.sort(rng.choice(len(grid), 4 * count, replace=True))]
    return grid


#: ``read(row, col) -> (luma (WINDOW, WINDOW), valid (WINDOW, WINDOW))`` of one window.
WindowReader = Callable[[int, int], tuple[np.ndarray, np.ndarray]]


def _valid_windows(read: WindowReader, shape: tuple[int, int], *, count: int, seed: int
                   ) -> list[np.ndarray]:
    """The luma of up to ``count`` fully valid windows, from :func:`candidate_origins`."""
    seen, out = set(), []
    for r, c in candidate_origins(shape, count=count, seed=seed):
        if (r, c) in seen:
            continue
        y, valid = read(r, c)
        if valid.all():
            seen.add((r, c))
            out.append(y)
            if len(out) == count:
                break
    return out


def _power_spectrum(windows: list[np.ndarray]) -> np.ndarray:
    """Welch estimate: mean ``|FFT|^2`` of the Hann-windowed, mean-removed windows."""
    hann = np.outer(np.hanning(WINDOW), np.hanning(WINDOW))
    acc = np.zeros((WINDOW, WINDOW))
    for p in windows:
        acc += np.abs(np.fft.fft2((p - p.mean()) * hann)) ** 2
    return acc / len(windows)


def _design(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features ``[1, vy^2, vx^2, 2 vy vx]`` and the FFT indices of ``v`` and ``2v``
    (half plane: the spectrum of a real image is symmetric)."""
    f = np.fft.fftfreq(n)
    a, b = np.meshgrid(np.arange(-n // 4 + 1, n // 4), np.arange(0, n // 4), indexing="ij")
    a, b = a.ravel(), b.ravel()
    vy, vx = f[a % n], f[b % n]
    r = np.hypot(vy, vx)
    keep = (r >= BAND[0]) & (r <= BAND[1]) & ~((b == 0) & (a <= 0))
    a, b, vy, vx = a[keep], b[keep], vy[keep], vx[keep]
    feats = np.stack([np.ones_like(vy), vy * vy, vx * vx, 2 * vy * vx], axis=1)
    return feats, (a % n, b % n), ((2 * a) % n, (2 * b) % n)


def _fit_cov(power: np.ndarray, *, alpha_weight: float, iterations: int = 6
             ) -> tuple[np.ndarray, float]:
    """Robust fit of ``log P(2v) - log P(v) = -alpha log 2 - 3 pi^2 v'Sv``: ``(S, alpha)``."""
    feats, i1, i2 = _design(power.shape[0])
    tiny = 1e-30
    target = np.log(power[i2] + tiny) - np.log(power[i1] + tiny)
    n = len(target)
    prior_row = np.sqrt(alpha_weight * n) * np.array([[1.0, 0.0, 0.0, 0.0]])
    prior_val = np.sqrt(alpha_weight * n) * (-ALPHA_PRIOR * math.log(2))
    w = np.ones(n)
    for _ in range(iterations):
        sw = np.sqrt(w)
        lhs = np.vstack([feats * sw[:, None], prior_row])
        rhs = np.concatenate([target * sw, [prior_val]])
        coef = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
        res = target - feats @ coef
        u = res / (4.685 * 1.4826 * np.median(np.abs(res)) + 1e-12)
        w = np.where(np.abs(u) < 1, (1 - u ** 2) ** 2, 0.0)  # Tukey's biweight
    cov = -np.array([[coef[1], coef[3]], [coef[3], coef[2]]]) / (3 * math.pi ** 2)
    return cov, float(-coef[0] / math.log(2))
def centre_kernel(kernel: np.ndarray) -> np.ndarray:
    """Shift the kernel's centre of mass onto its middle pixel (linear interpolation)."""
    k = np.asarray(kernel, dtype=np.float64)
    com = np.array(ndimage.center_of_mass(np.clip(k, 0, None)))
    mid = (np.array(k.shape) - 1) / 2
    out = ndimage.shift(k, mid - com, order=1, mode="constant")
    return out / out.sum()


def check_kernel_priors(kernel: np.ndarray, *, centre_tol: float = 0.5,
                        inner_mass: float = 0.9, min_taps: float = 1.5) -> str:
    """``""`` when ``kernel`` meets the priors, else the first violated one, in words.

    Priors: finite, sums to 1 (within 1e-3), centre of mass within ``centre_tol`` px of
    the middle, at least ``inner_mass`` of the (positive) mass inside the inner disc of
    radius ``side / 2 - 1``, negative lobes under 10 % of the mass, and not degenerate:
    the effective number of taps ``1 / sum(k^2)`` at least ``min_taps`` (a delta has 1).
    """
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2 or not np.all(np.isfinite(k)):
        return "not a finite 2-D kernel"
    if abs(k.sum() - 1.0) > 1e-3:
        return f"sums to {k.sum():.4f}, not 1"
    pos = np.clip(k, 0, None)
    neg = float(-np.clip(k, None, 0).sum())
    if neg > 0.1:
        return f"negative lobes hold {neg:.2f} of the mass (> 0.10)"
    com = np.array(ndimage.center_of_mass(pos))
    off = float(np.hypot(*(com - (np.array(k.shape) - 1) / 2)))
    if off > centre_tol:
        return f"centre of mass {off:.2f} px from the middle (> {centre_tol})"
    r = np.hypot(*np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in k.shape), indexing="ij"))
    inside = float(pos[r <= min(k.shape) / 2 - 1].sum() / pos.sum())
    if inside < inner_mass:
        return f"only {inside:.2f} of the mass inside the support (< {inner_mass})"
    taps = 1.0 / float(((pos / pos.sum()) ** 2).sum())
    if taps < min_taps:
        return f"degenerate: {taps:.2f} effective taps (< {min_taps}), close to a delta"
    return ""


def analytic_x4(k2: np.ndarray) -> np.ndarray:
    """The x4 kernel of two x2 steps: ``k2`` convolved with ``k2`` upsampled by 2.

    As KernelGAN's ``analytic_kernel``: downscaling by 2 with ``k2`` twice equals
    downscaling by 4 once with this kernel (HR pixels). Normalised, centred.
    """
    k = np.asarray(k2, dtype=np.float64)
    up = np.zeros((2 * k.shape[0] - 1, 2 * k.shape[1] - 1))
    up[::2, ::2] = k
    big = signal.convolve2d(k, up)  # side 3 * s - 2
    return centre_kernel(big / big.sum())




def gaussian_from_cov(cov: np.ndarray, *, size: int) -> np.ndarray:
    """The normalised ``size x size`` Gaussian of covariance ``cov`` (HR px^2, (row, col))."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    pts = np.stack(np.meshgrid(r, r, indexing="ij"), axis=-1)
    k = np.exp(-0.5 * np.einsum("...i,ij,...j->...", pts, np.linalg.inv(cov), pts))
    return k / k.sum()


def bicubic_x2_kernel() -> np.ndarray:
    """MATLAB's antialiased bicubic at x2 as a 2-D HR-px kernel (8x8, taps at +-0.5..3.5)."""
    x = np.arange(-3.5, 4.0, 1.0) / 2
    ax = np.abs(x)
    w = np.where(ax <= 1, 1.5 * ax ** 3 - 2.5 * ax ** 2 + 1,
                 np.where(ax < 2, -0.5 * ax ** 3 + 2.5 * ax ** 2 - 4 * ax + 2, 0.0))
    w /= w.sum()
    return np.outer(w, w)


@functools.lru_cache(maxsize=1)
def bicubic_equivalent_cov() -> tuple[tuple[float, float], tuple[float, float]]:
    """The covariance the fit gives for bicubic x2 on an exact ``|f|^-2`` scene (~0.55 I)."""
    k1 = bicubic_x2_kernel().sum(axis=1)
    taps = np.arange(-3.5, 4.0, 1.0)
    u = np.fft.fftfreq(WINDOW)
    t1 = np.abs(np.exp(-2j * np.pi * np.outer(u / 2, taps)) @ k1) ** 2  # |K(u / 2)|^2
    r2 = u[:, None] ** 2 + u[None, :] ** 2
    power = np.outer(t1, t1) / np.where(r2 > 0, r2, 1.0)
    cov, _ = _fit_cov(power, alpha_weight=0.0)
    return ((float(cov[0, 0]), float(cov[0, 1])), (float(cov[1, 0]), float(cov[1, 1])))


def estimate_kernel(image: np.ndarray, *, scale: ScaleLike, mask: np.ndarray | None = None,
                    size: int = 13, seed: int = 0, max_windows: int = 256,
                    alpha_weight: float = 0.3, snap_bicubic: float = 1.0,
                    min_windows: int = 1, min_std: float = 1e-3) -> KernelEstimate:
    """Estimate the degradation kernel of ``image`` ``(C, H, W)`` or ``(H, W)``.

    ``image`` is in working units (any affine scale); ``mask`` ``(H, W)`` marks valid
    pixels. ``scale`` 2 gives a ``size x size`` Gaussian (``size`` odd) or bicubic's 8x8
    kernel; 4 gives :func:`analytic_x4` of the x2 estimate. Deterministic for a ``seed``.
    Scales other than 2 and 4 raise :class:`KernelEstimationError`; an image too small
    (fewer than ``min_windows`` fully valid 64x64 windows) or too flat returns ``ok=False``
    with no kernel; an estimate that fails :func:`check_kernel_priors` returns ``ok=False``
    with the reason and the kernel. ``snap_bicubic=0`` never snaps to bicubic.
    """
    _factor(scale)
    y, valid = _luma(image, mask)
    level = max(1e-12, float(np.abs(y[valid]).max())) if valid.any() else 1e-12

    def read(r: int, c: int) -> tuple[np.ndarray, np.ndarray]:
        return y[r:r + WINDOW, c:c + WINDOW], valid[r:r + WINDOW, c:c + WINDOW]

    return estimate_kernel_windows(read, y.shape, scale=scale, level=level, size=size,
                                   seed=seed, max_windows=max_windows,
                                   alpha_weight=alpha_weight, snap_bicubic=snap_bicubic,
                                   min_windows=min_windows, min_std=min_std)


def estimate_kernel_windows(read: WindowReader, shape: tuple[int, int], *, scale: ScaleLike,
                            level: float | None = None, size: int = 13, seed: int = 0,
                            max_windows: int = 256, alpha_weight: float = 0.3,
                            snap_bicubic: float = 1.0, min_windows: int = 1,
                            min_std: float = 1e-3) -> KernelEstimate:
    """:func:`estimate_kernel` of an image of ``shape`` that is never in memory whole (a
    scene read by windows): ``read(row, col)`` returns one WINDOW x WINDOW window's luma
    (band mean in working units) and validity; at most ``4 * max_windows`` windows are
    read.  ``level`` (the image's largest absolute luma, for the flatness test) defaults
    to the largest over the windows read.
    """
    s = _factor(scale)
    if size < 5 or size % 2 == 0 or size > 31:
        raise KernelEstimationError(f"kernel size must be an odd integer in [5, 31], got {size}")
    t0 = time.perf_counter()

    def fail(reason: str, **extra: object) -> KernelEstimate:
        log.info("kernel estimation: %s", reason)  # the caller warns, naming the file
        return KernelEstimate(None, s, False, reason, "none", seconds=time.perf_counter() - t0,
                              **extra)  # type: ignore[arg-type]

    windows = _valid_windows(read, shape, count=max_windows, seed=seed)
    if len(windows) < min_windows:
        return fail(f"too small: {shape[0]}x{shape[1]} px holds {len(windows)} fully valid "
                    f"{WINDOW}x{WINDOW} windows, need {min_windows}", windows=len(windows))
    stds = np.array([w.std() for w in windows])
    if level is None:
        level = max(1e-12, max(float(np.abs(w).max()) for w in windows))
    if float(np.median(stds)) <= min_std * level:
        return fail(f"too flat: median window std {np.median(stds):.3g} <= {min_std} x "
                    f"the value level {level:.3g}; nothing to estimate from",
                    windows=len(windows))
    cov, alpha = _fit_cov(_power_spectrum(windows), alpha_weight=alpha_weight)
    eig = np.linalg.eigvalsh(cov)
    extra = {"covariance": cov, "alpha": alpha, "windows": len(windows)}
    if eig[0] < -0.3:
        return fail(f"the spectrum does not fall like a blurred natural image's "
                    f"(fitted blur eigenvalues {eig[0]:.2f}, {eig[1]:.2f} HR px^2)", **extra)
    bic = np.array(bicubic_equivalent_cov())
    if snap_bicubic > 0 and np.linalg.norm(cov - bic) <= snap_bicubic:
        k2, model, reason = bicubic_x2_kernel(), "bicubic", ""
    else:
        vals, vecs = np.linalg.eigh(cov)
        cov_pd = vecs @ np.diag(np.clip(vals, 0.1, None)) @ vecs.T
        k2, model = gaussian_from_cov(cov_pd, size=size), "gaussian"
        reason = check_kernel_priors(k2)
    out = k2 if s == 2 else analytic_x4(k2)
    if reason:
        log.info("kernel estimation: the estimate fails the priors (%s)", reason)
    return KernelEstimate(out, s, not reason, reason, model,  # type: ignore[arg-type]
                          seconds=time.perf_counter() - t0, **extra)  # type: ignore[arg-type]
