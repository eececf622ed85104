"""Per-image bookkeeping of a run: the image's graph nodes and what their results mean.

:func:`build_nodes` turns one planned image into train -> infer batches ->
(next step ...) -> finalize :class:`~pipeline.runs.graph.Node` s, leaving out
finished tiles.  :class:`ImageState` receives the nodes' results and
failures, writes the manifest transitions (queued, trained, inferred,
finalized, failed), feeds the progress observer and assembles the image's
report entry.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from io_adapters.detect import stale_temps
from io_adapters.errors import WriteError
from io_adapters.vsi import display_url
from pipeline.image.kernel_estimate import describe_choice, is_estimate
from pipeline.runs.driver import RunDir
from pipeline.runs.finalize import finalize_task
from pipeline.runs.graph import Node, Ref
from pipeline.runs.identity import image_key
from pipeline.runs.inputs import InputItem
from pipeline.runs.tasks import (
    ImageSpec,
    TrainOutcome,
    group_infer_task,
    group_train_task,
    infer_task,
    kernel_task,
    train_task,
)
from zssr.api import merge_history
from zssr.train import TrainingHistory

__all__ = ["ImageState", "build_nodes", "history_summary", "resume_output", "MAX_CURVE_POINTS"]

log = logging.getLogger(__name__)

MAX_CURVE_POINTS = 1000  # losses kept in a report entry (evenly subsampled)
MAX_ERROR_CHARS = 2000


def history_summary(hist: TrainingHistory) -> dict[str, Any]:
    """A training history small enough for a JSON report (losses subsampled)."""
    n = len(hist.losses)
    stride = max(1, -(-n // MAX_CURVE_POINTS))
    return {"iterations": hist.iterations, "stop_reason": hist.stop_reason,
            "loss_iters": list(range(0, n, stride)), "losses": hist.losses[::stride],
            "test_iters": hist.test_iters, "reconstruction_errors": hist.reconstruction_errors,
            "learning_rates": hist.learning_rates, "lr_change_iters": hist.lr_change_iters,
            "steps": hist.steps, "seconds": hist.seconds, "warm_started": hist.warm_started}


@dataclass
class ImageState:
    """One image during a run (driver side)."""

    spec: ImageSpec | None
    item: InputItem
    store_metas: list[Any] = field(default_factory=list)
    name: str = ""
    key: str = ""
    skipped: bool = False  # finished by an earlier run
    trained_before: list[bool] = field(default_factory=list)
    done_before: list[set[tuple[int, int]]] = field(default_factory=list)
    state: str = "queued"
    error: str | None = None
    error_class: str | None = None
    stage: str | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    outcomes: dict[int, TrainOutcome] = field(default_factory=dict)  # by step (or group)
    pending: dict[int, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=lambda: {"train": 0.0, "infer": 0.0,
                                                                "write": 0.0})
    tiles_total: int = 0
    tiles_skipped: int = 0
    tiles_inferred: int = 0
    steps_trained: int = 0
    steps_resumed: int = 0
    finalized: dict[str, Any] = field(default_factory=dict)
    kernel: Any = None  # the KernelChoice of --kernel estimate (GroupChoices: kernel_groups)

    def __post_init__(self) -> None:
        if self.spec is not None:
            self.name, self.key = self.spec.name, self.spec.key

    @classmethod
    def failed_input(cls, item: InputItem, name: str, fingerprint: dict[str, Any],
                     exc: BaseException | None = None) -> ImageState:
        """An image that fails before any task: missing, unreadable, too small."""
        key = image_key(name, {"path": str(item.path)}, fingerprint)
        state = cls(spec=None, item=item, name=name, key=key, state="failed", stage="plan")
        if exc is not None:
            state.error_class, state.error = type(exc).__name__, str(exc)[:MAX_ERROR_CHARS]
        else:
            state.error_class, state.error = item.error_class, item.error
        return state

    def pending_units(self) -> int:
        spec = self.spec
        return sum(len(spec.units(s)) - len(self.done_before[s]) for s in range(len(spec.plans)))

    # ------------------------------------------------------------------ results

    def on_done(self, node: Node, result: Any, rd: RunDir, observer: Any) -> None:
        if self.state == "failed":
            return
        spec = self.spec
        if node.kind == "kernel":
            self.kernel = result
            rd.event("kernel chosen", image=self.key, kernel=describe_choice(result),
                     **result.summary())
        elif node.kind == "train":
            self.outcomes[node.step if node.group is None else node.group] = result
            self.seconds["train"] += result.seconds
            self.steps_resumed += result.resumed
            self.steps_trained += not result.resumed
            rd.record(self.key, "trained", step=node.step, resumed=result.resumed,
                      iterations=result.result.history.iterations, seconds=result.seconds,
                      **({} if node.group is None else {"group": node.group}))
            if spec.groups is not None and len(self.outcomes) < len(spec.groups):
                return  # the tiles follow every group's training
            units = len(spec.units(node.step))
            if units:  # output MP per tile, for seconds per output MP in the tile bar
                rows, cols = spec.plans[node.step].grid.hr_shape
                observer.tile_megapixels(self.key, rows * cols * spec.frames / 1e6 / units)
            observer.stage(self.key, f"s{node.step}" if spec.last else "", units,
                           done=len(self.done_before[node.step]))
            if self.pending[node.step] == 0 and node.step == spec.last:
                rd.record(self.key, "inferred", tiles=self.tiles_inferred)
        elif node.kind == "infer":
            self.tiles_inferred += result["tiles"]
            self.tiles_skipped += result["skipped"]
            self.seconds["infer"] += result["seconds"]
            observer.tiles(self.key, node.tiles)
            self.pending[node.step] -= 1
            if self.pending[node.step] == 0 and node.step == spec.last:
                rd.record(self.key, "inferred", tiles=self.tiles_inferred)
        else:
            self.finalized = dict(result)
            self.seconds["write"] = float(self.finalized.pop("write_seconds", 0.0))
            self.state = "finalized"
            entry = self.entry()
            rd.write_file(rd.entry(self.key),
                          json.dumps(entry, indent=1, default=str).encode())
            rd.record(self.key, "finalized", input=self.item.location,
                      output=str(spec.job.output), seconds=self.seconds)
            rd.event("image finalized", image=self.key, output=str(spec.job.output))
            observer.image_done(self.key, "finalized")

    def on_error(self, node: Node, exc: BaseException, rd: RunDir, observer: Any) -> None:
        if self.state == "failed":
            return
        self.state, self.stage = "failed", node.kind
        self.error_class = type(exc).__name__
        self.error = (str(exc) or repr(exc))[:MAX_ERROR_CHARS]
        rd.record(self.key, "failed", input=self.item.location, stage=node.kind,
                  step=node.step, error_class=self.error_class, error=self.error)
        rd.event("image failed", image=self.key, stage=node.kind,
                 error_class=self.error_class, error=self.error)
        observer.image_done(self.key, "failed")

    # ------------------------------------------------------------------ report entry

    def history(self) -> TrainingHistory | None:
        if not self.outcomes:
            return None
        total = TrainingHistory()
        for i in sorted(self.outcomes):  # kernel_groups: one entry per group, as upscale
            outcome = self.outcomes[i]
            merge_history(total, outcome.result.history,
                          self.spec.steps[outcome.step].scale.floats, i)
        return total

    def entry(self) -> dict[str, Any]:
        spec = self.spec
        e: dict[str, Any] = {"key": self.key, "name": self.name, "input": self.item.location,
                             "state": self.state}
        if spec is not None:
            e.update(output=str(spec.job.output), scale=spec.job.scale,
                     output_mp=spec.out_shape[0] * spec.out_shape[1] * spec.frames / 1e6,
                     seconds=dict(self.seconds),
                     tiles={"total": self.tiles_total, "skipped": self.tiles_skipped,
                            "inferred": self.tiles_inferred},
                     steps={"trained": self.steps_trained, "resumed": self.steps_resumed})
        if self.error is not None:
            e.update(error_class=self.error_class, error=self.error, stage=self.stage)
        hist = self.history()
        if hist is not None:
            e["history"] = history_summary(hist)
        e.update(self.finalized)
        return e

    def final_entry(self, rd: RunDir) -> dict[str, Any]:
        """The report entry; an image finished by an earlier run keeps its saved entry."""
        if not self.skipped:
            return self.entry()
        try:
            e = json.loads(rd.read_bytes(rd.entry(self.key)) or b"")
        except (OSError, ValueError):
            e = {"key": self.key, "name": self.name, "input": self.item.location,
                 "output": str(self.spec.job.output), "state": "finalized"}
        e["skipped"] = True
        return e


def resume_output(state: ImageState, rd: RunDir, *, resume: bool, overwrite: bool,
                  last: dict[str, dict[str, Any]], owners: dict[str, str],
                  same_settings: tuple[str, str] | None = None) -> None:
    """What an earlier run did to ``state``'s output: finished it (``state.skipped``), or
    claimed it (``spec.replace_output``); an output of another configuration is refused
    without ``overwrite``; temporaries of an interrupted writer are removed.

    ``same_settings`` = ``(input location, RunSettings.fingerprint_id())``: an output this
    run folder wrote for the same input path under the same settings, whose input has
    changed since (an edited file: a new key), is this run's to replace: a stale result
    is not kept behind a refusal."""
    spec = state.spec
    output = Path(spec.job.output)
    owner = owners.get(str(output))
    exists = rd.output_exists(output)
    if not resume:
        rd.clear_work(spec.key)
    elif last.get(spec.key, {}).get("state") == "finalized" and exists and owner == spec.key:
        state.skipped = True
        return
    replace_output = overwrite or owner == spec.key
    if not replace_output and owner is not None and same_settings is not None and exists:
        record = rd.queued_records().get(owner, {})
        if (record.get("input"), record.get("settings")) == same_settings:
            log.info("%s: its input %s changed since this run folder wrote it (same "
                     "settings); replacing it", output, same_settings[0])
            replace_output = True
    if exists and not replace_output:
        raise WriteError(f"{display_url(output)}: output exists and was not written by this "
                         "configuration of this input; pass --overwrite to replace it, or use "
                         "another --out")
    state.spec = replace(spec, replace_output=replace_output)
    if rd.remote:  # no temporaries: a killed upload's parts are aborted by the next upload
        return
    for temp in stale_temps(output):  # a writer killed in an earlier run (we hold the lock)
        log.info("%s: removing a temporary left by an interrupted run", temp)
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        else:
            temp.unlink(missing_ok=True)


def build_nodes(state: ImageState, *, batch_size: int, gpu: bool,
                warm_from: str | None = None) -> list[Node]:
    """train -> infer batches for every step, then finalize; finished tiles left out.

    ``warm_from``: key of the step-0 train node whose weights start this image's
    training (config ``warm_start``); if that node fails, this image starts cold.
    """
    spec, run = state.spec, state.run_id
    if spec.groups is not None:
        return _group_nodes(state, batch_size=batch_size, gpu=gpu)
    nodes: list[Node] = []
    train_keys: list[str] = []
    prev_infers: list[str] = []
    kernel = None
    if is_estimate(spec.job.kernel):  # its own task, before training (saved in the run)
        kernel = Ref(f"zssr-kernel-{spec.key}-{run}")
        nodes.append(Node(kernel.key, kernel_task, (spec,), spec.key, "kernel"))
    for step in range(len(spec.plans)):
        units = spec.units(step)
        state.tiles_total += len(units)
        state.tiles_skipped += len(state.done_before[step])
        tkey = f"zssr-train-{spec.key}-s{step}-{run}"
        prev = Ref(train_keys[-1]) if train_keys else None
        warm = Ref(warm_from) if warm_from is not None and step == 0 else None
        nodes.append(Node(tkey, train_task, (spec, step, prev, warm,
                                             kernel if step == 0 else None,
                                             *map(Ref, prev_infers)),
                          spec.key, "train", step, gpu=gpu))
        train_keys.append(tkey)
        todo = [u for u in units if u not in state.done_before[step]]
        prev_infers = []
        for b in range(0, len(todo), batch_size):
            batch = tuple(todo[b:b + batch_size])
            ikey = f"zssr-infer-{spec.key}-s{step}-b{b // batch_size}-{run}"
            nodes.append(Node(ikey, infer_task, (spec, step, Ref(tkey), batch), spec.key,
                              "infer", step, tiles=len(batch), gpu=gpu))
            prev_infers.append(ikey)
        state.pending[step] = len(prev_infers)
    nodes.append(Node(f"zssr-finalize-{spec.key}-{run}", finalize_task,
                      (spec, *map(Ref, train_keys), *map(Ref, prev_infers)), spec.key,
                      "finalize", spec.last))
    return nodes


def _group_nodes(state: ImageState, *, batch_size: int, gpu: bool) -> list[Node]:
    """``kernel_groups`` (one SR step): kernel -> one train per group -> infer batches
    running every group's network -> finalize; finished tiles left out.  No warm start."""
    spec, run = state.spec, state.run_id
    kernel = Ref(f"zssr-kernel-{spec.key}-{run}")
    nodes = [Node(kernel.key, kernel_task, (spec,), spec.key, "kernel")]
    train_keys = [f"zssr-train-{spec.key}-s0-g{g}-{run}" for g in range(len(spec.groups))]
    nodes += [Node(k, group_train_task, (spec, g, kernel), spec.key, "train", 0, gpu=gpu,
                   group=g) for g, k in enumerate(train_keys)]
    units = spec.units(0)
    state.tiles_total += len(units)
    state.tiles_skipped += len(state.done_before[0])
    todo = [u for u in units if u not in state.done_before[0]]
    infer_keys = []
    for b in range(0, len(todo), batch_size):
        batch = tuple(todo[b:b + batch_size])
        ikey = f"zssr-infer-{spec.key}-s0-b{b // batch_size}-{run}"
        nodes.append(Node(ikey, group_infer_task, (spec, batch, *map(Ref, train_keys)),
                          spec.key, "infer", 0, tiles=len(batch), gpu=gpu))
        infer_keys.append(ikey)
    state.pending[0] = len(infer_keys)
    nodes.append(Node(f"zssr-finalize-{spec.key}-{run}", finalize_task,
                      (spec, *map(Ref, train_keys), *map(Ref, infer_keys)), spec.key,
                      "finalize", 0))
    return nodes
