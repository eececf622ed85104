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

import dataclasses
import logging
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

from geometry import Scale, ScaleLike, as_scale, output_shape

from .config import ConfigError, ZSSRConfig
from .inference import predict
from .kernel_estimation import KernelEstimationError, estimate_kernel
from .kernels import prepare_kernel
from .model import build_model
from .normalize import Normalizer
from .resize import imresize
from .sampling import ArrayCropSource
from .train import TrainEvent, TrainingHistory, train

__all__ = ["super_resolve", "scale_steps", "fill_invalid", "merge_history"]

log = logging.getLogger(__name__)


def scale_steps(scale: ScaleLike, cfg: ZSSRConfig) -> list[Scale]:
    """Cumulative scale of each gradual-SR step (one step when ``cfg.scale_steps`` is empty)."""
    sc = as_scale(scale)
    if sc == Scale(1, 1):
        raise ConfigError(f"scale must upscale at least one axis, got {scale!r}")
    if cfg.gradual_steps:
        steps = [as_scale(tuple(step), name="gradual_steps") for step in cfg.gradual_steps]
        if steps[-1] != sc:
            raise ConfigError(f"config key 'gradual_steps': the last step "
                              f"{list(cfg.gradual_steps[-1])} must equal the requested scale "
                              f"{scale!r}")
        return steps
    if not cfg.scale_steps:
        return [sc]
    steps = [as_scale(s, name="scale_steps") for s in cfg.scale_steps]
    if steps[-1] != sc:
        raise ConfigError(f"config key 'scale_steps': the last step {cfg.scale_steps[-1]} must "
                          f"equal the requested scale {scale!r}")
    return steps


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
    steps = scale_steps(scale, cfg)
    norm = Normalizer.fit(arr, policy=cfg.norm.policy, percentiles=cfg.norm.percentiles, mask=mask,
                          value_range=value_range)
    lo, hi = (torch.from_numpy(v) for v in norm.clip_range)
    work = fill_invalid(norm.forward(arr), mask)
    if isinstance(kernel, str):
        kernel = _estimated_kernel(kernel, work, mask, steps, seed)
    current = torch.from_numpy(work)
    valid = None if mask is None else np.asarray(mask, bool)
    model = build_model(arr.shape[0], cfg.net, seed=seed, device=device, state=init_state)
    history = TrainingHistory()
    if cfg.gradual_steps:
        current, model = _official_gradual(model, work, valid, steps, cfg, kernel, (lo, hi),
                                           seed, init_state is not None, history, on_event)
        steps = steps[-1:]
    prev = Scale(1, 1)
    for i, step in enumerate([] if cfg.gradual_steps else steps):
        rel = step / prev
        k = None if kernel is None else prepare_kernel(kernel, rel.floats)
        if i and cfg.reinit_each_step:
            model = build_model(arr.shape[0], cfg.net, seed=seed + i, device=device)
        source = ArrayCropSource(current.numpy(), valid)
        warm = init_state is not None and i == 0
        hist = train(model, source, scale=rel, cfg=cfg.train.warm() if warm else cfg.train,
                     kernel=k, clip_range=(lo, hi), seed=seed + i, on_event=on_event)
        hist.warm_started = warm
        current = predict(model, current, scale=rel, infer=cfg.infer, down_kernel=k,
                          clip_range=(lo, hi)).cpu()
        if valid is not None:
            up = imresize(torch.from_numpy(valid[None].astype(np.float32)), scale=rel.floats,
                          output_shape=tuple(current.shape[-2:]))
            valid = up[0].numpy() > 0.5
        merge_history(history, hist, step.floats, i)
        prev = step
    if state_out is not None:
        state_out.update({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
    final_hw = output_shape(arr.shape[1:], steps[-1])
    if tuple(current.shape[-2:]) != final_hw:  # gradual steps may round up; crop to the target
        current = current[..., : final_hw[0], : final_hw[1]]
    sr = norm.inverse(current.numpy())
    return (sr[0] if squeeze else sr), history


def _estimated_kernel(kind: str, work: np.ndarray, mask: np.ndarray | None,
                      steps: list[Scale], seed: int) -> np.ndarray | None:
    """``kernel="estimate"``: the image's own kernel, or None (bicubic) with a warning."""
    if kind != "estimate":
        raise ConfigError(f"kernel must be a 2-D array, None or 'estimate', got {kind!r}")
    if len(steps) != 1 or not steps[0].isotropic:
        raise KernelEstimationError(
            f"kernel='estimate' needs one isotropic x2 or x4 step, got steps "
            f"{[list(s.floats) for s in steps]}; give a kernel array or drop gradual steps")
    est = estimate_kernel(work, scale=steps[0], mask=mask, seed=seed)
    if not est.ok:
        log.warning("kernel estimation unusable (%s); assuming the bicubic kernel", est.reason)
        return None
    if est.model == "bicubic":
        log.info("the estimated kernel is bicubic's; using the bicubic kernel")
        return None
    return est.kernel


def _official_gradual(model: torch.nn.Module, work: np.ndarray, valid: np.ndarray | None,
                      steps: list[Scale], cfg: ZSSRConfig,
                      kernel: np.ndarray | None, clip: tuple[torch.Tensor, torch.Tensor],
                      seed: int, warm: bool, history: TrainingHistory,
                      on_event: Callable[[TrainEvent], None] | None,
                      ) -> tuple[torch.Tensor, torch.nn.Module]:
    """The official gradual SR (``X2_GRADUAL_IDEAL_CONF``, no base change).

    Step ``i`` trains (continuing from step ``i - 1``, the learning rate reset) on fathers
    from the input and the earlier steps' outputs, then super-resolves the *input* at the
    step's cumulative scale.  Returns the last step's output (working units) and the net.
    """
    source = ArrayCropSource(work, valid)
    lr = torch.from_numpy(work)
    pyramid: list[tuple[ArrayCropSource, float]] = []
    out = lr
    for i, step in enumerate(steps):
        k = None if kernel is None else prepare_kernel(kernel, step.floats)
        if i and cfg.reinit_each_step:
            model = build_model(work.shape[0], cfg.net, seed=seed + i,
                                device=next(model.parameters()).device)
        first_warm = warm and i == 0
        hist = train(model, source, scale=step, cfg=cfg.train.warm() if first_warm else cfg.train,
                     kernel=k, clip_range=clip, seed=seed + i, on_event=on_event,
                     father_sources=pyramid)
        hist.warm_started = first_warm
        infer = cfg.infer
        if cfg.gradual_back_projection_iters:
            infer = dataclasses.replace(infer, back_projection_iters=int(
                cfg.gradual_back_projection_iters[i]))
        out = predict(model, lr, scale=step, infer=infer, down_kernel=k, clip_range=clip).cpu()
        merge_history(history, hist, step.floats, i)
        # the official base scale of a source is its smaller axis scale; a later step whose
        # smaller scale is no larger adds no source the sampler would pick
        base = min(step.floats)
        if base > (pyramid[-1][1] if pyramid else 1.0) + 1e-9:
            mask = None
            if valid is not None:
                up = imresize(torch.from_numpy(valid[None].astype(np.float32)),
                              scale=step.floats, output_shape=tuple(out.shape[-2:]))
                mask = up[0].numpy() > 0.5
            pyramid.append((ArrayCropSource(out.numpy(), mask), base))
    return out, model


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
