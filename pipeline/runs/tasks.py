"""The task functions of a ``zssr run`` graph: what runs on a Dask worker.

Per image and SR step (:func:`pipeline.image.plan.plan_steps`, the steps ``zssr upscale``
follows too): one :func:`train_task` (fathers sampled by windowed reads of the file itself
or of the previous step's Zarr, and of earlier outputs that joined the fathers in the
official gradual SR), then, for a step whose output is used, :func:`infer_task` over
batches of tiles (each reads its own halo'd windows and writes its own chunk-aligned
region of the step's Zarr store, then a marker per finished tile), then one
:func:`pipeline.runs.finalize.finalize_task` for the image (Zarr -> the output format, report
entry).  The stages themselves are
:mod:`pipeline.image.job`'s (shared with ``zssr upscale``); this module adds
resume (weights and markers in the run directory), the per-worker model
cache and progress events.  With ``kernel_groups`` (one SR step): :func:`kernel_task` estimates
every group's kernel, one :func:`group_train_task` per group, :func:`group_infer_task` batches.

Only small values travel between tasks: a :class:`TrainOutcome` (weights of
a few hundred kB, normaliser, history) and per-batch counters.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import groupby
from pathlib import Path
from typing import Any

import torch

from io_adapters.base import Reader
from io_adapters.zarr_reader import ZarrReader
from io_adapters.zarr_regions import RegionWriter
from pipeline.image.job import (
    ImageJob,
    StepPlan,
    TrainResult,
    open_input,
    train_stage,
    with_kernel,
    working_stats,
)
from pipeline.image.job import infer_tiles as _infer_tiles
from pipeline.image.kernel_estimate import (
    GroupChoices,
    KernelChoice,
    estimate_file_kernel,
    load_choice,
    save_choice,
)
from pipeline.image.kernel_groups import (
    estimate_group_kernel,
    group_names,
    group_plan,
    infer_group_tiles,
)
from pipeline.image.plan import ImageStep
from pipeline.runs.rundir import RunPaths
from pipeline.runs.weights import weights_bytes, weights_from_bytes
from pipeline.source import ReaderCropSource, SampleStats
from zssr.model import build_model
from zssr.train import TrainEvent

__all__ = ["ImageSpec", "TrainOutcome", "kernel_task", "train_task", "infer_task", "step_plan",
           "group_train_task", "group_infer_task", "open_step_reader", "emit", "LOCAL_SINKS",
           "TRAIN_TOPIC", "cached_model"]

log = logging.getLogger(__name__)

TRAIN_TOPIC = "zssr-train"
#: In-process receivers of :func:`emit` messages, by topic (the synchronous scheduler
#: has no worker to log events to).
LOCAL_SINKS: dict[str, Callable[[dict], None]] = {}
MODEL_CACHE_SIZE = 4

_MODELS: OrderedDict[tuple[str, str], torch.nn.Module] = OrderedDict()
_MODELS_LOCK = threading.Lock()


@dataclass(frozen=True)
class ImageSpec:
    """One image of a run, as the tasks need it (picklable; built by the driver)."""

    key: str  # run-directory key (name + hash of input, config, scale, tiling)
    name: str  # output name stem
    job: ImageJob  # job.output is the final output path
    run_dir: Path
    steps: tuple[ImageStep, ...]  # pipeline.image.plan.plan_steps
    frames: int
    out_shape: tuple[int, int]  # (rows, cols) of the output (the last grid may be larger)
    ground_truth: Path | None = None
    replace_output: bool = False  # an existing output may be replaced
    torch_threads: int | None = None
    stac_source: str | None = None  # derived_from of the output's STAC Item; None: no Item
    upload_to: str | None = None  # s3:// URL the output is uploaded to (runs.upload)
    #: config kernel_groups as reader band positions (kernel_groups.plan_groups): one
    #: kernel task for all groups, one train task per group, infer tasks running them all
    groups: tuple[tuple[int, ...], ...] | None = None

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.run_dir)

    @property
    def plans(self) -> tuple[StepPlan, ...]:
        return tuple(s.plan for s in self.steps)

    @property
    def last(self) -> int:
        return len(self.steps) - 1

    def step_job(self, step: int) -> ImageJob:
        """The job with step ``step``'s own config (its back-projection iterations)."""
        cfg = self.steps[step].config
        return self.job if cfg is self.job.config else replace(self.job, config=cfg)

    def units(self, step: int) -> list[tuple[int, int]]:
        """Every ``(frame, tile)`` of a step whose output is used, frame-major."""
        if not self.steps[step].inferred:
            return []
        return [(f, t) for f in range(self.frames) for t in range(len(self.plans[step].grid))]


@dataclass
class TrainOutcome:
    """A train task's result: weights + normaliser + history, and how it was obtained."""

    step: int
    result: TrainResult
    digest: str  # hash of the weights: the model-cache key
    seconds: float
    resumed: bool = False  # loaded from the run directory instead of trained
    input_stats: SampleStats | None = None  # step 0's: inverts the last gradual step
    extra: dict[str, Any] = field(default_factory=dict)
    kernel: KernelChoice | None = None  # --kernel estimate: the kernel this image uses
    group: int | None = None  # kernel_groups: the band group this network is for


def emit(topic: str, msg: dict) -> None:
    """Send a progress message: a Dask event on a worker, else the local sink."""
    distributed = sys.modules.get("distributed")  # not imported: surely not on a worker
    try:
        if distributed is None:
            raise ValueError("no worker")
        worker = distributed.get_worker()
    except ValueError:
        sink = LOCAL_SINKS.get(topic)
        if sink is not None:
            sink(msg)
        return
    worker.log_event(topic, msg)


def apply_threads(spec: ImageSpec) -> None:
    if spec.torch_threads and torch.get_num_threads() != spec.torch_threads:
        torch.set_num_threads(spec.torch_threads)


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha1()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def open_step_reader(spec: ImageSpec, step: int) -> Reader:
    """What step ``step`` super-resolves: the input, or (``scale_steps``) step ``i - 1``'s
    working Zarr."""
    if not spec.steps[step].rebase:
        return open_input(spec.job)
    return ZarrReader(spec.paths.store(spec.key, step - 1))


def _father_sources(spec: ImageSpec, step: int, stats: SampleStats
                    ) -> list[tuple[ReaderCropSource, float]]:
    """The earlier outputs that joined the fathers (official gradual SR), with their scales."""
    seed = spec.job.config.seed
    return [(ReaderCropSource(ZarrReader(spec.paths.store(spec.key, s.index)),
                              list(range(len(s.plan.bands))), working_stats(stats),
                              seed=seed + s.index), min(s.scale.floats))
            for s in spec.steps[:step] if s.father]


def kernel_task(spec: ImageSpec) -> KernelChoice | GroupChoices:
    """``--kernel estimate``: the image's own kernel (with ``kernel_groups``: each group's,
    from its bands only), kept in the run folder (a resumed run reads it back instead of
    estimating again)."""
    apply_threads(spec)
    job, paths = spec.job, spec.paths
    groups = (None,) if spec.groups is None else tuple(range(len(spec.groups)))
    choices = {g: _kept_choice(paths, paths.kernel(spec.key, g)) for g in groups}
    if any(c is None for c in choices.values()):
        names = group_names(job)
        with open_input(job) as reader:
            for g in (g for g, c in choices.items() if c is None):
                choices[g] = estimate_file_kernel(
                    reader, scale=job.scale, config=job.config, where=str(job.input),
                    fallback=job.fallback_kernel) if g is None else \
                    estimate_group_kernel(job, reader, spec.groups[g], names[g])
                save_choice(paths.kernel(spec.key, g), choices[g], write=paths.write_file)
    if spec.groups is None:
        return choices[None]
    return GroupChoices(group_names(job), tuple(choices[g] for g in groups))


def _kept_choice(paths: RunPaths, path: Path) -> KernelChoice | None:
    """The choice an earlier run kept at ``path``; None: none, or a damaged file."""
    data = paths.read_bytes(path)
    if data is None:
        return None
    try:
        return load_choice(path, data=data)
    except ValueError as exc:  # a damaged file: estimate again
        log.warning("%s; estimating again", exc)
        return None


def step_plan(spec: ImageSpec, step: int, kernel: KernelChoice | None,
              group: int | None = None) -> StepPlan:
    """Step ``step``'s plan, with the estimated kernel (and its halo) when there is one;
    ``group``: band group ``group``'s plan (its bands and kernel)."""
    plan = spec.plans[step]
    if group is not None:
        return group_plan(plan, spec.job, spec.groups[group], kernel)
    return plan if kernel is None else with_kernel(plan, spec.job, kernel.kernel)


def train_task(spec: ImageSpec, step: int, prev: TrainOutcome | None,
               warm: TrainOutcome | None, kernel: KernelChoice | None = None,
               *after: Any) -> TrainOutcome:
    """Train step ``step`` (or load its saved weights); ``after``: ordering only.

    ``warm``: the first-step outcome of the previous compatible image of the batch
    (config ``warm_start``); its weights start this image's training.  ``kernel``: the
    :func:`kernel_task` result (``--kernel estimate``), passed on to the infer tasks.
    """
    return _train(spec, step, prev, warm,
                  kernel if kernel is not None else (None if prev is None else prev.kernel))


def group_train_task(spec: ImageSpec, group: int, kernels: GroupChoices) -> TrainOutcome:
    """``kernel_groups``: train band group ``group``'s network with its own kernel (or load
    its saved weights), as ``zssr upscale`` does (no warm start: one SR step)."""
    return _train(spec, 0, None, None, kernels.choices[group], group=group)


def _train(spec: ImageSpec, step: int, prev: TrainOutcome | None, warm: TrainOutcome | None,
           kernel: KernelChoice | None, *, group: int | None = None) -> TrainOutcome:
    apply_threads(spec)
    wpath = spec.paths.weights(spec.key, step, group)
    saved = spec.paths.read_bytes(wpath)
    if saved is not None:
        try:
            state, stats, hist, seconds = weights_from_bytes(saved, wpath)
        except Exception as exc:  # noqa: BLE001 - a damaged file is retrained
            log.warning("%s: cannot load saved weights (%s); training again", wpath, exc)
        else:
            return TrainOutcome(step, TrainResult(state, hist, stats), _digest(state), seconds,
                                resumed=True, input_stats=stats if prev is None
                                else prev.input_stats, kernel=kernel, group=group)
    plan = step_plan(spec, step, kernel, group)
    stats = None
    if prev is not None:  # scale_steps: the previous output is in working units already
        stats = working_stats(prev.result.stats) if spec.steps[step].rebase \
            else prev.result.stats

    def on_event(ev: TrainEvent) -> None:
        emit(TRAIN_TOPIC, {"key": spec.key, "step": step, "group": group,
                           "iteration": ev.iteration,
                           "max_iters": ev.max_iters, "loss": ev.loss,
                           "learning_rate": ev.learning_rate,
                           "reconstruction_error": ev.reconstruction_error})

    t0 = time.perf_counter()
    reader = open_step_reader(spec, step)
    fathers = [] if prev is None else _father_sources(spec, step, prev.result.stats)
    try:
        result = train_stage(spec.step_job(step), reader, plan, step=step,
                             init_state=None if prev is None else prev.result.state,
                             stats=stats, on_event=on_event,
                             warm_state=None if warm is None else warm.result.state,
                             father_sources=fathers)
    finally:
        reader.close()
        for source, _ in fathers:
            source.reader.close()
    seconds = time.perf_counter() - t0
    spec.paths.write_file(wpath, weights_bytes(result.state, result.stats, result.history,
                                               seconds))
    return TrainOutcome(step, result, _digest(result.state), seconds,
                        input_stats=result.stats if prev is None else prev.input_stats,
                        kernel=kernel, group=group)


def cached_model(spec: ImageSpec, plan: StepPlan, trained: TrainOutcome) -> torch.nn.Module:
    """The network for ``trained``'s weights, built once per worker process."""
    cache_key = (trained.digest, spec.job.device)
    with _MODELS_LOCK:
        model = _MODELS.get(cache_key)
        if model is not None:
            _MODELS.move_to_end(cache_key)
            return model
    cfg = spec.job.config
    model = build_model(len(plan.bands), cfg.net, seed=cfg.seed, device=spec.job.device,
                        state=trained.result.state)
    model.eval()
    with _MODELS_LOCK:
        _MODELS[cache_key] = model
        while len(_MODELS) > MODEL_CACHE_SIZE:
            _MODELS.popitem(last=False)
    return model


def infer_task(spec: ImageSpec, step: int, trained: TrainOutcome,
               units: tuple[tuple[int, int], ...], *after: Any) -> dict[str, Any]:
    """Super-resolve the ``(frame, tile)`` units of one batch into the step's store.

    Units with a marker (written by an earlier, interrupted attempt) are skipped.
    """
    apply_threads(spec)
    t0 = time.perf_counter()
    paths, plan = spec.paths, step_plan(spec, step, trained.kernel)
    done_before = paths.done_tiles(spec.key, step)  # one listing, not a request per unit
    todo = [u for u in units if u not in done_before]
    if not todo:
        return {"step": step, "tiles": 0, "skipped": len(units), "seconds": 0.0}
    writer = _region_writer(spec, step)
    model = cached_model(spec, plan, trained)
    last = step == spec.last
    out_norm = trained.input_stats.normalizer if last and spec.steps[step].rebase else None
    reader = open_step_reader(spec, step)
    done = 0
    try:
        for frame, group in groupby(todo, key=lambda u: u[0]):
            def mark(tile, frame=frame) -> None:
                paths.mark_tile(spec.key, step, frame, tile.index)

            done += _infer_tiles(spec.step_job(step), reader, plan, trained.result,
                                 [t for _, t in group], writer, frame=frame, working=step != spec.last, on_tile=mark,
                                 model=model, hr_shape=spec.out_shape if last else None,
                                 output_normalizer=out_norm)
    finally:
        reader.close()
    return {"step": step, "tiles": done, "skipped": len(units) - len(todo),
            "seconds": time.perf_counter() - t0}


def _region_writer(spec: ImageSpec, step: int) -> RegionWriter:
    mask_store = spec.paths.mask_store(spec.key, step)
    return RegionWriter(spec.paths.store(spec.key, step),
                        mask_store if spec.paths.store_exists(mask_store) else None)


def group_infer_task(spec: ImageSpec, units: tuple[tuple[int, int], ...],
                     *trained: TrainOutcome) -> dict[str, Any]:
    """``kernel_groups``: super-resolve the ``(frame, tile)`` units of one batch, each
    tile by every group's network (``trained``, one outcome per group, in group order) on
    its bands, written once into the store (:func:`infer_group_tiles`, as ``zssr
    upscale``); units with a marker are skipped."""
    apply_threads(spec)
    t0 = time.perf_counter()
    paths = spec.paths
    done_before = paths.done_tiles(spec.key, 0)
    todo = [u for u in units if u not in done_before]
    if not todo:
        return {"step": 0, "tiles": 0, "skipped": len(units), "seconds": 0.0}
    plans = [step_plan(spec, 0, t.kernel, t.group) for t in trained]
    models = [cached_model(spec, p, t) for p, t in zip(plans, trained, strict=True)]
    with open_input(spec.job) as reader:
        done = infer_group_tiles(
            spec.job, reader, plans, [t.result for t in trained], todo, _region_writer(spec, 0),
            hr_shape=spec.out_shape, models=models,
            on_tile=lambda frame, tile: paths.mark_tile(spec.key, 0, frame, tile.index))
    return {"step": 0, "tiles": done, "skipped": len(units) - len(todo),
            "seconds": time.perf_counter() - t0}
