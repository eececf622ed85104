"""One image's SR steps, the one list every driver follows.

``super_resolve`` (in memory), ``zssr upscale`` (tiles into a writer) and ``zssr run``
(tiles into Zarr regions, one Dask task per step) all walk the list :func:`sr_steps`
returns; the pipeline adds a tile plan to each step (``pipeline.image.plan``).

Both gradual forms and the one-jump SR are one list of :class:`SRStep`:

* one jump: a single step at the scale;
* ``scale_steps`` (rebasing): step ``i`` trains on and super-resolves step ``i - 1``'s
  output at the relative scale;
* ``gradual_steps`` (the official non-rebasing form, ``X2_GRADUAL_IDEAL_CONF``): every
  step trains, continuing from the previous one, on fathers from the input and the earlier
  outputs, and super-resolves the *input* at its cumulative ``(rows, cols)`` scale.  Only
  the outputs that are used are computed: the last, and each one whose smaller scale
  exceeds every earlier father's (the official rule), which joins the father sources of
  the later steps.

>>> from zssr.config import ZSSRConfig
>>> cfg = ZSSRConfig(gradual_steps=((1.0, 1.5), (1.5, 1.5), (1.5, 2.0), (2.0, 2.0)))
>>> [(s.inferred, s.father, s.rebase) for s in sr_steps(2, cfg)]
[(False, False, False), (True, True, False), (False, False, False), (True, False, False)]
>>> [(str(s.scale), str(s.relative), s.rebase) for s in sr_steps(2, ZSSRConfig(scale_steps=(1.5, 2.0)))]
[('3/2', '3/2', False), ('2', '4/3', True)]
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from geometry import Scale, ScaleLike, as_scale

from .config import ConfigError, ZSSRConfig

__all__ = ["SRStep", "sr_steps", "scale_steps", "step_config"]


@dataclass(frozen=True)
class SRStep:
    """One SR step (picklable: travels to Dask workers inside an image spec)."""

    index: int
    scale: Scale  # cumulative, against the input
    relative: Scale  # against what the step reads (the input, or the previous output)
    config: ZSSRConfig  # the step's own (gradual: its back-projection iterations)
    rebase: bool = False  # reads the previous step's output instead of the input
    inferred: bool = True  # its output is computed (gradual: only the last and fathers)
    father: bool = False  # its output joins the father sources of the later steps
    last: bool = False  # the final output; every other output stays in working units


def scale_steps(scale: ScaleLike, cfg: ZSSRConfig) -> list[Scale]:
    """Cumulative scale of each gradual-SR step (one step when neither ``gradual_steps``
    nor ``scale_steps`` is set); the last must equal ``scale`` (``ConfigError``)."""
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


def step_config(cfg: ZSSRConfig, index: int) -> ZSSRConfig:
    """``cfg`` with step ``index``'s back-projection iterations
    (``gradual_back_projection_iters``), else ``cfg`` itself."""
    if not cfg.gradual_back_projection_iters:
        return cfg
    infer = replace(cfg.infer, back_projection_iters=int(cfg.gradual_back_projection_iters[index]))
    return replace(cfg, infer=infer)


def sr_steps(scale: ScaleLike, cfg: ZSSRConfig) -> list[SRStep]:
    """Every SR step of an image at ``scale`` under ``cfg`` (``ConfigError`` when the
    steps do not end at the scale)."""
    scales = scale_steps(scale, cfg)
    n = len(scales)
    if cfg.gradual_steps:
        out, best = [], 1.0  # best: the smaller scale of the last output that joined the fathers
        for i, sc in enumerate(scales):
            last = i == n - 1
            base = min(sc.floats)
            father = not last and base > best + 1e-9
            best = base if father else best
            out.append(SRStep(i, sc, sc, step_config(cfg, i), rebase=False,
                              inferred=last or father, father=father, last=last))
        return out
    prev = Scale(1, 1)
    out = []
    for i, sc in enumerate(scales):
        out.append(SRStep(i, sc, sc / prev, cfg, rebase=i > 0, last=i == n - 1))
        prev = sc
    return out
