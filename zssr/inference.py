"""Inference: upsample, network, 8-way geometric self-ensemble, back-projection.

This is the official ``final_test``: for each of the 8 dihedral transforms of
the LR input (4 rotations x flip; only the 4 axis-preserving ones for an
anisotropic scale) upsample with bicubic, run the network, clip, undo the
transform and back-project against the LR input; take the per-pixel median
of the members (``numpy.median`` semantics: mean of the two middle values)
and back-project once more.  Every step is local, so the output at a pixel
depends only on a bounded LR neighbourhood (see ``geometry.tiles``).
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import torch

from geometry import ScaleLike, TileGrid, as_scale, output_shape

from .config import ConfigError, InferConfig
from .resize import imresize
from .sampling import dihedral, undo_dihedral
from .train import Degradation

__all__ = ["predict", "back_project", "ensemble_members", "chosen_members", "median",
           "forward_blocked", "BLOCK_BYTES"]

# On the CPU the network runs over blocks of at most BLOCK_BYTES per layer output
# (64 channels: about 256 x 256 pixels).  glibc mmaps a large tensor afresh for every
# layer and unmaps it on free, and the kernel zero-fills each new page on first touch;
# a 3x3 64->64 convolution on a 600 x 600 tile then runs ~28 % slower than on reused
# memory (BENCHMARKS.md section 8).  Blocks are the tiles of a geometry.TileGrid at
# scale 1 with the network's receptive radius as halo, so the result is the same
# function (bit for bit in tests/test_engine.py).
BLOCK_BYTES = 16 * 2 ** 20


def ensemble_members(ensemble: bool, scale: ScaleLike) -> list[int]:
    if not ensemble:
        return [0]
    sy, sx = scale
    if sy != sx:
        return [0, 2, 4, 6]  # rotations by 90 degrees would swap the axes' scales
    return list(range(8))


def chosen_members(members: list[int], chosen: tuple[int, ...]) -> list[int]:
    """The ``chosen`` subset of ``members`` (all of them when ``chosen`` is empty), in
    the group's order; a member outside ``members`` (an axis-swapping one under an
    anisotropic scale) is a :class:`~zssr.config.ConfigError`."""
    if not chosen:
        return members
    extra = [k for k in chosen if k not in members]
    if extra:
        raise ConfigError(f"config key 'infer.ensemble_members': member {extra[0]} is not "
                          f"available at this scale; allowed: {members}")
    return [k for k in members if k in chosen]


def _integral_pad(n: int, s: Fraction) -> int:
    """Smallest ``p >= 0`` with ``(n + p) * s`` an integer: ``n + p`` a multiple of the
    denominator of the exact scale ``s``."""
    return -n % s.denominator


def _mirror_pad(x: torch.Tensor, pad_rows: int, pad_cols: int) -> torch.Tensor:
    """Pad the bottom/right with half-sample mirror copies (``... c d | d c ...``)."""
    def idx(n: int, p: int) -> torch.Tensor:
        i = torch.arange(n + p, device=x.device) % (2 * n)
        return torch.where(i < n, i, 2 * n - 1 - i)

    if pad_rows:
        x = x.index_select(-2, idx(x.shape[-2], pad_rows))
    if pad_cols:
        x = x.index_select(-1, idx(x.shape[-1], pad_cols))
    return x


def median(stack: torch.Tensor) -> torch.Tensor:
    """Median over dim 0 with numpy semantics (mean of the two middle values for even counts)."""
    n = stack.shape[0]
    if n == 1:
        return stack[0]
    s = torch.sort(stack, dim=0).values
    if n % 2:
        return s[n // 2]
    return (s[n // 2 - 1] + s[n // 2]) / 2


def back_project(sr: torch.Tensor, lr: torch.Tensor, deg: Degradation, iters: int,
                 lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``iters`` rounds of ``sr += up(lr - down(sr))``, clipped to ``[lo, hi]``."""
    for _ in range(iters):
        err = lr - deg.down(sr, output_shape=tuple(lr.shape[-2:]))
        sr = sr + deg.up(err, tuple(sr.shape[-2:]))
        sr = torch.clamp(sr, lo, hi)
    return sr


def _net(model: torch.nn.Module, x: torch.Tensor, precision: str) -> torch.Tensor:
    """The network on ``x`` (N, C, H, W), in fp32 or under bf16 autocast (fp32 out)."""
    x = x.contiguous(memory_format=torch.channels_last)
    if precision == "bf16":
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            return model(x).float()
    return model(x)


def _block_sides(h: int, w: int, pixels: int, radius: int) -> tuple[int, int]:
    """Core block height and width: equal blocks of about ``pixels`` with their margins."""
    def even(n: int, most: int) -> int:  # n split into equal parts of at most ``most``
        return -(-n // -(-n // max(most, 16)))

    side = math.isqrt(pixels) - 2 * radius
    if w <= side:  # narrow: whole rows
        return even(h, pixels // (w + 2 * radius) - 2 * radius), w
    if h <= side:  # short: whole columns
        return h, even(w, pixels // (h + 2 * radius) - 2 * radius)
    return even(h, side), even(w, side)


def forward_blocked(model: torch.nn.Module, x: torch.Tensor, precision: str = "fp32", *,
                    block_bytes: int | None = None) -> torch.Tensor:
    """``model(x)`` for ``x`` (N, C, H, W), run over blocks on the CPU (see ``BLOCK_BYTES``).

    Each block is computed with a margin of the network's receptive radius
    (``model.cfg.receptive_radius``), and only its core is kept: the core's values
    depend on no pixel beyond the margin, and blocks on the image edge see the same
    zero padding as the whole image.  Small inputs, GPU inputs and networks without a
    known radius run in one call.  ``block_bytes``: default ``BLOCK_BYTES``; 0 = no blocks.
    """
    block_bytes = BLOCK_BYTES if block_bytes is None else block_bytes
    n, _, h, w = x.shape
    cfg = getattr(model, "cfg", None)
    radius = getattr(cfg, "receptive_radius", None)
    width = max(getattr(cfg, "width", x.shape[1]), x.shape[1])
    pixels = block_bytes // (4 * width)
    if x.device.type != "cpu" or radius is None or block_bytes <= 0 or n * h * w <= pixels:
        return _net(model, x, precision)
    if h * w <= pixels:  # whole images, as many per call as fit
        per = max(1, pixels // (h * w))
        return torch.cat([_net(model, x[i:i + per], precision) for i in range(0, n, per)])
    grid = TileGrid(shape=(h, w), tile=_block_sides(h, w, pixels, radius), halo=radius, scale=1)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    for i, block in itertools.product(range(n), grid):
        y = _net(model, x[(slice(i, i + 1), slice(None), *block.read.slices)], precision)
        out[(i, slice(None), *block.core.slices)] = y[(0, slice(None), *block.crop)]
    return out


def _run_member_group(model: torch.nn.Module, lr: torch.Tensor, ks: list[int],
                      deg: Degradation, out_hw: tuple[int, int], lo: torch.Tensor,
                      hi: torch.Tensor, batch: bool, precision: str = "fp32"
                      ) -> list[torch.Tensor]:
    """Upsample + net for the members ``ks`` (all with the same transformed shape)."""
    inputs = []
    for k in ks:
        x = dihedral(lr, k)
        shape = out_hw if k % 2 == 0 else (out_hw[1], out_hw[0])
        sy, sx = deg.scale.floats
        inputs.append(imresize(x, scale=(sy, sx) if k % 2 == 0 else (sx, sy), output_shape=shape,
                               kernel="cubic"))
    if batch:
        outs = list(forward_blocked(model, torch.stack(inputs), precision))
    else:
        outs = [forward_blocked(model, x[None], precision)[0] for x in inputs]
    return [undo_dihedral(torch.clamp(y, lo, hi), k) for y, k in zip(outs, ks,
                                                                                     strict=True)]


@torch.inference_mode()
def predict(model: torch.nn.Module, lr: torch.Tensor, *, scale: ScaleLike,
            infer: InferConfig | None = None, down_kernel: torch.Tensor | None = None,
            clip_range: tuple[torch.Tensor | float, torch.Tensor | float] = (0.0, 1.0),
            ) -> torch.Tensor:
    """Super-resolve ``lr`` ``(C, h, w)`` -> ``(C, ceil(h*s), ceil(w*s))`` (working units).

    ``scale``: anything :func:`geometry.as_scale` takes; the output size is
    :func:`geometry.output_shape`.
    """
    infer = infer or InferConfig()
    if lr.ndim != 3:
        raise ValueError(f"expected (C, h, w), got shape {tuple(lr.shape)}")
    device = next(model.parameters()).device
    lr = lr.to(device=device, dtype=torch.float32)
    c = lr.shape[0]
    lo, hi = (torch.as_tensor(v, dtype=torch.float32, device=device).reshape(-1, 1, 1)
              .expand(c, 1, 1) for v in clip_range)
    sc = as_scale(scale)
    deg = Degradation(sc, None if down_kernel is None else down_kernel.to(device))
    final_hw = output_shape(tuple(lr.shape[-2:]), sc)
    ks = chosen_members(ensemble_members(infer.ensemble, sc), infer.ensemble_members)
    if len(ks) > 1:
        # A flipped member sees the HR grid from the other edge; unless rows * s is an
        # integer that grid is shifted by rows - ceil(rows * s) / s LR px.  Mirror-pad the
        # bottom/right to an integral size so all members share one grid, crop at the end.
        pr, pc = _integral_pad(lr.shape[-2], sc.rows), _integral_pad(lr.shape[-1], sc.cols)
        lr = _mirror_pad(lr, pr, pc)
    out_hw = output_shape(tuple(lr.shape[-2:]), sc)
    was_training = model.training
    model.eval()
    members: list[torch.Tensor] = []
    for group in ([k for k in ks if k % 2 == 0], [k for k in ks if k % 2 == 1]):
        if group:
            members += _run_member_group(model, lr, group, deg, out_hw, lo, hi,
                                         infer.batch_members, infer.precision)
    n_bp = infer.back_projection_iters
    if n_bp:
        members = [back_project(m, lr, deg, n_bp, lo, hi) for m in members]
    # as the official final_test: back-project after the median too (even for one member)
    sr = back_project(median(torch.stack(members)), lr, deg, n_bp, lo, hi)
    model.train(was_training)
    return sr[..., : final_hw[0], : final_hw[1]]
