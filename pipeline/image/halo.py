"""How wide a halo must be for tiled ZSSR inference to equal whole-image inference.

``zssr.predict`` is a chain of local steps (bicubic upsampling, the network,
back-projection passes, per-pixel clipping and median), so an output pixel
depends only on LR pixels within some radius.  Two radii are computed here,
both in LR pixels (:func:`dependency_radius`):

* ``tolerance=0``: the **support** radius.  Pixels farther away cannot change
  the output at all: tiled output equals whole-image output up to the order of
  floating-point operations (bitwise on CPU in the tests).  It is a sum of
  kernel supports and grows by 4 LR px per back-projection pass (86 px for
  the paper's settings at x2).
* ``tolerance > 0`` (the default, :data:`AUTO_TOLERANCE`): the **effective**
  radius.  Back-projection converges, so the influence of a pixel decays fast
  with distance; beyond this radius it changes the output by less than
  ``tolerance`` times the value range.  It is measured once per setting by
  running the engine's own back-projection operators on an impulse (22 px for
  the paper's settings at x2; the farthest change measured by flipping one
  pixel is 19 px, ``tests/test_tiles_engine.py``).

For gradual SR (``config.scale_steps``) call it once per step, with that step's
relative scale.

>>> from zssr.config import ZSSRConfig
>>> dependency_radius(ZSSRConfig(), 2, tolerance=0)
86
"""

from __future__ import annotations

import functools
import logging
import math
from fractions import Fraction
from numbers import Integral
from typing import TYPE_CHECKING, Literal

import numpy as np

from geometry import Scale, ScaleLike, as_scale, coerce_pair, output_shape

if TYPE_CHECKING:
    import torch

    from zssr.config import ZSSRConfig

__all__ = ["AUTO_TOLERANCE", "dependency_radius", "support_radius", "resolve_halo"]

logger = logging.getLogger(__name__)

#: Default tolerance of ``halo="auto"``: differences at tile seams stay below
#: 1e-6 of the value range (a 16-bit image's quantisation step is 1.5e-5).
AUTO_TOLERANCE = 1e-6

_PROBE = 40  # LR half-size of the impulse-response probe image


def support_radius(config: ZSSRConfig, scale: ScaleLike, *,
                   kernel_shape: tuple[int, int] | None = None) -> int:
    """LR pixels beyond which an input pixel cannot change ``predict``'s output.

    Reasoning.  Measure positions in LR pixel units; HR pixel ``j`` sits at
    ``(j + 1/2) / s - 1/2``.  A step's value depends only on inputs within a
    distance ``w``, and the widths of a chain add up:

    * bicubic upsampling (Keys cubic, zero at ``|x| = 2``): ``w = 2``;
    * the network: ``net.receptive_radius`` HR px (``depth * (k // 2)``, zero
      padding), i.e. ``w = radius / s``;
    * one back-projection pass ``sr += up(lr - down(sr))``: ``down`` with the
      antialiased cubic (stretched by ``s``, so ``2 s`` HR px) has ``w = 2``;
      with a numeric kernel of ``K`` HR taps (ZSSR's ``numeric_kernel``:
      correlate, then keep HR pixel ``round(i * s)``, at most ``s / 2`` HR px
      from LR pixel ``i``) ``w = (K // 2) / s + 1/2``; ``up`` adds ``w = 2``;
    * clipping and the ensemble median are per pixel; the dihedral members run
      the same chain in another orientation;
    * ``predict`` back-projects each member and then the median:
      ``2 * back_projection_iters`` passes (also for a single member, as the
      official ``final_test``).

    Total ``D = 2 + radius / s + 2 * iters * (w_down + 2)``.  A tile holds wrong
    values only beyond its read window (padding at positions ``<= -1`` on LR
    grids, ``<= -1/2 - 1/(2 s)`` on HR grids, relative to the window's first
    pixel); through the chain they reach at most ``-1 + D`` (HR padding enters
    after the first upsampling, so it reaches less far).  The first HR core
    pixel sits at ``halo - 1/2 + 1/(2 s)``, so any ``halo > D - 1/2 - 1/(2 s)``
    is exact; this returns ``ceil(D)`` (at most one pixel more).  For an
    anisotropic scale the larger axis radius is returned.
    """
    scales = as_scale(scale)
    if kernel_shape is not None:
        kernel_shape = coerce_pair(kernel_shape, name="kernel_shape", minimum=1)
    passes = 2 * config.infer.back_projection_iters
    out = 0
    for axis, s in enumerate(scales):
        if kernel_shape is None:
            w_down = Fraction(2)
        else:
            w_down = Fraction(kernel_shape[axis] // 2) / s + Fraction(1, 2)
        total = 2 + Fraction(config.net.receptive_radius) / s + passes * (w_down + 2)
        out = max(out, math.ceil(total))
    return out


def dependency_radius(config: ZSSRConfig, scale: ScaleLike, *,
                      kernel_shape: tuple[int, int] | None = None,
                      down_kernel: torch.Tensor | np.ndarray | None = None,
                      tolerance: float = AUTO_TOLERANCE) -> int:
    """The halo (LR px) that makes tiled ``predict`` equal whole-image ``predict``.

    ``tolerance=0``: :func:`support_radius` (bitwise equal).  Otherwise the
    effective radius: pixels farther away change the output by less than
    ``tolerance * (hi - lo)`` of the clip range.  It is estimated from the
    engine's own back-projection operators (``zssr.train.Degradation``):

    1. Wrong values enter a tile at its read border: the LR padding, which
       spoils the members within the hard support ``2 + radius / s`` of the
       upsampling and the network, and the padding of the down- and upscaling
       of every back-projection pass (``4 * iters + 1`` entry points in all).
    2. From there only back-projection carries them.  Its linear response to an
       LR and to an HR impulse is computed in float64 on a probe image; the
       response summed over a half-plane of unit errors beyond distance ``r``
       is the error at distance ``r`` of a straight tile border.
    3. The reach ``r`` is the first distance where that tail, times the number
       of entry points, is below ``tolerance``.  The halo is
       ``ceil(max(1 + radius / s + r_hr, r_lr) + 1)``, never more than the
       support radius.

    Clipping and the median are 1-Lipschitz per pixel and are not modelled;
    ``tests/test_tiles_engine.py`` checks the estimate against measurements.
    ``down_kernel`` (the shifted kernel passed to ``predict``) implies
    ``kernel_shape``; with only ``kernel_shape`` the support radius is used.
    """
    if isinstance(tolerance, bool) or not (isinstance(tolerance, (int, float))
                                           and 0 <= tolerance < 1):
        raise ValueError(f"tolerance must be a number in [0, 1), got {tolerance!r}")
    if down_kernel is not None:
        if hasattr(down_kernel, "detach"):  # a torch tensor, possibly on a GPU
            down_kernel = down_kernel.detach().cpu().numpy()
        down_kernel = np.asarray(down_kernel, dtype=np.float64)
        if down_kernel.ndim != 2:
            raise ValueError(f"down_kernel must be 2-D, got shape {down_kernel.shape}")
        kernel_shape = down_kernel.shape
    exact = support_radius(config, scale, kernel_shape=kernel_shape)
    iters = config.infer.back_projection_iters
    if tolerance == 0 or iters == 0 or (kernel_shape is not None and down_kernel is None):
        return exact
    scales = as_scale(scale)
    key = None if down_kernel is None else (down_kernel.shape, down_kernel.tobytes())
    reach = _bp_reach(scales, 2 * iters, key, tolerance / (4 * iters + 1))
    if reach is None:  # the response did not decay within the probe: stay exact
        return exact
    out = 0
    for s, (r_lr, r_hr) in zip(scales, reach, strict=True):
        r = max(1 + Fraction(config.net.receptive_radius) / s + Fraction(r_hr), Fraction(r_lr))
        out = max(out, math.ceil(r + 1))
    return min(out, exact)


def _bp_reach(scales: Scale, passes: int,
              kernel_key: tuple[tuple[int, ...], bytes] | None,
              tol: float) -> list[tuple[int, int]] | None:
    """Per axis ``(reach of an LR impulse, reach of an HR impulse)`` of ``passes``
    back-projection passes, in whole LR px; ``None`` if not decayed on the probe."""
    out = []
    for marginals in _bp_response(scales, passes, kernel_key):
        reaches = []
        for dist, marginal in marginals:
            r = next((r for r in range(_PROBE - 8) if marginal[dist > r].sum() <= tol), None)
            if r is None:
                return None
            reaches.append(r)
        out.append((reaches[0], reaches[1]))
    return out


@functools.lru_cache(maxsize=16)
def _bp_response(scales: Scale, passes: int,
                 kernel_key: tuple[tuple[int, ...], bytes] | None,
                 ) -> tuple[tuple[tuple[np.ndarray, np.ndarray], ...], ...]:
    """Per axis, for an LR and an HR unit impulse: ``(distance from the impulse in
    LR px, |response| summed across the other axis)`` at each HR position."""
    import torch

    from zssr.train import Degradation

    kernel = None
    if kernel_key is not None:
        shape, raw = kernel_key
        kernel = torch.from_numpy(np.frombuffer(raw, dtype=np.float64).reshape(shape).copy())
    deg = Degradation(scales, kernel)
    n = 2 * _PROBE + 1
    hr_shape = output_shape((n, n), scales)
    centre_hr = tuple(int(_PROBE * s + s // 2) for s in scales)  # an HR pixel near LR centre
    lr = torch.zeros((2, n, n), dtype=torch.float64)  # channel 0: LR impulse, 1: HR impulse
    lr[0, _PROBE, _PROBE] = 1.0
    sr = deg.up(lr, hr_shape)
    sr[(1, *centre_hr)] = 1.0
    for _ in range(passes):
        sr = sr + deg.up(lr - deg.down(sr, output_shape=(n, n)), hr_shape)
    resp = sr.abs().numpy()
    out = []
    for axis, s in enumerate(scales):
        pos = (np.arange(hr_shape[axis]) + 0.5) / float(s) - 0.5
        origins = (_PROBE, (centre_hr[axis] + 0.5) / float(s) - 0.5)
        out.append(tuple((np.abs(pos - o), resp[c].sum(axis=1 - axis))
                         for c, o in enumerate(origins)))
    return tuple(out)


def resolve_halo(halo: int | Literal["auto"], *, config: ZSSRConfig, scale: ScaleLike,
                 kernel_shape: tuple[int, int] | None = None,
                 down_kernel: torch.Tensor | np.ndarray | None = None,
                 tolerance: float = AUTO_TOLERANCE) -> int:
    """The halo to use: ``"auto"`` -> :func:`dependency_radius`; an integer is kept,
    with a warning when it is below the effective radius (seams will show).

    >>> from zssr.config import ZSSRConfig
    >>> resolve_halo("auto", config=ZSSRConfig(), scale=2), resolve_halo(100, config=ZSSRConfig(), scale=2)
    (22, 100)
    """
    needed = dependency_radius(config, scale, kernel_shape=kernel_shape,
                               down_kernel=down_kernel, tolerance=tolerance)
    if halo == "auto":
        return needed
    if isinstance(halo, bool) or not isinstance(halo, Integral) or halo < 0:
        raise ValueError(f"halo must be 'auto' or an integer >= 0, got {halo!r}")
    if halo < needed:
        logger.warning("halo %d < dependency radius %d LR px: tiled output will differ from "
                       "whole-image output near tile seams; use halo='auto'", halo, needed)
    return int(halo)
