"""The official non-rebasing gradual SR (config ``gradual_steps``) on a file, tile by tile."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from geometry import Tile
from io_adapters.base import Reader
from io_adapters.detect import open_reader, scale_metadata
from zssr.api import merge_history, scale_steps
from zssr.train import TrainEvent, TrainingHistory

from .job import (
    ImageJob,
    UpscaleResult,
    check_size,
    open_input,
    open_output,
    open_working_writer,
    plan_step,
    preflight_output,
    train_stage,
    working_stats,
    write_step,
    writer_options,
)
from .locking import step_workdir
from .source import ReaderCropSource
from .steps.chain import ChainReader

__all__ = ["upscale_gradual"]


def _step_job(job: ImageJob, index: int) -> ImageJob:
    """``job`` with step ``index``'s back-projection iterations (``gradual_back_projection_iters``)."""
    cfg = job.config
    if not cfg.gradual_back_projection_iters:
        return job
    infer = replace(cfg.infer, back_projection_iters=cfg.gradual_back_projection_iters[index])
    return replace(job, config=replace(cfg, infer=infer))


def upscale_gradual(job: ImageJob, *, on_event: Callable[[TrainEvent], None] | None,
                     on_tile: Callable[[Tile], None] | None,
                     on_stage: Callable[[str, int], None] | None) -> UpscaleResult:
    """The official non-rebasing gradual SR (``gradual_steps``) on a file, tile by tile.

    Every step trains (continuing from the previous one) on windowed reads of the input
    and super-resolves the *input* at its cumulative ``(rows, cols)`` scale.  An output
    whose smaller scale exceeds every earlier one (the official rule for which outputs
    fathers are drawn from) is written to a temporary Zarr in working units and joins the
    father sources; other intermediate outputs are never used, so they are not computed.
    The last step goes to the output file.  Steps are as in
    :func:`zssr.api.super_resolve` with ``gradual_steps``.
    """
    timings = {"train": 0.0, "infer": 0.0, "write": 0.0}
    steps = scale_steps(job.scale, job.config)  # validates the last step against the scale
    reader = open_input(job)
    meta = reader.meta
    chain = reader.chain if isinstance(reader, ChainReader) else None
    check_size(meta, job)
    preflight_output(job, meta, steps[-1], chain=chain)
    tmpdir = step_workdir(job.output)  # found by the next run if this one is killed
    history = TrainingHistory()
    pyramid: list[tuple[ReaderCropSource, float]] = []
    opened: list[Reader] = []
    state, stats, tiles_done = None, None, 0
    try:
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            sjob = _step_job(job, i)
            plan = plan_step(meta, sjob, step)
            t0 = time.perf_counter()
            result = train_stage(sjob, reader, plan, step=i, init_state=state, stats=stats,
                                 on_event=on_event, father_sources=pyramid)
            timings["train"] += time.perf_counter() - t0
            merge_history(history, result.history, step.floats, i)
            state, stats = result.state, result.stats
            base = min(step.floats)
            joins = not last and base > (pyramid[-1][1] if pyramid else 1.0) + 1e-9
            if not (last or joins):
                continue
            if on_stage:
                on_stage("infer", len(plan.grid) * meta.frames)
            if last:
                out_meta = scale_metadata(meta, step)
                writer = open_output(job, out_meta, chain=chain, overwrite=job.overwrite,
                                     **writer_options(job.output, plan, job.writer_options))
            else:
                wpath = tmpdir / f"step{i}.zarr"
                writer = open_working_writer(wpath, meta, plan)
            tiles_done += write_step(sjob, reader, plan, result, writer, timings,
                                     working=not last, on_tile=on_tile,
                                     hr_shape=(out_meta.rows, out_meta.cols) if last else None)
            if joins:
                zreader = open_reader(wpath)
                opened.append(zreader)
                pyramid.append((ReaderCropSource(zreader, list(range(len(plan.bands))),
                                                 working_stats(stats), seed=job.config.seed + i),
                                base))
    finally:
        reader.close()
        for r in opened:
            r.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
    return UpscaleResult(Path(job.output), history, timings, tiles_done, meta)
