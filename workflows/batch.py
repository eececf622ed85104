"""``zssr batch JOB.yaml``: run a job spec idempotently, safe to start twice.

Every run expands the job's inputs and skips each input already done under
this job's config: an input is done when the state file in the output folder
(``.zssr-batch-state.json``) records the same content hash (SHA-256 of the
file, or of every file of a folder) and the same config hash (resolved engine
+ pipeline config and scale) and its output still exists.  So a nightly run
picks up just the new (or changed) files, and a changed config redoes all.

The remaining inputs go through :func:`pipeline.runs.run.run_batch` (one Dask
graph, on the job's scheduler) into a hidden run directory in the output
folder; finished outputs are then moved to their names from the job's
template, and the state file is updated after each.

A lock file (``.zssr-batch.lock``, ``fcntl.flock``) makes a second run on the
same output folder exit at once with :class:`pipeline.errors.LockedError`
(exit code 9) while the first is working.

Every write follows the one output rule (:mod:`io_adapters.output_safety`): a
template that maps an input onto an input or onto the control files is refused
before anything is processed (exit 2); outputs recorded in the state file are never
taken as inputs (no ``a_x2_x2`` generations); an existing output is replaced only
when the state file says this batch wrote it (or, that file being unreadable, when it
is an output of the format zssr writes); a link at the lock, the state file,
the run folder or an output is refused (exit 7 or a failed input), never followed.

Inputs may be URLs (their content: an object's size and ETag), and with ``stac_items``
and ``output_prefix`` each placed output gets its STAC Item and is uploaded
(:mod:`workflows.batch_cloud`); the output folder, state file and lock stay local.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from io_adapters.detect import open_reader
from io_adapters.errors import WriteError
from io_adapters.output_safety import (
    BATCH_LOCK_FILE,
    BATCH_RUN_DIR,
    BATCH_STATE_FILE,
    Claimed,
    UnsafeOutputError,
    check_output,
    make_dirs,
    remove_tree,
    replace_onto,
    write_text_atomic,
)
from io_adapters.vsi import is_vsi
from pipeline.errors import EXIT, UsageError
from pipeline.image.kernel_io import kernel_options
from pipeline.locking import FolderLock
from pipeline.runs.config import DEFAULT_TILE, ResolvedConfig, ThroughPlaneConfig
from pipeline.runs.inputs import InputItem, expand_inputs
from pipeline.runs.run import STAC_DIR, natural_suffix, run_batch
from pipeline.runs.settings import RunSettings
from pipeline.runs.volumes import volume_stem, volume_suffix

from . import batch_cloud as cloud
from .jobspec import JobSpec, check_targets, control_paths, job_input, load_job, render_name

__all__ = ["BatchSummary", "BatchLock", "run_job", "run_job_file", "content_hash",
           "config_hash", "expand_job_inputs", "STATE_FILE", "LOCK_FILE", "RUN_DIR"]

log = logging.getLogger(__name__)

STATE_FILE = BATCH_STATE_FILE
LOCK_FILE = BATCH_LOCK_FILE
RUN_DIR = BATCH_RUN_DIR
LIST_SUFFIXES = (".txt", ".lst", ".list")


@dataclass
class BatchSummary:
    output: Path
    processed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        return {"processed": len(self.processed), "skipped": len(self.skipped),
                "failed": len(self.failed)}

    @property
    def exit_code(self) -> int:
        return EXIT["batch"] if self.failed else EXIT["ok"]


class BatchLock(FolderLock):
    """An exclusive, non-blocking lock on an output folder (released on exit or death)."""

    def __init__(self, folder: Path) -> None:
        folder = Path(folder)
        super().__init__(folder / LOCK_FILE, lambda holder: (
            f"{folder}: another zssr batch is running on this output folder ({holder}); "
            "this run exits without work. It will pick up what is left next time"))
        # a link planted at the lock's name is refused when acquired (open_lock_file:
        # O_NOFOLLOW, a regular file with one link)


def content_hash(path: Path) -> str:
    """SHA-256 of a file's bytes, or of a folder's relative names and file bytes."""
    h = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        if path.is_dir():
            h.update(str(p.relative_to(path)).encode() + b"\0")
        with open(p, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def config_hash(rc: ResolvedConfig, scale: float,
                through_plane: ThroughPlaneConfig | None = None) -> str:
    """SHA-256 of what shapes a result: resolved engine + pipeline config and scale (and a
    through-plane job's settings)."""
    tp = {} if through_plane is None else {"through_plane": dataclasses.asdict(through_plane)}
    text = json.dumps({"version": 1, "config": rc.to_dict(), "scale": scale, **tp},
                      sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()


def expand_job_inputs(spec: JobSpec) -> list[InputItem]:
    """Globs, folders and list files (one path per line, ``#`` comments) -> images."""
    specs: list[str] = []
    for entry in spec.inputs:
        p = Path(entry)
        if p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    specs.append(job_input(line, p.parent))
        else:
            specs.append(entry)
    return expand_inputs(specs, exclude=(spec.output / RUN_DIR,), assets=spec.assets,
                         stac_dir=spec.output / RUN_DIR / STAC_DIR)  # Items: their VRTs


def _load_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"version": 1, "inputs": {}}
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("%s: unreadable state (%s); every input is processed again", path, exc)
        return {"version": 1, "inputs": {}, LOST: True}
    if isinstance(data, dict) and isinstance(data.get("inputs"), dict):
        return data
    log.warning("%s: state without inputs; every input is processed again", path)
    return {"version": 1, "inputs": {}, LOST: True}


LOST = "_lost"  # in memory only: the state file was unreadable, its records are gone


def _save_state(path: Path, state: dict[str, Any]) -> None:
    kept = {k: v for k, v in state.items() if k != LOST}
    write_text_atomic(path, json.dumps(kept, indent=1, sort_keys=True))  # no link followed


def _output_for(spec: JobSpec, item: InputItem) -> Path:
    volume = spec.through_plane is not None  # zssr run --through-plane's names
    with open_reader(item.path) as reader:
        suffix = volume_suffix(reader.meta, None) if volume else natural_suffix(reader.meta)
    name, parent = cloud.input_names(item)
    stem = volume_stem(item.stem) if volume else item.stem
    return render_name(spec, stem=stem, name=name, parent=parent, suffix=suffix)


@dataclass
class _Todo:
    item: InputItem
    content: str
    output: Path


def _recorded_outputs(state: dict[str, Any]) -> set[Path]:
    """Every output the state file says this batch wrote (never an input: no generations)."""
    return {Path(str(r["output"])) for r in state["inputs"].values()
            if isinstance(r, dict) and r.get("output")}


def _check_target(spec: JobSpec, out: Path, state: dict[str, Any]) -> None:
    """The output rule for one output: inside the folder, no link, not a control file,
    and an existing one only when this batch wrote it: listed in the state file or, when
    that file was unreadable (its records lost), an output of the format zssr writes."""
    if out.exists() and out not in _recorded_outputs(state) and not state.get(LOST):
        raise UnsafeOutputError(f"{out}: exists and was not written by this batch (its state "
                                "file does not list it); delete it or change the name template")
    check_output(out, root=spec.output, control=control_paths(spec), overwrite=True)


def _targets(spec: JobSpec, recorded: set[Path],
             summary: BatchSummary) -> list[tuple[InputItem, Path]]:
    """``(input, output)`` of every input; the whole job is refused when the template maps
    one onto an input or a control file (:func:`~workflows.jobspec.check_targets`)."""
    items = [it for it in expand_job_inputs(spec) if it.path not in recorded]
    planned: list[tuple[InputItem, Path]] = []
    for item in items:
        rec = {"input": item.location}
        if not item.ok:
            summary.failed.append({**rec, "error_class": item.error_class, "error": item.error})
            continue
        try:
            planned.append((item, _output_for(spec, item)))
        except Exception as exc:  # noqa: BLE001 - one bad input fails alone
            summary.failed.append({**rec, "error_class": type(exc).__name__, "error": str(exc)})
    check_targets(spec, {item.path: out for item, out in planned},
                  inputs=[it.path for it in items])
    return planned


def _plan(spec: JobSpec, state: dict[str, Any], chash: str,
          summary: BatchSummary) -> list[_Todo]:
    todo: list[_Todo] = []
    taken: dict[Path, Path] = {}
    recorded = _recorded_outputs(state)
    for item, out in _targets(spec, recorded, summary):
        rec = {"input": item.location}
        if out in taken:
            summary.failed.append({**rec, "error_class": "UsageError", "error": (
                f"output {out} is also the output of {taken[out]}; add {{parent}} or another "
                "field to the job's name template")})
            continue
        taken[out] = item.path
        try:
            content = cloud.object_content(item.path) if is_vsi(item.path) \
                else content_hash(item.path)
        except Exception as exc:  # noqa: BLE001 - one bad input fails alone
            summary.failed.append({**rec, "error_class": type(exc).__name__, "error": str(exc)})
            continue
        done = state["inputs"].get(item.location, {})
        if done.get("content") == content and done.get("config") == chash \
                and done.get("output") == str(out) and out.exists():
            summary.skipped.append({**rec, "output": str(out)})
            continue
        try:
            _check_target(spec, out, state)
            cloud.check_object(spec, out, ours=out in recorded)
        except (UnsafeOutputError, WriteError) as exc:
            summary.failed.append({**rec, "error_class": type(exc).__name__, "error": str(exc)})
            continue
        todo.append(_Todo(item, content, out))
    return todo


def _settings(spec: JobSpec, rc: ResolvedConfig, ground_truth: Path | None = None) -> RunSettings:
    """The run's settings; no ``stac_items``/``output_prefix`` there: the run's outputs
    get their names from the job's template after it, and their Items and uploads then
    (:mod:`workflows.batch_cloud`)."""
    pc = rc.pipeline
    if spec.through_plane is not None:  # each input a volume (pipeline.runs.volumes)
        return RunSettings(out_dir=spec.output / RUN_DIR, scale=1.0, config=rc.engine,
                           config_data=rc.data, scheduler=spec.scheduler, overwrite=True,
                           transfer_syntax=spec.transfer_syntax,
                           through_plane=spec.through_plane)
    return RunSettings(out_dir=spec.output / RUN_DIR, scale=spec.scale, config=rc.engine,
                       config_data=rc.data, **kernel_options(None, None, pc),
                       kernel_groups=pc.kernel_group_indexes,
                       bands=pc.band_indexes, tile=pc.tile or DEFAULT_TILE,
                       scheduler=spec.scheduler, overwrite=True,
                       ground_truth=ground_truth, chain=pc.chain or None,
                       transfer_syntax=spec.transfer_syntax)


def _truth_folder(spec: JobSpec, todo: list[_Todo]) -> Path | None:
    """A folder of links to the references of this run's inputs only (pairing by stem)."""
    if spec.ground_truth is None:
        return None
    folder = spec.output / RUN_DIR / "ground_truth"
    remove_tree(folder)  # a link there: only the link goes
    make_dirs(folder, root=spec.output)
    refs = {(p.name if p.is_dir() else p.stem): p for p in sorted(spec.ground_truth.iterdir())
            if not p.name.startswith(".")}
    for t in todo:
        ref = refs.get(t.item.stem)
        if ref is not None:
            (folder / ref.name).symlink_to(ref)
    return folder


def _place(spec: JobSpec, src: Path, dst: Path, state: dict[str, Any]) -> None:
    """Move a finished output to its name (replacing an older one this batch wrote),
    by the output rule: checked again, folders made without following links."""
    make_dirs(dst.parent, root=spec.output)
    _check_target(spec, dst, state)
    replace_onto(src, dst)


def _record(state: dict[str, Any], path: Path, t: _Todo, chash: str) -> None:
    state["inputs"][t.item.location] = {
        "content": t.content, "config": chash, "output": str(t.output),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    _save_state(path, state)


def _process_with_run(spec: JobSpec, rc: ResolvedConfig, todo: list[_Todo], chash: str,
                      state: dict[str, Any], summary: BatchSummary, *, observer: Any,
                      quiet: bool) -> None:
    by_input = {t.item.location: t for t in todo}
    settings = _settings(spec, rc, _truth_folder(spec, todo))
    result = run_batch([t.item for t in todo], settings, observer=observer,  # (Items: VRTs)
                       quiet=quiet)
    for entry in result.entries:
        t = by_input.get(str(entry.get("input")))
        if t is None:
            continue
        if entry.get("state") != "finalized" or not Path(str(entry.get("output"))).exists():
            summary.failed.append({"input": t.item.location,
                                   "error_class": entry.get("error_class", "RunError"),
                                   "error": entry.get("error", "not finished")})
            continue
        _place(spec, Path(entry["output"]), t.output, state)
        _record(state, spec.output / STATE_FILE, t, chash)
        try:  # done locally; a failed Item or upload is put back by the next run
            cloud.finish_output(spec, settings, t.item.location, t.output)
        except Exception as exc:  # noqa: BLE001 - one output fails alone
            summary.failed.append({"input": t.item.location, "output": str(t.output),
                                   "error_class": type(exc).__name__, "error": str(exc)})
            continue
        scores = {k: entry[k] for k in ("psnr", "ssim") if k in entry}
        summary.processed.append({"input": t.item.location, "output": str(t.output),
                                  **scores})


def run_job(spec: JobSpec, *, observer: Any = None, quiet: bool = True) -> BatchSummary:
    """Process the inputs of ``spec`` not yet done under its config (see the module doc)."""
    t0 = time.perf_counter()
    rc = spec.resolve()
    chash = config_hash(rc, spec.scale, spec.through_plane)
    cloud.check_bucket_first(spec)  # a missing bucket: exit 7 before anything is made
    _check_output_folder(spec)
    spec.output.mkdir(parents=True, exist_ok=True)
    summary = BatchSummary(spec.output)
    with BatchLock(spec.output):
        _check_controls(spec)
        state_path = spec.output / STATE_FILE
        state = _load_state(state_path)
        todo = _plan(spec, state, chash, summary)
        log.info("%s: %d to process, %d done earlier, %d failed to plan", spec.output,
                 len(todo), len(summary.skipped), len(summary.failed))
        if todo:
            _process_with_run(spec, rc, todo, chash, state, summary, observer=observer,
                              quiet=quiet)
        if spec.stac_items or spec.output_prefix:
            done = [(loc, Path(str(r["output"]))) for loc, r in state["inputs"].items()
                    if isinstance(r, dict) and r.get("output")]
            failed = {f["input"] for f in summary.failed}  # reported once
            summary.failed += [f for f in cloud.finish_batch(
                spec, _settings(spec, rc), done, changed=bool(summary.processed))
                if f["input"] not in failed]
    summary.seconds = time.perf_counter() - t0
    return summary


def _check_output_folder(spec: JobSpec) -> None:
    """Before anything is created: the output folder is no input and lies inside none (a
    Zarr store, a DICOM series: the lock and run folder would change the input). Holding
    inputs is fine: outputs beside their inputs, the state file keeps generations out."""
    claimed = Claimed([it.path for it in expand_job_inputs(spec)], "input")
    out = spec.output.resolve()
    problem = None if out in claimed.holders else claimed.problem(out)
    if problem is not None:
        where = f"job {spec.source}" if spec.source else "job"
        raise UsageError(f"{where}: output folder {out}: {problem}; choose an output folder "
                         "outside the inputs")


def _check_controls(spec: JobSpec) -> None:
    """Before any work: the state file and the run folder are not links (never followed)."""
    state = spec.output / STATE_FILE
    if os.path.islink(state) or (state.exists() and not state.is_file()):
        raise UnsafeOutputError(f"{state}: is a symbolic link or not a regular file; zssr "
                                "never writes through links; remove it")
    make_dirs(spec.output / RUN_DIR, root=spec.output)


def run_job_file(path: str | Path, *, set_overrides: dict[str, Any] | None = None,
                 scheduler: str | None = None, observer: Any = None,
                 quiet: bool = True) -> BatchSummary:
    """Load ``path`` and run it; ``set_overrides`` and ``scheduler`` win over the file's."""
    spec = load_job(path)
    if set_overrides:
        spec = dataclasses.replace(spec, set={**spec.set, **set_overrides})
    if scheduler:
        spec = dataclasses.replace(spec, scheduler=scheduler)
    return run_job(spec, observer=observer, quiet=quiet)
