"""``zssr upscale``'s driver: one image in-process, one jump or gradual, under its lock.

:func:`upscale_file` runs :mod:`pipeline.job`'s stages (train, tiles, write) for each
step of ``job.steps()`` (``scale_steps``: each step super-resolves the previous step's
output through a temporary Zarr) or hands the official non-rebasing gradual SR
(``gradual_steps``) to :mod:`pipeline.gradual`.  Both sit above :mod:`pipeline.job`,
so the arrows run one way.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from geometry import Scale, Tile, as_scale
from io_adapters.base import check_output_path
from io_adapters.detect import open_reader, scale_metadata
from zssr.api import merge_history
from zssr.train import TrainEvent, TrainingHistory

from .gradual import upscale_gradual
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
from .locking import OutputLock, abort_partials, clean_stale_partials, step_workdir
from .steps.chain import ChainReader

__all__ = ["upscale_file"]


def upscale_file(job: ImageJob, *, on_event: Callable[[TrainEvent], None] | None = None,
                 on_tile: Callable[[Tile], None] | None = None,
                 on_stage: Callable[[str, int], None] | None = None) -> UpscaleResult:
    """Super-resolve ``job.input`` into ``job.output`` (atomic: nothing partial is left).

    The output's lock (:class:`~pipeline.locking.OutputLock`) is held throughout: a
    second writer of the same output exits 9 before touching anything, and what a
    killed earlier writer left is removed first.
    """
    check_output_path(Path(job.output), inputs=(Path(job.input),))  # before its lock file
    with OutputLock(job.output):
        clean_stale_partials(job.output)
        try:
            if job.config.gradual_steps:
                return upscale_gradual(job, on_event=on_event, on_tile=on_tile,
                                       on_stage=on_stage)
            return _upscale_steps(job, on_event=on_event, on_tile=on_tile, on_stage=on_stage)
        except BaseException:  # a writer stopped while opening or committing (a signal)
            abort_partials(job.output)  # still under the lock: they are ours
            raise


def _upscale_steps(job: ImageJob, *, on_event: Callable[[TrainEvent], None] | None,
                   on_tile: Callable[[Tile], None] | None,
                   on_stage: Callable[[str, int], None] | None) -> UpscaleResult:
    timings = {"train": 0.0, "infer": 0.0, "write": 0.0}
    reader = open_input(job)
    meta = reader.meta
    chain = reader.chain if isinstance(reader, ChainReader) else None
    check_size(meta, job)
    steps = job.steps()
    preflight_output(job, meta, steps[-1], chain=chain)
    tmpdir = step_workdir(job.output) if len(steps) > 1 else None
    history = TrainingHistory()
    state, prev, stats, tiles_done, input_norm = None, Scale(1, 1), None, 0, None
    try:
        for i, cumulative in enumerate(steps):
            last = i == len(steps) - 1
            plan = plan_step(reader.meta, job, as_scale(cumulative) / prev)
            t0 = time.perf_counter()
            result = train_stage(job, reader, plan, step=i, init_state=state, stats=stats,
                                 on_event=on_event)
            timings["train"] += time.perf_counter() - t0
            _merge(history, result.history, cumulative, i)
            if on_stage:
                on_stage("infer", len(plan.grid) * reader.meta.frames)
            if last:
                out_meta = scale_metadata(meta, cumulative)
                writer = open_output(job, out_meta, chain=chain, overwrite=job.overwrite,
                                     **writer_options(job.output, plan, job.writer_options))
            else:
                wpath = tmpdir / f"step{i}.zarr"
                writer = open_working_writer(wpath, reader.meta, plan)
            tiles_done += write_step(job, reader, plan, result, writer, timings,
                                     working=not last, on_tile=on_tile,
                                     hr_shape=(out_meta.rows, out_meta.cols) if last else None,
                                     output_normalizer=input_norm)
            if not last:
                input_norm = input_norm or result.stats.normalizer
                reader.close()
                reader = open_reader(wpath)
                stats = working_stats(result.stats)
            state, prev = result.state, as_scale(cumulative)
    finally:
        reader.close()
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return UpscaleResult(Path(job.output), history, timings, tiles_done, meta)


def _merge(total: TrainingHistory, step: TrainingHistory, scale: float, index: int) -> None:
    merge_history(total, step, (scale, scale), index)
