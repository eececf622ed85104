"""Typed pipeline sections of a config: chain, tile, bands, kernel_sigma, kernel,
kernel_groups, through_plane.

Presets and config files hold the engine's sections (typed by
:class:`zssr.config.ZSSRConfig`) and, beside them, the pipeline's
(:data:`configs.PIPELINE_SECTIONS`), typed here by :class:`PipelineConfig` so
the engine never sees them.  Both are built once, at the edge, from the same
merged data (defaults <- preset <- file <- ``--set``); command-line flags
(``--tile``, ``--bands``, ``--kernel``/``--kernel-sigma``) win over them.

>>> rc = resolve_run_config(preset="ct", overrides=["train.max_iters=5"])
>>> [s.name for s in rc.pipeline.chain.pre], rc.engine.train.max_iters
(['modality_lut', 'clip'], 5)
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from configs import resolve_config, split_sections
from pipeline.steps.chain import ChainSpec
from pipeline.steps.policy import allow_user_steps
from zssr.config import ConfigError, ZSSRConfig, config_to_dict
from zssr.typed import build

__all__ = ["PipelineConfig", "ResolvedConfig", "pipeline_config_from_dict",
           "resolve_run_config", "resolved_from_args", "check_kernel_groups",
           "refuse_through_plane", "ThroughPlaneConfig", "OverrideNames",
           "through_plane_settings", "DEFAULT_TILE"]

DEFAULT_TILE = 256  # LR tile side when neither the config nor --tile gives one


@dataclass(frozen=True)
class ThroughPlaneConfig:
    """Config section ``through_plane`` (presets ``ct-thin``, ``mr-thin``): its presence
    makes ``zssr upscale``/``zssr run`` super-resolve along the slice axis (as
    ``--through-plane``); the flags ``--scale-z``/``--slice-spacing``/``--slice-profile``
    win over its keys."""

    scale_z: float | None = None  # slices F times closer (as --scale-z)
    slice_spacing: float | None = None  # the new slice spacing in mm (as --slice-spacing)
    slice_profile: float | None = None  # profile FWHM / slice spacing; None: thickness / spacing
    slab: int = 64  # planes per inference slab (memory: one slab of the engine's tensors)

    def validate(self) -> None:
        for key, value, low in (("scale_z", self.scale_z, 1.0),
                                ("slice_spacing", self.slice_spacing, 0.0),
                                ("slice_profile", self.slice_profile, 0.0)):
            if value is not None and not (low < value < 1e6):
                raise ConfigError(f"config key 'through_plane.{key}': invalid value {value:g}; "
                                  f"expected a number > {low:g}")
        if self.scale_z is not None and self.slice_spacing is not None:
            raise ConfigError("config keys 'through_plane.scale_z' and 'through_plane."
                              "slice_spacing': give one of them, not both")
        if not 1 <= self.slab <= 4096:
            raise ConfigError(f"config key 'through_plane.slab': invalid value {self.slab}; "
                              "expected an integer in [1, 4096]")


@dataclass(frozen=True)
class OverrideNames:
    """How the errors of :func:`through_plane_settings` name what overrides a
    ``through_plane`` section, and the class they raise: command-line flags
    (:data:`pipeline.cli.through_plane.FLAGS`) or a batch job's keys
    (:data:`pipeline.runs.volumes.JOB_KEYS`)."""

    error: type[Exception]
    #: how the source spells scale_z, slice_spacing and slice_profile
    names: tuple[str, str, str]
    #: an override given while through-plane is off; ``{given}``: the first one given
    unasked: str
    #: not exactly one of scale_z and slice_spacing; ``{both}``: ``", not both"`` when both
    one_of: str


def through_plane_settings(section: ThroughPlaneConfig | None, *, asked: bool,
                           scale_z: float | None, slice_spacing: float | None,
                           slice_profile: float | None,
                           names: OverrideNames) -> ThroughPlaneConfig | None:
    """The through-plane settings of ``zssr upscale``/``zssr run`` and of a batch job,
    by one rule: through-plane is ``asked`` (``--through-plane``, ``through_plane: true``)
    or implied by a config ``through_plane`` section (presets ``ct-thin``, ``mr-thin``);
    the overrides ``scale_z``/``slice_spacing``/``slice_profile`` win over the section's
    keys (the factor as a pair: one given replaces both); exactly one of ``scale_z`` and
    ``slice_spacing`` is left.  ``None``: in-plane SR (then no override may be given).
    Errors are ``names.error``, naming the overrides as their source spells them.

    >>> keys = OverrideNames(ConfigError, ("'scale_z'", "'slice_spacing'", "'slice_profile'"),
    ...                      "{given} goes with through-plane", "one of them{both}")
    >>> through_plane_settings(ThroughPlaneConfig(scale_z=2), asked=False, scale_z=None,
    ...                        slice_spacing=1.5, slice_profile=None, names=keys).slice_spacing
    1.5
    >>> through_plane_settings(None, asked=False, scale_z=None, slice_spacing=None,
    ...                        slice_profile=1.0, names=keys)
    Traceback (most recent call last):
    zssr.errors.ConfigError: 'slice_profile' goes with through-plane
    """
    if not asked and section is None:
        values = (scale_z, slice_spacing, slice_profile)
        given = [name for name, value in zip(names.names, values, strict=True)
                 if value is not None]
        if given:
            raise names.error(names.unasked.format(given=given[0]))
        return None
    tp = section or ThroughPlaneConfig()
    if scale_z is not None or slice_spacing is not None:  # the overrides win
        tp = replace(tp, scale_z=scale_z, slice_spacing=slice_spacing)
    if slice_profile is not None:
        tp = replace(tp, slice_profile=slice_profile)
    if (tp.scale_z is None) == (tp.slice_spacing is None):
        raise names.error(names.one_of.format(both="" if tp.scale_z is None else ", not both"))
    return tp


@dataclass(frozen=True)
class PipelineConfig:
    chain: ChainSpec = field(default_factory=ChainSpec)
    tile: int | None = None  # LR tile side in pixels; None: --tile or DEFAULT_TILE
    bands: tuple[int, ...] | None = None  # 1-based band numbers read from the file (as --bands)
    kernel_sigma: float | None = None  # Gaussian PSF sigma in HR pixels (as --kernel-sigma)
    kernel: Literal["estimate"] | None = None  # each image's own kernel (--kernel estimate);
    #: kernel_sigma's Gaussian (or bicubic) is then the fallback when an estimate is unusable
    kernel_groups: tuple[tuple[int, ...], ...] | None = None  # with kernel: estimate, one
    #: kernel (and one network) per group of 1-based band numbers, e.g. [[1, 2, 3], [4]]
    through_plane: ThroughPlaneConfig | None = None  # SR along the slice axis of a volume

    def validate(self) -> None:
        if self.tile is not None and not 8 <= self.tile <= 8192:
            raise ConfigError(f"config key 'tile': invalid value {self.tile}; expected an "
                              "integer in [8, 8192]")
        if self.bands is not None:
            if not self.bands:
                raise ConfigError("config key 'bands': invalid value []; expected a list of "
                                  "1-based band numbers, e.g. [1, 2, 3]")
            bad = [b for b in self.bands if not 1 <= b <= 65535]
            if bad:
                raise ConfigError(f"config key 'bands': invalid value {bad[0]}; expected "
                                  "1-based band numbers in [1, 65535]")
        if self.kernel_groups is not None:
            check_kernel_groups(self.kernel_groups)
        if self.through_plane is not None:
            self.through_plane.validate()
        if self.kernel_sigma is not None and not 0 < self.kernel_sigma <= 10:
            raise ConfigError(f"config key 'kernel_sigma': invalid value {self.kernel_sigma:g}; "
                              "expected a number in (0, 10] (HR pixels)")

    @property
    def band_indexes(self) -> tuple[int, ...] | None:
        """``bands`` 0-based (what :class:`pipeline.image.job.ImageJob` takes)."""
        return None if self.bands is None else tuple(b - 1 for b in self.bands)

    @property
    def kernel_group_indexes(self) -> tuple[tuple[int, ...], ...] | None:
        """``kernel_groups`` 0-based (``ImageJob.kernel_groups``)."""
        groups = self.kernel_groups
        return None if groups is None else tuple(tuple(b - 1 for b in g) for g in groups)

    def to_dict(self) -> dict[str, Any]:
        return {"chain": self.chain.to_config(), "tile": self.tile,
                "bands": None if self.bands is None else list(self.bands),
                "kernel_sigma": self.kernel_sigma, "kernel": self.kernel,
                **({} if self.kernel_groups is None else  # keys without groups stay as before
                   {"kernel_groups": [list(g) for g in self.kernel_groups]}),
                **({} if self.through_plane is None else
                   {"through_plane": asdict(self.through_plane)})}


def check_kernel_groups(groups: tuple[tuple[int, ...], ...]) -> None:
    """Non-empty groups of 1-based band numbers, each band in one group at most."""
    seen: set[int] = set()
    for group in groups:
        what = "an empty group" if not group else None
        for b in group:
            if what is None and (b in seen or not 1 <= b <= 65535):
                what = f"band {b} twice" if b in seen else f"band {b}"
            seen.add(b)
        if what:
            raise ConfigError(f"config key 'kernel_groups': invalid value ({what}); expected "
                              "groups of 1-based band numbers, each band in one group, e.g. "
                              "[[1, 2, 3], [4]]")


def refuse_through_plane(pc: PipelineConfig, command: str) -> None:
    """A ``through_plane`` section with run settings that are in-plane: refused, never
    ignored.  ``zssr run`` and ``zssr batch`` turn a section into through-plane settings
    (:func:`through_plane_settings`), so this is reached from Python: ``run_batch`` given a
    config with the section (a preset such as ``ct-thin``) and
    ``RunSettings(through_plane=None)``; ``command`` names the caller."""
    if pc.through_plane is not None:
        raise ConfigError(f"config key 'through_plane': {command} got in-plane run settings "
                          "(RunSettings.through_plane is None); to run through-plane, set "
                          "RunSettings(through_plane=ThroughPlaneConfig(scale_z=F)) as zssr "
                          "run --through-plane --scale-z F and a batch job's 'scale_z: F' "
                          "(or 'slice_spacing: MM') do; for in-plane SR drop the section or "
                          "the preset")


PIPELINE_KEYS = ("chain", "tile", "bands", "kernel_sigma", "kernel", "kernel_groups",
                 "through_plane")


def pipeline_config_from_dict(data: dict[str, Any] | None) -> PipelineConfig:
    """Build and validate the pipeline sections with the one typed loader
    (:func:`zssr.typed.build`; unknown keys are errors naming the key)."""
    data = dict(data or {})
    chain = ChainSpec.from_config(data.pop("chain", None))
    where = lambda key: f"config key {key!r}"  # noqa: E731
    unknown = lambda key, _: (f"unknown pipeline config key {key!r}; allowed: "  # noqa: E731
                              + ", ".join(PIPELINE_KEYS))
    section = data.pop("through_plane", None)
    if section is not None and not isinstance(section, dict):
        raise ConfigError("config key 'through_plane': expected a mapping of scale_z, "
                          "slice_spacing, slice_profile, slab")
    cfg = build(PipelineConfig, data, where=where, unknown=unknown)
    through_plane = None if section is None else build(
        ThroughPlaneConfig, section, where=where, prefix="through_plane.",
        unknown=lambda key, allowed: f"unknown config key {key!r}; allowed keys: "
        + ", ".join(allowed))
    cfg = replace(cfg, chain=chain, through_plane=through_plane)
    cfg.validate()
    return cfg


@dataclass(frozen=True)
class ResolvedConfig:
    """The engine config, the pipeline config and the merged data they came from."""

    engine: ZSSRConfig
    pipeline: PipelineConfig
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Plain data of everything that shapes a result (saved with runs, hashed by batch)."""
        return {"engine": config_to_dict(self.engine), "pipeline": self.pipeline.to_dict()}


def resolve_run_config(*, preset: str | None = None, config_file: str | Path | None = None,
                       overrides: list[str] | tuple[str, ...] = ()) -> ResolvedConfig:
    """Defaults <- preset <- file <- overrides, typed into engine + pipeline configs."""
    engine, data = resolve_config(preset=preset, config_file=config_file, overrides=overrides)
    _, pipeline_part = split_sections(data)
    return ResolvedConfig(engine, pipeline_config_from_dict(pipeline_part), data)


def resolved_from_args(args: argparse.Namespace) -> ResolvedConfig:
    """The ``--preset/--config/--set/--seed`` options (pipeline.cli.options) resolved."""
    overrides = list(args.set)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if getattr(args, "warm_start", False):
        overrides.append("warm_start=true")
    if getattr(args, "allow_user_steps", False):  # the invocation's opt-in, never the file's
        with allow_user_steps(True):
            return resolve_run_config(preset=args.preset, config_file=args.config,
                                      overrides=overrides)
    return resolve_run_config(preset=args.preset, config_file=args.config, overrides=overrides)
