"""Typed configuration of the ZSSR engine.

Every knob of the algorithm lives here as a frozen dataclass field with the
official implementation's default (``assafshocher/ZSSR`` ``configs.py``).
Configs are built once at the edge (YAML presets, ``--set`` overrides) with
:func:`config_from_dict`, which rejects unknown keys and bad values with an
error naming the key and what is allowed.

>>> cfg = config_from_dict({"train": {"max_iters": 100}})
>>> cfg.train.max_iters, cfg.net.depth
(100, 8)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from .typed import build
from .yamldata import ConfigError, parse_yaml

__all__ = [
    "ConfigError",
    "NetConfig",
    "TrainConfig",
    "InferConfig",
    "NormConfig",
    "ZSSRConfig",
    "config_from_dict",
    "config_to_dict",
    "merge_dicts",
    "parse_override",
]


# Upper bounds: values past them are typos or attacks, not experiments.  A 16k^2 scene at
# the official net (depth 8, width 64, 3000 iterations) is ~1 h on a GPU; depth 10000 trained
# silently for minutes before the first log line (issue 20).  Each bound is in the error.
MAX_DEPTH, MAX_WIDTH, MAX_KERNEL = 64, 1024, 15
MAX_ITERS = 1_000_000


@dataclass(frozen=True)
class NetConfig:
    depth: int = 8  # number of conv layers (official: 8)
    width: int = 64  # channels of the hidden layers (official: 64)
    kernel_size: int = 3  # square conv kernel (official: 3)
    init_variance: float = 0.1  # weights ~ N(0, init_variance / fan_in)

    def validate(self) -> None:
        _check(2 <= self.depth <= MAX_DEPTH, "net.depth", self.depth,
               f"an integer in [2, {MAX_DEPTH}]")
        _check(1 <= self.width <= MAX_WIDTH, "net.width", self.width,
               f"an integer in [1, {MAX_WIDTH}]")
        _check(1 <= self.kernel_size <= MAX_KERNEL and self.kernel_size % 2 == 1,
               "net.kernel_size", self.kernel_size, f"an odd integer in [1, {MAX_KERNEL}]")
        _check(0 < self.init_variance <= 100, "net.init_variance", self.init_variance,
               "a number in (0, 100]")

    @property
    def receptive_radius(self) -> int:
        """Pixels on each side (at the output resolution) that one output pixel depends on."""
        return self.depth * (self.kernel_size // 2)


@dataclass(frozen=True)
class TrainConfig:
    max_iters: int = 3000
    max_seconds: float = 0.0  # wall-clock training budget; 0 = none (stops at the next test)
    min_iters: int = 256  # iterations between two learning-rate changes
    learning_rate: float = 1e-3
    min_learning_rate: float = 9e-6  # stop when the rate falls below this
    learning_rate_change_ratio: float = 1.5  # drop the rate if -ratio*slope < std(slope)
    learning_rate_policy_check_every: int = 60
    learning_rate_slope_range: int = 256  # the fit uses slope_range // run_test_every points
    run_test_every: int = 50  # record the reconstruction error every N iterations
    crop_size: int = 128
    noise_std: float = 0.0  # Gaussian noise added to each LR son
    augment_leave_as_is_probability: float = 0.05
    augment_no_interpolate_probability: float = 0.45
    augment_min_scale: float = 0.5
    augment_max_scale: float = 1.0
    augment_scale_diff_sigma: float = 0.25
    augment_shear_sigma: float = 0.1
    augment_allow_rotation: bool = True
    eval_windows: int = 4  # reconstruction error: at most this many windows ...
    eval_window_size: int = 256  # ... of at most this size (LR px); small images: whole image
    min_valid_fraction: float = 0.5  # reject fathers with fewer valid (non-nodata) pixels
    # Warm start (opt-in, ZSSRConfig.warm_start): an image that starts from the weights of a
    # previous, compatible image of its batch runs this shorter schedule instead.
    # The cold start rate: a net from an unrelated image must still move (measured, fast
    # preset: 1e-4 lost 0.55 dB on one Set14 image, 1e-3 is within 0.1 dB on average on
    # Set14 and an MR series; BENCHMARKS.md section 7). The policy then drops it as usual.
    warm_learning_rate: float = 1e-3
    warm_max_iters: int = 600  # about a third of a typical cold run (two rate drops fit)

    def validate(self) -> None:
        _check(1 <= self.max_iters <= MAX_ITERS, "train.max_iters", self.max_iters,
               f"an integer in [1, {MAX_ITERS}]")
        _check(self.max_seconds >= 0, "train.max_seconds", self.max_seconds,
               "a number >= 0 (0: no time budget)")
        _check(0 <= self.min_iters <= MAX_ITERS, "train.min_iters", self.min_iters,
               f"an integer in [0, {MAX_ITERS}]")
        _check(0 < self.learning_rate <= 10, "train.learning_rate", self.learning_rate,
               "a number in (0, 10]")
        _check(self.min_learning_rate >= 0, "train.min_learning_rate", self.min_learning_rate,
               "a number >= 0")
        _check(1 <= self.run_test_every <= MAX_ITERS, "train.run_test_every",
               self.run_test_every, f"an integer in [1, {MAX_ITERS}]")
        _check(self.learning_rate_policy_check_every >= 1, "train.learning_rate_policy_check_every",
               self.learning_rate_policy_check_every, "an integer >= 1")
        _check(self.learning_rate_slope_range >= 2 * self.run_test_every,
               "train.learning_rate_slope_range", self.learning_rate_slope_range,
               f"an integer >= 2 * train.run_test_every ({2 * self.run_test_every})")
        _check(8 <= self.crop_size <= 4096, "train.crop_size", self.crop_size,
               "an integer in [8, 4096]")
        _check(self.noise_std >= 0, "train.noise_std", self.noise_std, "a number >= 0")
        p0, p1 = self.augment_leave_as_is_probability, self.augment_no_interpolate_probability
        _check(0 <= p0 <= 1, "train.augment_leave_as_is_probability", p0, "a number in [0, 1]")
        _check(0 <= p1 <= 1 - p0, "train.augment_no_interpolate_probability", p1,
               f"a number in [0, {1 - p0:g}] (1 - leave_as_is_probability)")
        _check(0 < self.augment_min_scale <= self.augment_max_scale,
               "train.augment_min_scale", self.augment_min_scale,
               "a number in (0, train.augment_max_scale]")
        _check(self.augment_max_scale <= 1, "train.augment_max_scale", self.augment_max_scale,
               "a number <= 1")
        _check(self.augment_scale_diff_sigma >= 0, "train.augment_scale_diff_sigma",
               self.augment_scale_diff_sigma, "a number >= 0")
        _check(self.augment_shear_sigma >= 0, "train.augment_shear_sigma",
               self.augment_shear_sigma, "a number >= 0")
        _check(1 <= self.eval_windows <= 1024, "train.eval_windows", self.eval_windows,
               "an integer in [1, 1024]")
        _check(16 <= self.eval_window_size <= 8192, "train.eval_window_size",
               self.eval_window_size, "an integer in [16, 8192]")
        _check(0 < self.min_valid_fraction <= 1, "train.min_valid_fraction",
               self.min_valid_fraction, "a number in (0, 1]")
        _check(self.warm_learning_rate > 0, "train.warm_learning_rate", self.warm_learning_rate,
               "a number > 0")
        _check(1 <= self.warm_max_iters <= MAX_ITERS, "train.warm_max_iters",
               self.warm_max_iters, f"an integer in [1, {MAX_ITERS}]")

    def warm(self) -> TrainConfig:
        """The schedule of a warm-started image (same policy, lower start, lower cap)."""
        return dataclasses.replace(self, learning_rate=self.warm_learning_rate,
                                   max_iters=self.warm_max_iters)


@dataclass(frozen=True)
class InferConfig:
    ensemble: bool = True  # 8-way geometric self-ensemble with per-pixel median
    back_projection_iters: int = 10
    batch_members: bool = True  # run the ensemble members as one batch
    # network precision: bf16 autocast halves memory traffic on GPUs; on CPUs with AMX /
    # AVX-512 BF16 the network runs ~4x faster (BENCHMARKS.md section 13), on others it is
    # slow; back-projection, median and clipping always run in fp32
    precision: Literal["fp32", "bf16"] = "fp32"
    # a chosen subset of the ensemble's dihedral members (k: rot90^k, then a flip if
    # k >= 4), median over them; empty: all of them (8, or 4 for an anisotropic scale)
    ensemble_members: tuple[int, ...] = ()

    def validate(self) -> None:
        _check(0 <= self.back_projection_iters <= 100, "infer.back_projection_iters",
               self.back_projection_iters, "an integer in [0, 100]")
        chosen = list(self.ensemble_members)
        _check(all(0 <= k <= 7 for k in chosen) and len(set(chosen)) == len(chosen),
               "infer.ensemble_members", chosen, "distinct members in [0, 7] (empty: all)")
        _check(self.ensemble or not chosen, "infer.ensemble_members", chosen,
               "empty when infer.ensemble is false (one member, the identity)")


NormPolicy = Literal["dtype", "percentile", "minmax", "none"]


@dataclass(frozen=True)
class NormConfig:
    """How raw values map to the float32 working range (exactly invertible)."""

    policy: NormPolicy = "dtype"
    percentiles: tuple[float, float] = (0.5, 99.5)  # for policy "percentile"

    def validate(self) -> None:
        lo, hi = self.percentiles
        _check(0 <= lo < hi <= 100, "norm.percentiles", list(self.percentiles),
               "two numbers 0 <= lo < hi <= 100")


@dataclass(frozen=True)
class ZSSRConfig:
    net: NetConfig = field(default_factory=NetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    # Gradual SR: cumulative scale after each step, e.g. [2.0, 4.0]. Empty: one step to `scale`.
    # Each step super-resolves the previous step's output (official ``base_change_sfs``).
    scale_steps: tuple[float, ...] = ()
    # The official non-rebasing gradual SR (X2_GRADUAL_IDEAL_CONF): every step super-resolves
    # the original input at its cumulative (rows, cols) scale, training continues from the
    # previous step, and each step's output joins the father sources.  One image at a time
    # (super_resolve, zssr upscale, zssr eval); per-step back-projection iterations optional.
    gradual_steps: tuple[tuple[float, float], ...] = ()
    gradual_back_projection_iters: tuple[int, ...] = ()
    reinit_each_step: bool = False  # official init_net_for_each_sf; False continues training
    warm_start: bool = False  # batches: start compatible images from the previous weights
    seed: int = 0

    def validate(self) -> None:
        for part in (self.net, self.train, self.infer, self.norm):
            part.validate()
        _check(0 <= self.seed < 2**32, "seed", self.seed, "an integer in [0, 2**32)")
        _check(len(self.scale_steps) <= 16 and len(self.gradual_steps) <= 16,
               "scale_steps/gradual_steps", len(self.scale_steps) or len(self.gradual_steps),
               "at most 16 gradual steps")
        prev = 1.0
        for s in self.scale_steps:
            _check(math.isfinite(s) and s > prev, "scale_steps", list(self.scale_steps),
                   "increasing cumulative scales, each > 1")
            prev = s
        steps = [list(p) for p in self.gradual_steps]
        for sy, sx in self.gradual_steps:
            _check(math.isfinite(sy) and math.isfinite(sx) and min(sy, sx) >= 1
                   and max(sy, sx) > 1, "gradual_steps", steps,
                   "[rows, cols] cumulative scales, each >= 1 and one of them > 1")
        _check(not (self.scale_steps and self.gradual_steps), "gradual_steps", steps,
               "empty when scale_steps is set (one kind of gradual SR at a time)")
        bp = list(self.gradual_back_projection_iters)
        _check(not bp or len(bp) == len(steps), "gradual_back_projection_iters", bp,
               f"empty or one integer per gradual step ({len(steps)})")
        _check(all(0 <= n <= 100 for n in bp), "gradual_back_projection_iters", bp,
               "integers in [0, 100]")


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"config key {key!r}: invalid value {value!r}; expected {allowed}")


def config_from_dict(data: dict[str, Any] | None) -> ZSSRConfig:
    """Build and validate a :class:`ZSSRConfig` from nested plain data."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
    cfg = build(ZSSRConfig, data, where=lambda key: f"config key {key!r}")
    cfg.validate()
    return cfg


def config_to_dict(cfg: ZSSRConfig) -> dict[str, Any]:
    """Plain nested data (tuples as lists) that :func:`config_from_dict` turns back into ``cfg``."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def merge_dicts(base: dict[str, Any], diff: dict[str, Any]) -> dict[str, Any]:
    """Recursive merge: values of ``diff`` win; nested mappings merge key by key."""
    out = dict(base)
    for k, v in diff.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_dicts(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``"train.max_iters=100"`` -> ``{"train": {"max_iters": 100}}`` (value parsed as YAML).

    The value goes through :func:`zssr.yamldata.parse_yaml` (limits, no ``.inf``/``.nan``).
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. train.max_iters=100)")
    source = f"override {text[:80]!r}"
    value = parse_yaml(raw, source=source, key=key) if raw.strip() else None
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out
