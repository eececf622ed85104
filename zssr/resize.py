"""MATLAB ``imresize``-compatible resizing of torch tensors (CPU and GPU).

A port of the behaviour of ZSSR's ``imresize.py`` (``assafshocher/ZSSR``), which
itself reproduces MATLAB's ``imresize``:

* output size and scale follow ``fix_scale_and_size``: a scale alone gives
  ``ceil(in * scale)`` (by :func:`geometry.output_size`, exactly: the float scale is
  read as the ratio it stands for, so ``50 x 1.1`` is 55 rows where MATLAB's float
  product gives 56); a shape alone gives ``scale = out / in``; both given: the
  weights use the scale, the size uses the shape;
* the cubic kernel (Keys, a = -0.5, width 4); when downscaling a dimension the
  kernel is stretched by ``1 / scale`` (antialiasing);
* symmetric (mirror, half-sample) boundary handling: ``d c b a | a b c d``
  (ZSSR's port and old MATLAB); ``boundary="replicate"`` clamps indices as
  current MATLAB does (see :mod:`zssr.protocol`);
* one pass per dimension, in order of increasing scale (H first on ties);
* weights are computed in float64 and cast to the tensor's dtype, cached per
  ``(in_len, out_len, scale, kernel, antialiasing, device, dtype)``.

Each pass is a row gather (``index_select``) per kernel tap, accumulated in a
fixed order, so results are deterministic and the extra memory is a few copies
of the image: no dense resampling matrices.

A 2-D numeric kernel (a degradation PSF, already prepared with
:func:`zssr.kernels.prepare_kernel`) selects ZSSR's ``numeric_kernel`` path for
downscaling: correlation with the kernel (scipy ``correlate`` default
boundary, i.e. half-sample symmetric) and subsampling at
``round(linspace(0, in - 1 / scale, out))``, done as one ``conv2d`` (strided
when the kept positions are evenly spaced).

Difference from ZSSR: antialiasing is decided per dimension (MATLAB's rule)
instead of from the first dimension's scale only; the two agree for isotropic
scales.

>>> x = torch.arange(16.0).reshape(1, 4, 4)
>>> imresize(x, scale=2.0).shape
torch.Size([1, 8, 8])
>>> imresize(x, output_shape=(2, 3)).shape
torch.Size([1, 2, 3])
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch

from geometry import as_scale, downscaled_size, output_size

__all__ = [
    "KernelName",
    "Boundary",
    "KERNELS",
    "imresize",
    "contributions",
    "fix_scale_and_size",
]

KernelName = Literal["cubic", "linear", "box", "lanczos2", "lanczos3"]
Boundary = Literal["symmetric", "replicate"]


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (
        -0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2
    ) * ((ax > 1) & (ax <= 2))


def _linear(x: np.ndarray) -> np.ndarray:
    return (x + 1) * ((x >= -1) & (x < 0)) + (1 - x) * ((x >= 0) & (x <= 1))


def _box(x: np.ndarray) -> np.ndarray:
    return ((x >= -0.5) & (x < 0.5)) * 1.0


def _lanczos(a: int) -> Callable[[np.ndarray], np.ndarray]:
    eps = float(np.finfo(np.float32).eps)

    def kernel(x: np.ndarray) -> np.ndarray:
        num = np.sin(math.pi * x) * np.sin(math.pi * x / a) + eps
        return num / (math.pi**2 * x**2 / a + eps) * (np.abs(x) < a)

    return kernel


#: Interpolation kernels by name: (function of the distance in pixels, support width).
KERNELS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    "cubic": (_cubic, 4.0),
    "linear": (_linear, 2.0),
    "box": (_box, 1.0),
    "lanczos2": (_lanczos(2), 4.0),
    "lanczos3": (_lanczos(3), 6.0),
}


def _pair(value: float | Sequence[float], name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        pair = (float(value), float(value))
    else:
        pair = tuple(float(v) for v in value)  # type: ignore[union-attr]
        if len(pair) != 2:
            raise ValueError(f"{name} must be a number or a pair (H, W), got {value!r}")
    if not all(math.isfinite(v) and v > 0 for v in pair):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return pair  # type: ignore[return-value]


def fix_scale_and_size(
    in_shape: tuple[int, int],
    *,
    scale: float | tuple[float, float] | None,
    output_shape: tuple[int, int] | None,
) -> tuple[tuple[float, float], tuple[int, int]]:
    """Complete ``(scale, output_shape)`` for an ``(H, W)`` input like ZSSR does.

    >>> fix_scale_and_size((10, 7), scale=0.5, output_shape=None)
    ((0.5, 0.5), (5, 4))
    >>> fix_scale_and_size((10, 8), scale=None, output_shape=(20, 4))
    ((2.0, 0.5), (20, 4))
    """
    shape: tuple[int, int] | None = None
    if output_shape is not None:
        if len(output_shape) != 2 or any(int(s) != s or s < 1 for s in output_shape):
            raise ValueError(
                f"output_shape must be two integers >= 1 (H, W), got {output_shape!r}"
            )
        shape = (int(output_shape[0]), int(output_shape[1]))
    if scale is not None:
        sc = _pair(scale, "scale")
        if shape is None:
            shape = (_resized(in_shape[0], sc[0]), _resized(in_shape[1], sc[1]))
        return sc, shape
    if shape is None:
        raise ValueError("imresize needs scale=, output_shape= or both; got neither")
    return (shape[0] / in_shape[0], shape[1] / in_shape[1]), shape


def _resized(n: int, factor: float) -> int:
    """``ceil(n * factor)`` pixels by geometry's exact rule: an upscale by ``factor``, or a
    downscale by ``1 / factor`` (each read as the ratio of small integers it stands for).

    >>> _resized(50, 1.1), _resized(101, 0.5), _resized(7, 1 / 3)
    (55, 51, 3)
    """
    if factor >= 1:
        return output_size(n, as_scale(factor).rows)
    return downscaled_size(n, as_scale(1 / factor, name="1 / scale").rows)


def _boundary_indices(idx: np.ndarray, n: int, boundary: Boundary) -> np.ndarray:
    """Map any integer indices into ``[0, n)`` with the given boundary rule."""
    if boundary == "replicate":
        return np.clip(idx, 0, n - 1)
    mirror = np.concatenate([np.arange(n), np.arange(n - 1, -1, -1)])  # a b c d | d c b a
    return mirror[np.mod(idx, 2 * n)]


@functools.lru_cache(maxsize=256)
def contributions(
    in_len: int,
    out_len: int,
    scale: float,
    kernel: str,
    antialiasing: bool,
    boundary: Boundary = "symmetric",
) -> tuple[np.ndarray, np.ndarray]:
    """Weights and input indices of one resize pass, as MATLAB's ``contributions``.

    Returns ``(weights, indices)``, both ``(out_len, taps)``: output pixel ``i`` is
    ``sum_t weights[i, t] * input[indices[i, t]]``. Weights are float64 and sum
    to 1 per row; indices are int64, already mirrored into ``[0, in_len)``.
    Taps whose weight is zero for every output pixel are dropped. Cached; the
    returned arrays are read-only.
    """
    func, width = KERNELS[kernel]
    if antialiasing and scale < 1:
        def fixed(arg: np.ndarray) -> np.ndarray:
            return scale * func(scale * arg)
        width = width / scale
    else:
        fixed = func
    out_coords = np.arange(1, out_len + 1, dtype=np.float64)
    # 1-based input position of each output pixel centre: p_in = p_out/s + (1 - 1/s)/2
    match = out_coords / scale + 0.5 * (1 - 1.0 / scale)
    left = np.floor(match - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :] - 1  # 0-based, may fall outside
    weights = fixed(match[:, None] - idx - 1)
    sums = weights.sum(axis=1, keepdims=True)
    sums[sums == 0] = 1.0
    weights = weights / sums
    indices = _boundary_indices(idx.astype(np.int64), in_len, boundary)
    keep = np.any(weights != 0, axis=0)
    weights = np.ascontiguousarray(weights[:, keep])
    indices = np.ascontiguousarray(indices[:, keep]).astype(np.int64)
    weights.flags.writeable = False
    indices.flags.writeable = False
    return weights, indices


@functools.lru_cache(maxsize=256)
def _torch_contributions(
    in_len: int,
    out_len: int,
    scale: float,
    kernel: str,
    antialiasing: bool,
    boundary: Boundary,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    weights, indices = contributions(in_len, out_len, scale, kernel, antialiasing, boundary)
    w = torch.tensor(weights, dtype=dtype, device=device)  # (out, taps)
    i = torch.tensor(indices, dtype=torch.long, device=device)  # (out, taps)
    return w.t().contiguous(), i.t().contiguous()  # (taps, out): one row per tap


BAND_OUT = 64  # output samples per banded product


@functools.lru_cache(maxsize=256)
def _band_plan(weights: torch.Tensor, indices: torch.Tensor
               ) -> tuple[tuple[int, int, torch.Tensor], ...]:
    """The resampling matrix of one axis in runs of ``BAND_OUT`` outputs, each cut to
    the input range its taps reach: ``(lo, hi, matrix (outputs, hi - lo))`` per run,
    mirrored taps accumulated."""
    taps, out_len = weights.shape
    plan = []
    for o0 in range(0, out_len, BAND_OUT):
        w, i = weights[:, o0:o0 + BAND_OUT], indices[:, o0:o0 + BAND_OUT]
        lo, hi = int(i.min()), int(i.max()) + 1
        m = torch.zeros(w.shape[1], hi - lo, dtype=w.dtype, device=w.device)
        rows = torch.arange(w.shape[1], device=w.device).expand(taps, -1)
        m.index_put_((rows.reshape(-1), (i - lo).reshape(-1)), w.reshape(-1), accumulate=True)
        plan.append((lo, hi, m))
    return tuple(plan)


def _resize_along(x: torch.Tensor, dim: int, weights: torch.Tensor, indices: torch.Tensor
                  ) -> torch.Tensor:
    """Weighted sum over taps of ``x`` gathered along ``dim`` (weights: (taps, out)).

    Each run of ``BAND_OUT`` outputs is one matrix product with the part of the
    resampling matrix its taps reach (BLAS, several times faster than per-tap
    passes over memory, and without the zeros of the full matrix, which grow with
    the axis length).  Rows (``dim=-2``) multiply from the left, columns from the
    right: neither needs a transposed copy of the image.
    """
    plan = _band_plan(weights, indices)
    if dim == -1:
        x2 = x.reshape(-1, x.shape[-1])
        out = torch.cat([x2[:, lo:hi] @ mb.t() for lo, hi, mb in plan], dim=1)
        return out.reshape(*x.shape[:-1], out.shape[1])
    if dim != -2:
        raise ValueError(f"resize along dim -1 or -2, not {dim}")
    return torch.cat([torch.matmul(mb, x[..., lo:hi, :]) for lo, hi, mb in plan], dim=-2)


def _regular_stride(positions: np.ndarray, padded_len: int) -> int | None:
    """The stride if ``positions`` is ``0, s, 2s, ...`` (s >= 1), else None."""
    if len(positions) == 1:
        return padded_len  # one output: any stride that yields exactly one
    steps = np.diff(positions)
    step = int(steps[0])
    return step if step >= 1 and np.all(steps == step) else None


def _numeric_kernel(
    x: torch.Tensor,
    kernel: torch.Tensor,
    scale: tuple[float, float],
    out_shape: tuple[int, int],
) -> torch.Tensor:
    """Correlate with ``kernel`` (symmetric boundary) and subsample, like ZSSR.

    ``scipy.ndimage.correlate`` computes ``out[i] = sum_j k[j] * in[i + j - len(k)//2]``
    with boundary mode 'reflect', which is half-sample symmetric (``d c b a | a b c d``,
    torch/numpy 'symmetric', not torch's 'reflect'). The image is padded that way by
    an index gather, then ``conv2d`` (a correlation) runs with the subsampling step
    as its stride when the kept positions are evenly spaced, else at stride 1
    followed by a gather.
    """
    kh, kw = kernel.shape
    H, W = x.shape[-2:]
    rows = np.round(np.linspace(0, H - 1 / scale[0], out_shape[0])).astype(np.int64)
    cols = np.round(np.linspace(0, W - 1 / scale[1], out_shape[1])).astype(np.int64)
    pad_rows = np.arange(-(kh // 2), H + kh - 1 - kh // 2)
    pad_cols = np.arange(-(kw // 2), W + kw - 1 - kw // 2)
    rows_idx = _boundary_indices(pad_rows, H, "symmetric")
    cols_idx = _boundary_indices(pad_cols, W, "symmetric")
    padded = x.index_select(-2, torch.as_tensor(rows_idx, device=x.device))
    padded = padded.index_select(-1, torch.as_tensor(cols_idx, device=x.device))
    lead = x.shape[:-2]
    flat = padded.reshape(-1, 1, len(pad_rows), len(pad_cols))  # (N, 1, Hp, Wp)
    stride_h = _regular_stride(rows, len(pad_rows))
    stride_w = _regular_stride(cols, len(pad_cols))
    weight = kernel.to(device=x.device, dtype=x.dtype).view(1, 1, kh, kw)
    out = torch.nn.functional.conv2d(flat, weight, stride=(stride_h or 1, stride_w or 1))
    out = out[:, 0]  # (N, H', W')
    if stride_h is None:
        out = out.index_select(-2, torch.as_tensor(rows, device=x.device))
    if stride_w is None:
        out = out.index_select(-1, torch.as_tensor(cols, device=x.device))
    out = out[:, : out_shape[0], : out_shape[1]]
    return out.reshape(*lead, out_shape[0], out_shape[1]).contiguous()


def _as_numeric_kernel(kernel: torch.Tensor | np.ndarray) -> torch.Tensor:
    k = torch.as_tensor(np.asarray(kernel) if isinstance(kernel, np.ndarray) else kernel)
    if k.dim() != 2 or k.numel() == 0:
        raise ValueError(
            f"a numeric kernel must be a non-empty 2-D array, got shape {tuple(k.shape)}"
        )
    if not (k.is_floating_point() or k.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"a numeric kernel must hold real numbers, got dtype {k.dtype}")
    return k.to(torch.float64)


def imresize(
    x: torch.Tensor,
    *,
    scale: float | tuple[float, float] | None = None,
    output_shape: tuple[int, int] | None = None,
    kernel: str | torch.Tensor | np.ndarray = "cubic",
    antialiasing: bool = True,
    boundary: Boundary = "symmetric",
) -> torch.Tensor:
    """Resize the last two dims of ``x`` (shape ``(..., H, W)``) like MATLAB ``imresize``.

    Args:
        x: floating-point tensor ``(..., H, W)`` on any device; not modified.
        scale: factor for both dims or ``(scale_h, scale_w)``; < 1 downscales.
        output_shape: ``(H_out, W_out)``. See the module docstring for how it
            combines with ``scale``.
        kernel: an interpolation kernel name (``"cubic"``, ``"linear"``, ``"box"``,
            ``"lanczos2"``, ``"lanczos3"``), or a 2-D numeric degradation kernel
            (downscaling only; pass it through :func:`zssr.kernels.prepare_kernel`
            first, it is not shifted here).
        antialiasing: stretch the kernel when downscaling (MATLAB default).
        boundary: ``"symmetric"`` (ZSSR's port and old MATLAB: mirror the edge
            pixels) or ``"replicate"`` (current MATLAB ``imresize``: clamp the
            indices). Named kernels only; a numeric kernel is always symmetric.

    Returns:
        A new tensor ``(..., H_out, W_out)`` with the dtype and device of ``x``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"imresize expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2 or not x.is_floating_point():
        raise TypeError(
            "imresize expects a floating-point tensor with at least 2 dims (..., H, W), "
            f"got dtype {x.dtype} and shape {tuple(x.shape)}; convert with x.float()"
        )
    in_shape = (int(x.shape[-2]), int(x.shape[-1]))
    if min(in_shape) < 1:
        raise ValueError(f"imresize got an empty image of shape {tuple(x.shape)}")
    sc, out_shape = fix_scale_and_size(in_shape, scale=scale, output_shape=output_shape)

    if not isinstance(kernel, str):
        k = _as_numeric_kernel(kernel)
        if sc[0] > 1 or sc[1] > 1:
            raise ValueError(
                f"a numeric kernel only downscales (scale <= 1); got scale {sc}. "
                "Upscale with a named kernel such as 'cubic'"
            )
        return _numeric_kernel(x, k, sc, out_shape)
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    if boundary not in ("symmetric", "replicate"):
        raise ValueError(f"unknown boundary {boundary!r}; choose 'symmetric' or 'replicate'")

    out = x
    for axis in sorted((0, 1), key=lambda a: sc[a]):  # stable: H first on ties
        if sc[axis] == 1.0 and out_shape[axis] == in_shape[axis]:
            continue
        w, i = _torch_contributions(
            in_shape[axis], out_shape[axis], sc[axis], kernel, bool(antialiasing),
            boundary, x.device, x.dtype,
        )
        out = _resize_along(out, axis - 2, w, i)
    return out if out is not x else x.clone()
