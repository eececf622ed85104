"""``super_resolve``: the whole ZSSR algorithm on one in-memory array.

>>> import numpy as np
>>> from zssr import super_resolve, config_from_dict
>>> img = (np.random.default_rng(0).random((24, 20)) * 255).astype(np.uint8)
>>> cfg = config_from_dict({"train": {"max_iters": 2, "crop_size": 16},
...                         "net": {"depth": 3, "width": 4}})
>>> sr, hist = super_resolve(img, scale=2, config=cfg)
>>> sr.shape, sr.dtype, hist.iterations
((48, 40), dtype('uint8'), 2)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

from geometry import ScaleLike, output_shape

from .config import ConfigError, ZSSRConfig
from .inference import predict
from .kernel_estimation import KernelEstimationError, estimate_kernel
from .kernels import prepare_kernel
from .model import build_model
from .normalize import Normalizer
from .resize import imresize
from .sampling import ArrayCropSource
from .sr_steps import SRStep, scale_steps, sr_steps
from .train import TrainEvent, TrainingHistory, train

__all__ = ["super_resolve", "scale_steps", "fill_invalid", "merge_history"]

log = logging.getLogger(__name__)


def fill_invalid(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Replace invalid pixels (and non-finite values) by the band's mean of valid pixels."""
    out = np.array(image, np.float32, copy=True)
    finite = np.isfinite(out).all(axis=0)
    valid = finite if mask is None else (finite & mask)
    if valid.all():
        return out
    for b in range(out.shape[0]):
        band = out[b]
        band[~valid] = float(band[valid].mean()) if valid.any() else 0.0
    return out


def super_resolve(image: np.ndarray, *, scale: ScaleLike,
                  config: ZSSRConfig | None = None,
                  kernel: np.ndarray | Literal["estimate"] | None = None,
                  mask: np.ndarray | None = None, seed: int | None = None,
                  device: str | torch.device = "cpu",
                  value_range: tuple[float, float] | None = None,
                  init_state: dict[str, torch.Tensor] | None = None,
                  state_out: dict[str, torch.Tensor] | None = None,
                  on_event: Callable[[TrainEvent], None] | None = None,
                  ) -> tuple[np.ndarray, TrainingHistory]:
    """Train ZSSR on ``image`` ``(H, W)`` or ``(C, H, W)`` and return ``(sr, history)``.

    ``sr`` has the input's layout and dtype and the shape ``ceil(H*s), ceil(W*s)``.
    ``mask`` ``(H, W)`` marks valid pixels (nodata excluded from sampling and loss).
    ``kernel`` is a 2-D downscaling kernel (HR pixels); None means MATLAB bicubic;
    ``"estimate"`` estimates it from the image (:mod:`zssr.kernel_estimation`, x2 or x4 in
    one step), falling back to bicubic with a warning when the estimate is unusable.
    ``value_range`` fixes the output's clip range (raw units); by default it is the
    dtype's range for integers and the data's own min/max for floats.
    ``init_state`` warm-starts from weights of a compatible earlier image (same bands)
    with the shorter ``train.warm_*`` schedule; ``state_out``, if a dict, receives the
    final weights (to warm-start the next image).
    """
    cfg = config or ZSSRConfig()
    arr = np.asarray(image)
    squeeze = arr.ndim == 2
    if squeeze:
        arr = arr[None]
    if arr.ndim != 3 or min(arr.shape[1:]) < 1:
        raise ValueError(f"expected an (H, W) or (C, H, W) image, got shape {np.shape(image)}")
    if mask is not None and np.shape(mask) != arr.shape[1:]:
        raise ValueError(f"mask shape {np.shape(mask)} does not match image {arr.shape[1:]}")
    seed = cfg.seed if seed is None else seed
    device = torch.device(device)
    steps = sr_steps(scale, cfg)
    norm = Normalizer.fit(arr, policy=cfg.norm.policy, percentiles=cfg.norm.percentiles, mask=mask,
                          value_range=value_range)
    lo, hi = (torch.from_numpy(v) for v in norm.clip_range)
    work = fill_invalid(norm.forward(arr), mask)
    if isinstance(kernel, str):
        kernel = _estimated_kernel(kernel, work, mask, steps, seed)
    lr = torch.from_numpy(work)
    lr_valid = None if mask is None else np.asarray(mask, bool)
    model = build_model(arr.shape[0], cfg.net, seed=seed, device=device, state=init_state)
    history = TrainingHistory()
    current, valid = lr, lr_valid  # the last computed output (what a rebasing step reads)
    fathers: list[tuple[ArrayCropSource, float]] = []
    for step in steps:
        i = step.index
        reads, reads_valid = (current, valid) if step.rebase else (lr, lr_valid)
        k = None if kernel is None else prepare_kernel(kernel, step.relative.floats)
        if i and cfg.reinit_each_step:
            model = build_model(arr.shape[0], cfg.net, seed=seed + i, device=device)
        warm = init_state is not None and i == 0
        hist = train(model, ArrayCropSource(reads.numpy(), reads_valid), scale=step.relative,
                     cfg=cfg.train.warm() if warm else cfg.train, kernel=k,
                     clip_range=(lo, hi), seed=seed + i, on_event=on_event,
                     father_sources=fathers)
        hist.warm_started = warm
        merge_history(history, hist, step.scale.floats, i)
        if step.inferred:
            current, valid = _infer_step(model, step, reads, reads_valid, k, (lo, hi))
            if step.father:  # the official base scale of a source: its smaller axis scale
                fathers.append((ArrayCropSource(current.numpy(), valid), min(step.scale.floats)))
    if state_out is not None:
        state_out.update({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
    final_hw = output_shape(arr.shape[1:], steps[-1].scale)
    if tuple(current.shape[-2:]) != final_hw:  # gradual steps may round up; crop to the target
        current = current[..., : final_hw[0], : final_hw[1]]
    sr = norm.inverse(current.numpy())
    return (sr[0] if squeeze else sr), history


def _estimated_kernel(kind: str, work: np.ndarray, mask: np.ndarray | None,
                      steps: list[SRStep], seed: int) -> np.ndarray | None:
    """``kernel="estimate"``: the image's own kernel, or None (bicubic) with a warning."""
    if kind != "estimate":
        raise ConfigError(f"kernel must be a 2-D array, None or 'estimate', got {kind!r}")
    if len(steps) != 1 or not steps[0].scale.isotropic:
        raise KernelEstimationError(
            f"kernel='estimate' needs one isotropic x2 or x4 step, got steps "
            f"{[list(s.scale.floats) for s in steps]}; give a kernel array or drop gradual steps")
    est = estimate_kernel(work, scale=steps[0].scale, mask=mask, seed=seed)
    if not est.ok:
        log.warning("kernel estimation unusable (%s); assuming the bicubic kernel", est.reason)
        return None
    if est.model == "bicubic":
        log.info("the estimated kernel is bicubic's; using the bicubic kernel")
        return None
    return est.kernel


def _infer_step(model: torch.nn.Module, step: SRStep, reads: torch.Tensor,
                reads_valid: np.ndarray | None, kernel: torch.Tensor | None,
                clip: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, np.ndarray | None]:
    """The step's output of the whole image it reads (the in-memory merger: one tile, the
    image) and its valid mask (the read mask upsampled, > 1/2)."""
    out = predict(model, reads, scale=step.relative, infer=step.config.infer, down_kernel=kernel,
                  clip_range=clip).cpu()
    if reads_valid is None:
        return out, None
    up = imresize(torch.from_numpy(reads_valid[None].astype(np.float32)),
                  scale=step.relative.floats, output_shape=tuple(out.shape[-2:]))
    return out, up[0].numpy() > 0.5


def merge_history(total: TrainingHistory, step: TrainingHistory, scale: tuple[float, float],
                   index: int) -> None:
    offset = total.iterations
    total.losses += step.losses
    total.test_iters += [offset + t for t in step.test_iters]
    total.reconstruction_errors += step.reconstruction_errors
    total.learning_rates += step.learning_rates
    total.lr_change_iters += [offset + t for t in step.lr_change_iters]
    total.iterations += step.iterations
    total.seconds += step.seconds
    total.stop_reason = step.stop_reason
    total.warm_started = total.warm_started or step.warm_started
    total.steps.append({"step": index, "scale": list(scale), "iterations": step.iterations,
                        "seconds": step.seconds, "stop_reason": step.stop_reason})
