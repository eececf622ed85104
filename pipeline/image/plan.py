"""One image's list of SR steps: the single plan ``zssr upscale`` and ``zssr run`` follow.

Both gradual forms and the one-jump SR are one list of :class:`ImageStep`:

* one jump: a single step at the scale;
* ``scale_steps`` (rebasing): step ``i`` super-resolves step ``i - 1``'s output (read
  from a working Zarr in float32 working units) at the relative scale;
* ``gradual_steps`` (the official non-rebasing form, ``X2_GRADUAL_IDEAL_CONF``): every
  step trains, continuing from the previous one, and super-resolves the *input* at its
  cumulative ``(rows, cols)`` scale.  Only outputs that are used are computed: the last,
  and each one whose smaller scale exceeds every earlier father's (the official rule),
  which joins the father sources of the later steps.

Each step carries its own config (``gradual_back_projection_iters``) and a tile plan
(:func:`~pipeline.image.job.plan_step`) on the metadata of what it reads.

>>> from io_adapters.base import Metadata
>>> import numpy as np
>>> from zssr.config import ZSSRConfig
>>> meta = Metadata(path="x.png", format="plain", rows=40, cols=40, bands=1,
...                 dtype=np.dtype("uint8"))
>>> cfg = ZSSRConfig(gradual_steps=((1.0, 1.5), (1.5, 1.5), (1.5, 2.0), (2.0, 2.0)))
>>> job = ImageJob(input="x.png", output="y.png", scale=2.0, config=cfg)
>>> [(s.inferred, s.father, s.rebase) for s in plan_steps(meta, job)]
[(False, False, False), (True, True, False), (False, False, False), (True, False, False)]
>>> cfg = ZSSRConfig(scale_steps=(1.5, 2.0))
>>> from dataclasses import replace
>>> [(str(s.scale), str(s.plan.scale), s.rebase) for s in plan_steps(meta, replace(job, config=cfg))]
[('3/2', '3/2', False), ('2', '4/3', True)]
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from geometry import Scale
from io_adapters.base import Metadata
from pipeline.image.job import ImageJob, StepPlan, plan_step, working_meta
from zssr.api import scale_steps
from zssr.config import ZSSRConfig

__all__ = ["ImageStep", "plan_steps", "step_config"]


@dataclass(frozen=True)
class ImageStep:
    """One SR step of an image (picklable: travels to Dask workers inside the image spec)."""

    index: int
    scale: Scale  # cumulative, against the input
    plan: StepPlan  # tile grid and kernel at the scale relative to what the step reads
    config: ZSSRConfig  # the step's own (gradual: its back-projection iterations)
    rebase: bool = False  # reads the previous step's output instead of the input
    inferred: bool = True  # its output is computed (gradual: only the last and fathers)
    father: bool = False  # its output joins the father sources of the later steps
    last: bool = False  # the output file's step; every other output stays in working units


def step_config(cfg: ZSSRConfig, index: int) -> ZSSRConfig:
    """``cfg`` with step ``index``'s back-projection iterations
    (``gradual_back_projection_iters``), else ``cfg`` itself."""
    if not cfg.gradual_back_projection_iters:
        return cfg
    infer = replace(cfg.infer, back_projection_iters=cfg.gradual_back_projection_iters[index])
    return replace(cfg, infer=infer)


def plan_steps(meta: Metadata, job: ImageJob) -> list[ImageStep]:
    """Every SR step of ``job`` on an input with metadata ``meta`` (SR's units, after a
    chain's pre steps); validates the steps against the scale (``ConfigError``)."""
    cfg = job.config
    scales = scale_steps(job.scale, cfg)
    steps: list[ImageStep] = []
    n = len(scales)
    if cfg.gradual_steps:
        best = 1.0  # the smaller scale of the last output that joined the fathers
        for i, scale in enumerate(scales):
            last = i == n - 1
            base = min(scale.floats)
            father = not last and base > best + 1e-9
            best = base if father else best
            scfg = step_config(cfg, i)
            plan = plan_step(meta, replace(job, config=scfg), scale)
            steps.append(ImageStep(i, scale, plan, scfg, rebase=False, inferred=last or father,
                                   father=father, last=last))
        return steps
    cur, prev = meta, Scale(1, 1)
    for i, scale in enumerate(scales):
        plan = plan_step(cur, job, scale / prev)
        steps.append(ImageStep(i, scale, plan, cfg, rebase=i > 0, last=i == n - 1))
        cur, prev = working_meta(cur, plan, Path(f"step{i}.zarr")), scale
    return steps
