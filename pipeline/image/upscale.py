"""``zssr upscale``'s driver: one image in-process, one jump or gradual, under its lock.

:func:`upscale_file` follows :func:`pipeline.image.plan.plan_steps`, the one list of SR
steps ``zssr run`` follows too: each step trains (:mod:`pipeline.image.job`'s stages), and a step
whose output is used writes every tile into the output file or a temporary Zarr, which the
next step reads (``scale_steps``) or draws fathers from (``gradual_steps``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from geometry import Tile
from io_adapters.base import Reader, check_output_path
from io_adapters.detect import open_reader, scale_metadata
from pipeline.image.job import (
    ImageJob,
    UpscaleResult,
    check_size,
    open_input,
    open_output,
    open_working_writer,
    preflight_output,
    train_stage,
    working_stats,
    write_step,
    writer_options,
)
from pipeline.image.kernel_estimate import chosen_writer_options, estimate_file_kernel, is_estimate
from pipeline.image.kernel_groups import upscale_groups
from pipeline.image.plan import plan_steps
from pipeline.locking import OutputLock, abort_partials, clean_stale_partials, step_workdir
from pipeline.source import ReaderCropSource
from pipeline.steps.chain import ChainReader
from zssr.api import merge_history
from zssr.train import TrainEvent, TrainingHistory

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
            return _upscale(job, on_event=on_event, on_tile=on_tile, on_stage=on_stage)
        except BaseException:  # a writer stopped while opening or committing (a signal)
            abort_partials(job.output)  # still under the lock: they are ours
            raise


def _upscale(job: ImageJob, *, on_event: Callable[[TrainEvent], None] | None,
             on_tile: Callable[[Tile], None] | None,
             on_stage: Callable[[str, int], None] | None) -> UpscaleResult:
    """The one loop over :func:`~pipeline.image.plan.plan_steps`: train each step, then
    (if its output is used) every tile of every frame into the output file or a working
    Zarr, which the next step reads (``scale_steps``) or samples fathers from
    (``gradual_steps``)."""
    timings = {"train": 0.0, "infer": 0.0, "write": 0.0}
    source = reader = open_input(job)
    meta = reader.meta
    chain = reader.chain if isinstance(reader, ChainReader) else None
    opened: list[Reader] = []
    tmpdir: Path | None = None
    try:
        check_size(meta, job)
        if job.kernel_groups is not None:  # one kernel and one network per band group
            history, tiles, groups = upscale_groups(job, reader, chain=chain, timings=timings,
                                                    on_event=on_event, on_tile=on_tile,
                                                    on_stage=on_stage)
            return UpscaleResult(Path(job.output), history, timings, tiles, meta, kernel=groups)
        choice = None
        if is_estimate(job.kernel):  # the image's own kernel, before the plan (its halo)
            choice = estimate_file_kernel(reader, scale=job.scale, config=job.config,
                                          where=str(job.input), fallback=job.fallback_kernel)
            job = replace(job, kernel=choice.kernel,  # the provenance names the kernel chosen
                          writer_options=chosen_writer_options(job.writer_options, choice))
        steps = plan_steps(meta, job)
        preflight_output(job, meta, steps[-1].scale, chain=chain)
        tmpdir = step_workdir(job.output) if len(steps) > 1 else None  # found if killed
        history = TrainingHistory()
        fathers: list[tuple[ReaderCropSource, float]] = []
        state, stats, tiles_done, input_norm = None, None, 0, None
        for step in steps:
            sjob = replace(job, config=step.config)
            t0 = time.perf_counter()
            result = train_stage(sjob, reader, step.plan, step=step.index, init_state=state,
                                 stats=stats, on_event=on_event, father_sources=fathers)
            timings["train"] += time.perf_counter() - t0
            merge_history(history, result.history, step.scale.floats, step.index)
            state, stats = result.state, result.stats
            if not step.inferred:
                continue
            if on_stage:
                on_stage("infer", len(step.plan.grid) * reader.meta.frames)
            if step.last:
                out_meta = scale_metadata(meta, step.scale)
                writer = open_output(job, out_meta, chain=chain, overwrite=job.overwrite,
                                     **writer_options(job.output, step.plan, job.writer_options))
            else:
                wpath = tmpdir / f"step{step.index}.zarr"
                writer = open_working_writer(wpath, reader.meta, step.plan)
            tiles_done += write_step(sjob, reader, step.plan, result, writer, timings,
                                     working=not step.last, on_tile=on_tile,
                                     hr_shape=(out_meta.rows, out_meta.cols) if step.last
                                     else None, output_normalizer=input_norm)
            if step.last:
                break
            output = open_reader(wpath)
            opened.append(output)
            if step.father:  # the official gradual SR: fathers from this output too
                fathers.append((ReaderCropSource(output, list(range(len(step.plan.bands))),
                                                 working_stats(stats),
                                                 seed=job.config.seed + step.index),
                                min(step.scale.floats)))
            if steps[step.index + 1].rebase:  # scale_steps: the next step reads this output
                input_norm = input_norm or stats.normalizer
                reader, stats = output, working_stats(stats)
    finally:
        for r in (source, *opened):
            r.close()
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return UpscaleResult(Path(job.output), history, timings, tiles_done, meta, kernel=choice)
