"""``kernel_groups`` with ``--kernel estimate``: one kernel, and one SR pass, per band group.

A stack whose bands were not blurred alike (Sentinel-2's 10 m and 20 m bands, two
sensors side by side) gets one estimated kernel per group of bands: each group's kernel
comes from windowed reads of that group's bands only (:func:`estimate_file_kernel` with
``bands=``, valid pixels only), and each group is super-resolved with its own kernel by
its own network, trained on that group's bands as a ``--bands`` run of the group would be.
The engine's one-network-one-kernel SR is kept as is: the groups differ only in the
:class:`~pipeline.image.job.StepPlan` (bands, kernel, halo) and the trained weights.

Inference is one loop over the tiles: each tile's HR core is every group's core (its
own halo'd read) put back at the group's band positions, then written once.  The output
therefore equals stacking separate runs of the groups (``--bands`` of each group with
``--kernel estimate``) when the bands share their nodata, as a scene's bands do: each
group sees the same pixels, statistics, seeds, tiles and halos as its separate run.
One SR step only (as ``--kernel estimate``); images with an alpha band are refused.

``zssr run`` uses the same pieces as Dask tasks (:mod:`pipeline.runs.tasks`): one kernel
task (:func:`estimate_group_kernel` per group), one train task per group, and infer tasks
that each run :func:`infer_group_tiles` on a batch of tiles.  The output's provenance
names each group's kernel (:func:`~pipeline.image.kernel_estimate.chosen_writer_options`), in both commands.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import replace

import numpy as np
import torch

from geometry import Tile
from io_adapters.base import Metadata, Reader
from io_adapters.detect import scale_metadata
from pipeline.image.job import (
    ImageJob,
    StepPlan,
    TrainResult,
    infer_tile,
    open_output,
    preflight_output,
    train_stage,
    with_kernel,
    write_core,
    writer_options,
)
from pipeline.image.kernel_estimate import (
    GroupChoices,
    KernelChoice,
    chosen_writer_options,
    estimate_file_kernel,
    is_estimate,
)
from pipeline.image.plan import ImageStep, plan_steps
from pipeline.source import ReaderCropSource, sr_bands
from pipeline.steps.chain import BoundChain
from zssr.api import merge_history
from zssr.config import ConfigError
from zssr.model import build_model
from zssr.train import TrainEvent, TrainingHistory

__all__ = ["group_positions", "plan_groups", "group_names", "estimate_group_kernel",
           "group_plan", "infer_group_tiles", "upscale_groups"]


def group_positions(job: ImageJob, meta: Metadata) -> list[list[int]]:
    """``job.kernel_groups`` (0-based file bands) as the reader's band indexes; every band
    SR sees in exactly one group (``ConfigError`` naming the key otherwise)."""
    where = f"config key 'kernel_groups' ({job.input})"
    if not is_estimate(job.kernel):
        raise ConfigError(f"{where}: one kernel per band group is estimated; add "
                          "--kernel estimate (or kernel: estimate)")
    if meta.alpha_band is not None:
        raise ConfigError(f"{where}: the image has an alpha band (band "
                          f"{meta.alpha_band + 1}); drop kernel_groups or select the other "
                          "bands with --bands")
    selected = list(job.bands) if job.bands is not None else list(range(meta.bands))
    groups = []
    for group in job.kernel_groups or ():
        missing = [b + 1 for b in group if b not in selected]
        if missing:
            raise ConfigError(f"{where}: band {missing[0]} is not among the bands read "
                              f"({', '.join(str(b + 1) for b in selected)})")
        groups.append([selected.index(b) for b in group])
    left = sorted(set(sr_bands(meta)) - {b for g in groups for b in g})
    if left:
        raise ConfigError(f"{where}: band {selected[left[0]] + 1} is in no group; every band "
                          "read needs one (or select bands with --bands)")
    return groups


def plan_groups(job: ImageJob, meta: Metadata, steps: list[ImageStep]
                ) -> tuple[tuple[int, ...], ...] | None:
    """``job.kernel_groups`` as reader band positions (:func:`group_positions`), checked
    against the planned ``steps`` (one x2 or x4 step); None without groups."""
    if job.kernel_groups is None:
        return None
    groups = group_positions(job, meta)
    if len(steps) != 1:
        raise ConfigError(f"config key 'kernel_groups' ({job.input}): needs one x2 or x4 "
                          f"step, got {len(steps)} gradual steps; drop them")
    return tuple(tuple(g) for g in groups)


def group_names(job: ImageJob) -> tuple[tuple[int, ...], ...]:
    """Each group's 1-based file band numbers (what the report and the console show)."""
    return tuple(tuple(b + 1 for b in g) for g in (job.kernel_groups or ()))


def estimate_group_kernel(job: ImageJob, reader: Reader, bands: tuple[int, ...],
                          name: tuple[int, ...]) -> KernelChoice:
    """One group's kernel: estimated from its bands ``bands`` (reader positions) only."""
    return estimate_file_kernel(
        reader, scale=job.scale, config=job.config, bands=list(bands),
        fallback=job.fallback_kernel, where=f"{job.input} (bands {','.join(map(str, name))})")


def group_plan(plan: StepPlan, job: ImageJob, bands: tuple[int, ...],
               choice: KernelChoice) -> StepPlan:
    """The step's plan for one group: its bands, its kernel and that kernel's halo."""
    return with_kernel(replace(plan, bands=list(bands)), job, choice.kernel)


def upscale_groups(job: ImageJob, reader: Reader, *, chain: BoundChain | None,
                   timings: dict[str, float],
                   on_event: Callable[[TrainEvent], None] | None = None,
                   on_tile: Callable[[Tile], None] | None = None,
                   on_stage: Callable[[str, int], None] | None = None
                   ) -> tuple[TrainingHistory, int, GroupChoices]:
    """Estimate, train and infer each group of ``job.kernel_groups``; write the output
    (preflighted first).  Returns the merged history, the tiles done and the choices."""
    meta = reader.meta
    steps = plan_steps(meta, job)
    groups = plan_groups(job, meta, steps)
    step = steps[0]
    names = group_names(job)
    choices = GroupChoices(names, tuple(estimate_group_kernel(job, reader, g, n)
                                        for g, n in zip(groups, names, strict=True)))
    preflight_output(job, meta, step.scale, chain=chain)
    plans = [group_plan(step.plan, job, g, c)
             for g, c in zip(groups, choices.choices, strict=True)]
    history, results = TrainingHistory(), []
    for i, plan in enumerate(plans):
        t0 = time.perf_counter()
        results.append(train_stage(job, reader, plan, on_event=on_event))
        timings["train"] += time.perf_counter() - t0
        merge_history(history, results[-1].history, step.scale.floats, i)
    if on_stage:
        on_stage("infer", len(plans[0].grid) * meta.frames)
    out_meta = scale_metadata(meta, step.scale)
    options = chosen_writer_options(job.writer_options, choices)
    writer = open_output(job, out_meta, chain=chain, overwrite=job.overwrite,
                         **writer_options(job.output, plans[0], options))
    units = [(f, t) for f in range(meta.frames) for t in range(len(plans[0].grid))]
    t0 = time.perf_counter()
    with writer:
        tiles = infer_group_tiles(
            job, reader, plans, results, units, writer, hr_shape=(out_meta.rows, out_meta.cols),
            on_tile=None if on_tile is None else lambda _frame, tile: on_tile(tile))
        t1 = time.perf_counter()
        timings["infer"] += t1 - t0
    timings["write"] += time.perf_counter() - t1
    return history, tiles, choices


def infer_group_tiles(job: ImageJob, reader: Reader, plans: list[StepPlan],
                      results: list[TrainResult], units: Iterable[tuple[int, int]], writer, *,
                      hr_shape: tuple[int, int],
                      on_tile: Callable[[int, Tile], None] | None = None,
                      models: list[torch.nn.Module] | None = None) -> int:
    """The ``(frame, tile)`` units: each group's HR core at its bands, written once.

    ``models``: the groups' networks already built (a worker's cache); by default built
    here.  ``writer``: the output file (``zssr upscale``) or a region writer of the run's
    Zarr store (``zssr run``'s infer tasks)."""
    cfg, meta = job.config, reader.meta
    if models is None:
        models = [build_model(len(p.bands), cfg.net, seed=cfg.seed, device=job.device,
                              state=r.state) for p, r in zip(plans, results, strict=True)]
    sources = [ReaderCropSource(reader, p.bands, r.stats, seed=cfg.seed)
               for p, r in zip(plans, results, strict=True)]
    nan_marks = meta.dtype.kind == "f" and meta.nodata is None  # as infer_tile's own rule
    n = 0
    for frame, index in units:
        out = valid = None
        for plan, result, model, source in zip(plans, results, models, sources, strict=True):
            part, part_valid = infer_tile(model, source, plan, plan.grid.tile(index),
                                          frame=frame, infer_cfg=cfg.infer,
                                          normalizer=result.stats.normalizer)
            if out is None:
                out = np.empty((meta.bands, *part.shape[1:]), part.dtype)
                valid = np.empty(part_valid.shape, bool)
            out[plan.bands], valid[plan.bands] = part, part_valid[plan.bands]
        if nan_marks and out.dtype.kind == "f":
            out = np.where(valid, out, np.float32(np.nan)).astype(out.dtype)
        tile = plans[0].grid.tile(index)  # the same core in every group's grid
        write_core(writer, tile, out, valid, hr_shape=hr_shape, frame=frame)
        n += 1
        if on_tile is not None:
            on_tile(frame, tile)
    return n
