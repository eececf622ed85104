"""Training on the image itself: fathers, sons, L1 loss, the adaptive learning-rate policy.

Each iteration draws an HR *father* from the crop source, degrades it to its
LR *son* (downscale by the scale factor with the kernel, optional Gaussian
noise), upsamples the son back to the father's shape and takes one Adam step
on the L1 loss (valid pixels only).  Every ``run_test_every`` iterations the
*reconstruction error* is recorded: the net applied to the image's own
downscaled copy, against the image, on a bounded set of windows.  The
official learning-rate policy fits a line to the last points and divides
the rate by 10 when the slope is lost in the noise; training stops when the
rate falls below ``min_learning_rate`` or at ``max_iters``.

The loop knows nothing of files or progress bars; it reports through an
optional callback ``on_event(event: TrainEvent)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from geometry import Scale, ScaleLike, as_scale, downscaled_shape

from .config import TrainConfig
from .errors import ZSSRError
from .resize import imresize
from .sampling import CropSource, FatherSampler, Window

__all__ = ["Degradation", "LearningRatePolicy", "TrainEvent", "TrainingDivergedError",
           "TrainingHistory", "train"]

@dataclass
class Degradation:
    """HR -> LR with the kernel (``None``: MATLAB bicubic) and back up with bicubic.

    ``scale`` is anything :func:`geometry.as_scale` takes (stored as a
    :class:`~geometry.Scale`); the resampling weights use its floats.
    """

    scale: Scale
    kernel: torch.Tensor | None = None  # shifted 2-D kernel (see zssr.kernels.prepare_kernel)

    def __post_init__(self) -> None:
        self.scale = as_scale(self.scale)

    def down(self, hr: torch.Tensor, output_shape: tuple[int, int] | None = None) -> torch.Tensor:
        """``hr`` downscaled to ``output_shape``, by default ``ceil(n / s)`` per axis."""
        sy, sx = self.scale.floats
        kernel = self.kernel if self.kernel is not None else "cubic"
        shape = output_shape or downscaled_shape(hr.shape, self.scale)
        return imresize(hr, scale=(1.0 / sy, 1.0 / sx), output_shape=shape, kernel=kernel)

    def up(self, lr: torch.Tensor, output_shape: tuple[int, int]) -> torch.Tensor:
        return imresize(lr, scale=self.scale.floats, output_shape=output_shape, kernel="cubic")


class LearningRatePolicy:
    """The official ZSSR policy (``learning_rate_policy`` in ZSSR.py)."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.lr = cfg.learning_rate
        self.test_iters: list[int] = []
        self.errors: list[float] = []
        self.change_iters: list[int] = [0]
        # at least 3: the slope's standard error has n - 2 degrees of freedom, and
        # np.polyfit(cov=True) raises on 2 points (slope_range in [2, 3) * run_test_every
        # passes TrainConfig.validate and used to crash at the first policy check)
        self.points = max(3, cfg.learning_rate_slope_range // cfg.run_test_every)

    def record(self, iteration: int, error: float) -> None:
        self.test_iters.append(iteration)
        self.errors.append(error)

    def step(self, iteration: int) -> bool:
        """Call after each iteration; returns True when the rate was divided by 10."""
        cfg = self.cfg
        if (1 + iteration) % cfg.learning_rate_policy_check_every:
            return False
        if iteration - self.change_iters[-1] <= cfg.min_iters or len(self.errors) < self.points:
            return False
        x = np.asarray(self.test_iters[-self.points:], np.float64)
        y = np.asarray(self.errors[-self.points:], np.float64)
        (slope, _), cov = np.polyfit(x, y, 1, cov=True)
        std = math.sqrt(max(cov[0, 0], 0.0))
        if -cfg.learning_rate_change_ratio * slope < std:
            self.lr /= 10
            self.change_iters.append(iteration)
            return True
        return False

    @property
    def finished(self) -> bool:
        return self.lr < self.cfg.min_learning_rate


class TrainingDivergedError(ZSSRError, FloatingPointError):
    """The loss exploded (see :data:`EXPLODED_LOSS`) or a loss or weight became NaN or
    infinite: the step size is too large.

    ``setting`` names the config key to lower (``train.learning_rate``, or
    ``train.warm_learning_rate`` for a warm-started image); the pipeline adds the file.
    A usage error (exit 2), not a data error: the input decoded and was normalised, so
    the remedy is a config value and a scheduler must not retry the command unchanged.
    """

    kind = "usage"

    def __init__(self, *, iteration: int, loss: float, learning_rate: float,
                 setting: str = "train.learning_rate", where: str = "",
                 quantity: str = "loss") -> None:
        self.iteration, self.loss, self.learning_rate = iteration, loss, learning_rate
        self.setting, self.where, self.quantity = setting, where, quantity
        super().__init__(
            f"{where + ': ' if where else ''}training diverged by iteration {iteration} "
            f"({quantity} {loss:g}, learning rate {learning_rate:g}); lower {setting}, e.g. "
            f"--set {setting}={learning_rate / 10:g}")

    def __reduce__(self):  # keyword-only __init__: pickled across Dask workers by keywords
        return _rebuild_diverged, (self.__dict__.copy(),)

    def located(self, *, where: str, setting: str | None = None) -> TrainingDivergedError:
        """The same error naming the file (and the config key, when it differs)."""
        return TrainingDivergedError(iteration=self.iteration, loss=self.loss,
                                     learning_rate=self.learning_rate, quantity=self.quantity,
                                     setting=setting or self.setting, where=where)


def _rebuild_diverged(fields: dict) -> TrainingDivergedError:
    return TrainingDivergedError(**fields)


#: A loss above this many times the data's value range means the step size blew the
#: weights up: an output inside the range has an L1 loss below the range itself, sane runs
#: start near 0.2 of it, and at too high a rate the loss jumps to 1e4..1e28 (measured:
#: lr 1..1e6, tiny and default nets) before the net dies (constant output) or turns NaN.
EXPLODED_LOSS = 1e4


def _check_diverged(losses: torch.Tensor, start: int, stop: int, rec: float | None,
                    lr: float, limit: float, model: torch.nn.Module | None = None) -> None:
    """Raise :class:`TrainingDivergedError` when a loss of iterations ``[start, stop)`` is
    not finite or above ``limit``, or the reconstruction error ``rec`` or (when given) a
    weight of ``model`` is not finite.

    One reduction over the stored losses at a test point, whose reconstruction error
    synchronises anyway: no extra device round trip per iteration.
    """
    window = losses[start:stop]
    bad = ~torch.isfinite(window) | (window > limit)
    if bool(bad.any()):
        first = start + int(bad.nonzero()[0, 0])
        raise TrainingDivergedError(iteration=first, loss=float(losses[first]), learning_rate=lr)
    if rec is not None and not math.isfinite(rec):
        raise TrainingDivergedError(iteration=stop - 1, loss=rec, learning_rate=lr,
                                    quantity="reconstruction error")
    if model is not None:
        bad_weights = [p for p in model.parameters() if not bool(torch.isfinite(p).all())]
        if bad_weights:
            raise TrainingDivergedError(iteration=stop - 1, loss=float(bad_weights[0].sum()),
                                        learning_rate=lr, quantity="sum of a weight tensor")


@dataclass(frozen=True)
class TrainEvent:
    iteration: int
    max_iters: int
    loss: float
    learning_rate: float
    reconstruction_error: float | None  # set on test iterations


@dataclass
class TrainingHistory:
    iterations: int = 0
    losses: list[float] = field(default_factory=list)  # one per iteration
    test_iters: list[int] = field(default_factory=list)
    reconstruction_errors: list[float] = field(default_factory=list)  # MSE, working units
    lr_change_iters: list[int] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)  # rate at each test point
    stop_reason: str = ""
    seconds: float = 0.0
    warm_started: bool = False
    steps: list[dict] = field(default_factory=list)  # gradual SR: one summary per step

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class _EvalSet:
    """Fixed windows of the image, their sons and upsampled sons, for the reconstruction error."""

    def __init__(self, source: CropSource, cfg: TrainConfig, deg: Degradation,
                 rng: np.random.Generator, device: torch.device, lo: torch.Tensor,
                 hi: torch.Tensor) -> None:
        rows, cols = source.shape
        size = cfg.eval_window_size
        if rows * cols <= cfg.eval_windows * size * size:
            windows = [Window(0, 0, rows, cols)]
        else:
            h, w = min(size, rows), min(size, cols)
            windows = [Window(int(rng.integers(0, rows - h + 1)), int(rng.integers(0, cols - w + 1)),
                              h, w) for _ in range(cfg.eval_windows)]
        self.items = []
        for win in windows:
            pix, valid = source(win)
            hr = torch.from_numpy(np.ascontiguousarray(pix)).to(device)
            son = torch.clamp(deg.down(hr), lo, hi)  # official quick_test: father_to_son
            up = deg.up(son, tuple(hr.shape[-2:]))
            self.items.append((hr, torch.from_numpy(valid).to(device), up))

    @torch.no_grad()
    def error(self, model: torch.nn.Module, lo: torch.Tensor, hi: torch.Tensor) -> float:
        total, count = 0.0, 0.0
        for hr, valid, up in self.items:
            out = model(up[None].contiguous(memory_format=torch.channels_last))[0]
            out = torch.clamp(out, lo, hi)
            sq = (out - hr).square() * valid
            total += sq.sum().item()
            count += valid.sum().item() * hr.shape[0]
        return total / max(count, 1.0)


def _make_son(father: torch.Tensor, deg: Degradation, noise_std: float,
              gen: torch.Generator, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """The official ``father_to_son``: downscale, add noise, clip to the data's range.

    The clip matters without noise too: bicubic overshoots at strong edges, and the real
    LR input (an image file) never does, so unclipped sons would train the net on inputs
    it never sees.
    """
    son = deg.down(father)
    if noise_std > 0:
        noise = torch.randn(son.shape, generator=gen, device="cpu").to(son.device)
        son = son + noise * noise_std
    return torch.clamp(son, lo, hi)


def train(model: torch.nn.Module, source: CropSource, *, scale: ScaleLike,
          cfg: TrainConfig, kernel: torch.Tensor | None = None,
          clip_range: tuple[torch.Tensor, torch.Tensor] | None = None, seed: int = 0,
          on_event: Callable[[TrainEvent], None] | None = None,
          max_iters: int | None = None,
          father_sources: Sequence[tuple[CropSource, float]] = ()) -> TrainingHistory:
    """Train ``model`` in place on fathers from ``source``; returns the history.

    ``father_sources`` adds larger versions of the image (earlier outputs of the official
    gradual SR) with their scale relative to ``source``; the reconstruction error is
    always measured on ``source``.
    """
    device = next(model.parameters()).device
    channels = source.channels
    if clip_range is None:
        clip_range = (torch.zeros(channels), torch.ones(channels))
    lo, hi = (t.to(device=device, dtype=torch.float32).view(-1, 1, 1) for t in clip_range)
    deg = Degradation(as_scale(scale), None if kernel is None else kernel.to(device))
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    sampler = FatherSampler(source, cfg, rng=rng, clip_range=(lo.flatten(), hi.flatten()),
                            device=device, pyramid=father_sources)
    evalset = _EvalSet(source, cfg, deg, rng, device, lo, hi)
    policy = LearningRatePolicy(cfg)
    # fused Adam: one kernel for all parameters instead of a Python loop over them
    opt = torch.optim.Adam(model.parameters(), lr=policy.lr, fused=True)
    limit = cfg.max_iters if max_iters is None else max_iters
    hist = TrainingHistory()
    losses = torch.zeros(limit, device=device)  # on the device: no sync per iteration
    checked = 0  # losses [0, checked) are known to be finite and bounded
    exploded = EXPLODED_LOSS * max(float((hi - lo).max()), 1e-6)
    t0 = time.perf_counter()
    model.train()
    it = -1
    for it in range(limit):
        father = sampler.sample()
        son = _make_son(father.pixels, deg, cfg.noise_std, gen, lo, hi)
        up = deg.up(son, tuple(father.pixels.shape[-2:]))
        out = model(up[None].contiguous(memory_format=torch.channels_last))[0]
        loss = masked_l1(out, father.pixels, father.valid)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses[it] = loss.detach()
        rec = None
        if it % cfg.run_test_every == 0:
            model.eval()
            rec = evalset.error(model, lo, hi)
            model.train()
            _check_diverged(losses, checked, it + 1, rec, cfg.learning_rate, exploded)
            checked = it + 1
            policy.record(it, rec)
            hist.learning_rates.append(policy.lr)
        if policy.step(it):
            for group in opt.param_groups:
                group["lr"] = policy.lr
        if on_event is not None and (rec is not None or it == limit - 1):
            on_event(TrainEvent(it, limit, float(losses[it]), policy.lr, rec))
        if policy.finished:
            hist.stop_reason = f"learning rate {policy.lr:.1e} < {cfg.min_learning_rate:.1e}"
            break
        if cfg.max_seconds and rec is not None and time.perf_counter() - t0 > cfg.max_seconds:
            hist.stop_reason = f"time budget {cfg.max_seconds:g}s spent"
            break
    else:
        hist.stop_reason = f"max_iters {limit} reached"
    model.eval()
    _check_diverged(losses, checked, it + 1, None, cfg.learning_rate, exploded, model)
    hist.iterations = it + 1
    hist.losses = losses[: it + 1].tolist()
    hist.test_iters = policy.test_iters
    hist.reconstruction_errors = policy.errors
    hist.lr_change_iters = policy.change_iters[1:]
    hist.seconds = time.perf_counter() - t0
    return hist


def masked_l1(out: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over valid pixels (all channels)."""
    w = valid.to(out.dtype)
    return (F.l1_loss(out, target, reduction="none") * w).sum() / (w.sum() * out.shape[-3]).clamp(
        min=1)
