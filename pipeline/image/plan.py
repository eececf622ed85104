"""One image's list of SR steps with their tile plans: what ``zssr upscale`` and
``zssr run`` follow.

The steps themselves (one jump, ``scale_steps`` rebasing, the official ``gradual_steps``;
which outputs are computed and which join the fathers) are the engine's
:func:`zssr.sr_steps.sr_steps`, the list ``super_resolve`` walks in memory; here each step
gets a tile plan (:func:`~pipeline.image.job.plan_step`) on the metadata of what it reads:
the input, or (rebasing) the previous step's working Zarr in float32 working units.

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
from zssr.config import ZSSRConfig
from zssr.sr_steps import SRStep, sr_steps

__all__ = ["ImageStep", "plan_steps"]


@dataclass(frozen=True)
class ImageStep:
    """One SR step of an image and its tile plan (picklable: travels to Dask workers
    inside the image spec)."""

    sr: SRStep
    plan: StepPlan  # tile grid and kernel at the scale relative to what the step reads

    @property
    def index(self) -> int:
        return self.sr.index

    @property
    def scale(self) -> Scale:  # cumulative, against the input
        return self.sr.scale

    @property
    def config(self) -> ZSSRConfig:  # the step's own (gradual: its back-projection iterations)
        return self.sr.config

    @property
    def rebase(self) -> bool:  # reads the previous step's output instead of the input
        return self.sr.rebase

    @property
    def inferred(self) -> bool:  # its output is computed (gradual: only the last and fathers)
        return self.sr.inferred

    @property
    def father(self) -> bool:  # its output joins the father sources of the later steps
        return self.sr.father

    @property
    def last(self) -> bool:  # the output file's step; every other output stays in working units
        return self.sr.last


def plan_steps(meta: Metadata, job: ImageJob) -> list[ImageStep]:
    """Every SR step of ``job`` on an input with metadata ``meta`` (SR's units, after a
    chain's pre steps); validates the steps against the scale (``ConfigError``)."""
    steps: list[ImageStep] = []
    reads = meta  # what the next rebasing step reads: the previous step's working Zarr
    for sr in sr_steps(job.scale, job.config):
        step_job = job if sr.config is job.config else replace(job, config=sr.config)
        plan = plan_step(reads if sr.rebase else meta, step_job, sr.relative)
        steps.append(ImageStep(sr, plan))
        if not job.config.gradual_steps:
            reads = working_meta(reads if sr.rebase else meta, plan, Path(f"step{sr.index}.zarr"))
    return steps
