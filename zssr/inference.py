"""Inference: upsample, network, 8-way geometric self-ensemble, back-projection.

This is the official ``final_test``: for each of the 8 dihedral transforms of
the LR input (4 rotations x flip; only the 4 axis-preserving ones for an
anisotropic scale) upsample with bicubic, run the network, clip, undo the
transform and back-project against the LR input; take the per-pixel median
of the members (``numpy.median`` semantics: mean of the two middle values)
and back-project once more.  Every step is local, so the output at a pixel
depends only on a bounded LR neighbourhood (see ``pipeline.tiles``).
"""

from __future__ import annotations

import math

import torch

from .config import InferConfig
from .resize import imresize
from .sampling import dihedral, undo_dihedral
from .train import Degradation, as_scale

__all__ = ["predict", "back_project", "output_shape", "ensemble_members", "median"]


def output_shape(shape: tuple[int, int], scale: float | tuple[float, float]) -> tuple[int, int]:
    """MATLAB ``imresize`` output size: ``ceil(n * s)`` per axis."""
    sy, sx = as_scale(scale)
    return (math.ceil(shape[0] * sy - 1e-9), math.ceil(shape[1] * sx - 1e-9))


def ensemble_members(ensemble: bool, scale: tuple[float, float]) -> list[int]:
    if not ensemble:
        return [0]
    if scale[0] != scale[1]:
        return [0, 2, 4, 6]  # rotations by 90 degrees would swap the axes' scales
    return list(range(8))


def _integral_pad(n: int, scale: float, limit: int = 1000) -> int:
    """Smallest ``p >= 0`` with ``(n + p) * scale`` an integer (0 if none below ``limit``)."""
    for p in range(limit):
        v = (n + p) * scale
        if abs(v - round(v)) < 1e-9:
            return p
    return 0


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


def _run_member_group(model: torch.nn.Module, lr: torch.Tensor, ks: list[int],
                      deg: Degradation, out_hw: tuple[int, int], lo: torch.Tensor,
                      hi: torch.Tensor, batch: bool, precision: str = "fp32"
                      ) -> list[torch.Tensor]:
    """Upsample + net for the members ``ks`` (all with the same transformed shape)."""
    inputs = []
    for k in ks:
        x = dihedral(lr, k)
        shape = out_hw if k % 2 == 0 else (out_hw[1], out_hw[0])
        sc = deg.scale if k % 2 == 0 else (deg.scale[1], deg.scale[0])
        inputs.append(imresize(x, scale=sc, output_shape=shape, kernel="cubic"))
    if batch:
        outs = list(_net(model, torch.stack(inputs), precision))
    else:
        outs = [_net(model, x[None], precision)[0] for x in inputs]
    return [undo_dihedral(torch.clamp(y, lo, hi), k) for y, k in zip(outs, ks,
                                                                                     strict=True)]


@torch.inference_mode()
def predict(model: torch.nn.Module, lr: torch.Tensor, *, scale: float | tuple[float, float],
            infer: InferConfig | None = None, down_kernel: torch.Tensor | None = None,
            clip_range: tuple[torch.Tensor | float, torch.Tensor | float] = (0.0, 1.0),
            ) -> torch.Tensor:
    """Super-resolve ``lr`` ``(C, h, w)`` -> ``(C, ceil(h*s), ceil(w*s))`` (working units)."""
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
    ks = ensemble_members(infer.ensemble, sc)
    if len(ks) > 1:
        # A flipped member sees the HR grid from the other edge; unless rows * s is an
        # integer that grid is shifted by rows - ceil(rows * s) / s LR px.  Mirror-pad the
        # bottom/right to an integral size so all members share one grid, crop at the end.
        pr, pc = _integral_pad(lr.shape[-2], sc[0]), _integral_pad(lr.shape[-1], sc[1])
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
