"""``run_batch``: a batch of images through one Dask graph, resumable, with a report.

The driver (this module) expands the inputs, opens the run directory (lock,
manifest, config), plans each image (tile grids of every gradual-SR step,
read from the file's metadata only), decides what earlier runs already did
(finished images, trained steps, finished tiles), creates the Zarr stores
that do not exist yet, and hands the remaining tasks to :mod:`pipeline.runs.graph`.
Results come back as task completions: the manifest, the progress observer
and the report are fed from them.  Library code, no printing: the CLI
attaches a progress observer and prints the summary.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from configs import split_sections
from io_adapters.base import Metadata
from io_adapters.detect import scale_metadata
from io_adapters.objstore import check_remote_output
from io_adapters.output_safety import check_output
from io_adapters.vsi import display_url, is_vsi
from io_adapters.zarr_regions import create_store
from pipeline.catalog.provenance import with_provenance
from pipeline.errors import EXIT, UsageError
from pipeline.image.job import (
    check_size,
    dicom_writer_options,
    open_input,
    preflight_output,
    working_meta,
)
from pipeline.image.kernel_groups import plan_groups
from pipeline.image.plan import plan_steps
from pipeline.runs.config import pipeline_config_from_dict, refuse_through_plane
from pipeline.runs.driver import JsonLinesHandler, RunDir
from pipeline.runs.graph import SchedulerInfo, execute, open_scheduler, resolve_scheduler
from pipeline.runs.identity import image_key, input_identity
from pipeline.runs.inputs import InputItem, expand_inputs, output_names, pair_ground_truth
from pipeline.runs.settings import RunSettings
from pipeline.runs.stac_run import write_run_stac
from pipeline.runs.state import ImageState, build_nodes, resume_output
from pipeline.runs.tasks import LOCAL_SINKS, TRAIN_TOPIC, ImageSpec
from pipeline.runs.upload import check_prefix_bucket, upload_run, with_upload
from pipeline.runs.volumes import VolumeState, plan_volume_state
from pipeline.steps.chain import ChainReader
from zssr.config import ConfigError, config_to_dict
from zssr.sr_steps import scale_steps

__all__ = ["RunSummary", "run_batch", "FORMAT_SUFFIXES", "natural_suffix"]

log = logging.getLogger(__name__)

STAC_DIR = "stac"  # a STAC Item input's stacked VRT, in the run folder (resume reads it)
FORMAT_SUFFIXES = {"tif": ".tif", "png": ".png", "zarr": ".zarr", "dcm": ".dcm", "dicom": ".dcm"}


@dataclass
class RunSummary:
    run_dir: Path
    entries: list[dict[str, Any]]
    counts: dict[str, int]
    seconds: float
    scheduler: str
    report: Path | None = None

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if e.get("state") == "failed"]

    @property
    def exit_code(self) -> int:
        return EXIT["batch"] if self.failed else EXIT["ok"]


def natural_suffix(meta: Metadata) -> str:
    """The output suffix of the input's own format ("" = a folder: a DICOM series)."""
    if meta.format == "geotiff":
        return ".tif"
    if meta.format == "dicom":
        return "" if meta.extra.get("layout") == "series" else ".dcm"
    if meta.format == "zarr":
        return ".zarr"
    ok_png = meta.dtype in (np.dtype("uint8"), np.dtype("uint16")) and meta.bands <= 4
    return ".png" if ok_png else ".tif"


def _output_suffix(meta: Metadata, settings: RunSettings) -> str:
    if settings.out_format is None:
        return natural_suffix(meta)
    try:
        return FORMAT_SUFFIXES[settings.out_format]
    except KeyError:
        raise UsageError(f"--format {settings.out_format!r}: expected one of "
                         f"{', '.join(FORMAT_SUFFIXES)}") from None


def _plan(item: InputItem, name: str, settings: RunSettings, rd: RunDir, gt: Path | None,
          last: dict[str, dict[str, Any]], owners: dict[str, str]) -> ImageState:
    """Read the input's metadata, plan every step, decide what earlier runs did, and check
    the output can be written (nothing is computed yet)."""
    key = image_key(name, input_identity(item.path), settings.fingerprint())
    job = settings.image_job(item.path)
    with open_input(job) as reader:
        meta = reader.meta  # in the units SR works in (after a chain's pre steps)
        chain = reader.chain if isinstance(reader, ChainReader) else None
        source = reader.inner.meta if chain is not None else meta
        output = rd.check_output(  # the output rule: inside outputs/, never an input
            rd.outputs / f"{name}_x{settings.scale:g}{_output_suffix(source, settings)}",
            inputs=(item.path,))
        source = item.location  # a URL input named as the user gave it
        job = with_provenance(replace(job, output=output, writer_options=dicom_writer_options(
            output, settings.deidentify, settings.transfer_syntax)), source=source)  # provenance tags, as zssr upscale
        check_size(meta, job)
        steps = plan_steps(meta, job)
        groups = plan_groups(job, meta, steps)  # kernel_groups: checked before any work
        metas: list[Metadata | None] = []  # of each step's store (None: not computed)
        for step in steps:
            reads = metas[-1] if step.rebase else meta
            metas.append(scale_metadata(meta, settings.scale) if step.last else
                         working_meta(reads, step.plan, rd.store(key, step.index))
                         if step.inferred else None)
        spec = ImageSpec(key=key, name=name, job=job, run_dir=rd.root, steps=tuple(steps),
                         frames=meta.frames, out_shape=(metas[-1].rows, metas[-1].cols),
                         ground_truth=gt, torch_threads=settings.torch_threads,
                         stac_source=source if settings.stac_items else None, groups=groups)
        state = ImageState(spec=spec, item=item, store_metas=metas)
        _resume(state, rd, settings, last, owners)
        if settings.output_prefix:  # the object checked before any work (runs.upload)
            state.spec = with_upload(state.spec, settings.output_prefix, skipped=state.skipped)
        if not state.skipped:
            preflight(state.spec, meta, settings.scale, chain=chain)
    return state


def preflight(spec: ImageSpec, meta: Metadata, scale: float, *, chain: Any = None) -> None:
    """Before any work: the output can be written.  On object storage the object is
    checked (replaced only when this run folder owns it, or with --overwrite, and only
    when zssr wrote it) and the writer tried in a local temporary folder."""
    job = replace(spec.job, overwrite=spec.replace_output)
    if not is_vsi(job.output):
        preflight_output(job, meta, scale, chain=chain)
        return
    check_remote_output(display_url(job.output), overwrite=spec.replace_output)
    folder = Path(tempfile.mkdtemp(prefix=".zssr-preflight-"))
    try:
        preflight_output(replace(job, output=folder / Path(job.output).name), meta, scale,
                         chain=chain)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _mask_meta(meta: Metadata) -> Metadata:
    return replace(meta, bands=1, dtype=np.dtype("uint8"), nodata=None, has_mask=False,
                   band_names=(), geo=None, medical=None, extra={}, alpha_band=None,
                   format="zarr")


def _ensure_stores(state: ImageState, rd: RunDir) -> None:
    """Create each step's Zarr store unless it exists (never re-create finished work)."""
    spec = state.spec
    for step, plan in enumerate(spec.plans):
        if state.store_metas[step] is None:  # an output of the gradual SR that is never used
            continue
        path = rd.store(spec.key, step)
        if rd.store_ready(path):  # a store that is or holds a link is refused
            continue
        rd.clear_tiles(spec.key, step)  # stale markers
        rd.make_dir(path.parent)
        meta, chunks = state.store_metas[step], plan.grid.hr_chunk_shape
        if step == spec.last and meta.has_mask and meta.nodata is None \
                and meta.alpha_band is None:
            create_store(rd.mask_store(spec.key, step), _mask_meta(meta), chunks=chunks,
                         overwrite=True)
        create_store(path, meta, chunks=chunks, overwrite=True)  # the metadata last


def _resume(state: ImageState, rd: RunDir, settings: RunSettings,
            last: dict[str, dict[str, Any]], owners: dict[str, str]) -> None:
    """Decide what of ``state`` earlier runs already did."""
    resume_output(state, rd, resume=settings.resume, overwrite=settings.overwrite, last=last,
                  owners=owners, same_settings=(state.item.location, settings.fingerprint_id()))
    if state.skipped:
        return
    spec = state.spec
    _ensure_stores(state, rd)
    state.trained_before = [rd.exists(rd.weights(spec.key, s)) for s in range(len(spec.plans))]
    state.done_before = [rd.done_tiles(spec.key, s) for s in range(len(spec.plans))]


def _batch_size(settings: RunSettings, sched: SchedulerInfo, pending: int) -> int:
    if settings.batch_tiles:
        return settings.batch_tiles
    return max(1, min(16, math.ceil(pending / (4 * max(sched.threads, 1)))))


def run_batch(inputs: list[str | Path | InputItem], settings: RunSettings, *, observer: Any = None,
              quiet: bool = False) -> RunSummary:
    """Super-resolve every input into ``settings.out_dir`` (see the module doc)."""
    from pipeline.runs.progress import RunObserver
    from pipeline.runs.report import write_run_report

    t0 = time.perf_counter()
    observer = observer or RunObserver()
    remote = is_vsi(settings.out_dir)
    if remote:
        _check_remote_settings(settings)
    items = expand_inputs(inputs, exclude=() if remote else (settings.out_dir,),
                          assets=settings.assets,  # Items: VRTs kept in the run folder
                          stac_dir=None if remote else settings.out_dir / STAC_DIR)
    if not items:
        raise UsageError("no inputs given; pass image files, folders or glob patterns")
    if settings.through_plane is None:  # a config error fails the run at once
        scale_steps(settings.scale, settings.config)
        if "through_plane" in settings.config_data:  # e.g. preset ct-thin in a batch job
            refuse_through_plane(pipeline_config_from_dict(
                split_sections(settings.config_data)[1]), "run_batch")
    ok_items = [it for it in items if it.ok]
    pairs = pair_ground_truth(ok_items, settings.ground_truth) if settings.ground_truth else {}
    names = output_names(items)
    address = resolve_scheduler(settings.scheduler)
    if settings.output_prefix:
        check_prefix_bucket(settings.output_prefix)
    if not remote:  # the run directory (maybe through a link) never holds or lies in an input
        check_output(Path(settings.out_dir).resolve(), inputs=[it.origin for it in items],
                     overwrite=None)
    with RunDir(settings.out_dir) as rd:
        handler = JsonLinesHandler(rd.log_path)
        logging.getLogger("pipeline").addHandler(handler)
        try:
            rd.save_config({"config": config_to_dict(settings.config),
                            "given": settings.config_data, "run": _run_fields(settings)})
            states = _plan_all(items, names, settings, rd, pairs)
            busy = any(s.error is None and not s.skipped for s in states)
            with open_scheduler(address if busy else "synchronous", workers=settings.workers,
                                torch_threads=settings.torch_threads,
                                gpu=settings.device.startswith("cuda"), quiet=quiet) as sched:
                _run_graph(states, rd, settings, sched, observer)
            done = [(s.spec, s.skipped) for s in states if s.skipped or s.state == "finalized"]
            collection = write_run_stac(rd.outputs, done, run_name=rd.root.name) \
                if settings.stac_items else None  # Items of earlier outputs, the Collection
            if settings.output_prefix:  # earlier outputs not uploaded yet, the Collection
                upload_run(settings.output_prefix, done, collection)
            entries = [s.final_entry(rd) for s in states]
            counts = _counts(states)
            summary = RunSummary(rd.root, entries, counts, time.perf_counter() - t0, address)
            summary.report = write_run_report(rd, entries, {
                "counts": counts, "seconds": summary.seconds, "scheduler": address,
                "run": _run_fields(settings)})
            rd.event("run finished", **counts, seconds=summary.seconds)
        finally:
            observer.close()
            logging.getLogger("pipeline").removeHandler(handler)
            handler.close()
    return summary


def _check_remote_settings(settings: RunSettings) -> None:
    """What a run folder on object storage does not do yet, refused before any work."""
    out = display_url(settings.out_dir)
    for given, what in ((settings.through_plane is not None, "through-plane SR"),
                        (settings.output_prefix, "--output-prefix (outputs are under "
                         f"{out}/outputs/ already)"),
                        (settings.stac_items, "--stac-item")):
        if given:
            raise UsageError(f"--out {out}: {what} is not supported with a run folder on "
                             "object storage yet; use a local --out")


def _run_fields(settings: RunSettings) -> dict[str, Any]:
    return {"scale": settings.scale, "tile": settings.tile, "halo": settings.halo,
            "bands": None if settings.bands is None else list(settings.bands),
            "device": settings.device, "scheduler": settings.scheduler,
            "workers": settings.workers, "format": settings.out_format,
            "kernel": settings.fingerprint()["kernel"],
            **({} if settings.through_plane is None else
               {"through_plane": settings.fingerprint()["through_plane"]})}


def _plan_all(items: list[InputItem], names: dict[Path, str], settings: RunSettings,
              rd: RunDir, pairs: dict[Path, Path]) -> list[ImageState]:
    states: list[ImageState] = []
    last, owners = rd.last_states(), rd.output_owners()
    rd.make_dir(rd.outputs)
    for item in items:
        name = names[item.path]
        if not item.ok:
            state = ImageState.failed_input(item, name, settings.fingerprint())
        else:
            try:
                state = plan_volume_state(item, name, settings, rd, last, owners) \
                    if settings.through_plane is not None else \
                    _plan(item, name, settings, rd, pairs.get(item.path), last, owners)
            except (UsageError, ConfigError, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - a bad input fails its image only
                state = ImageState.failed_input(item, name, settings.fingerprint(), exc)
        if state.error is not None:
            rd.record(state.key, "failed", input=item.location, stage="plan",
                      error_class=state.error_class, error=state.error)
            rd.event("image failed", image=state.key, error_class=state.error_class,
                     error=state.error)
        elif state.skipped:
            rd.event("image skipped (finished earlier)", image=state.key)
        states.append(state)
    return states


def _run_graph(states: list[ImageState], rd: RunDir, settings: RunSettings,
               sched: SchedulerInfo, observer: Any) -> None:
    active = [s for s in states if s.error is None and not s.skipped]
    by_key = {s.key: s for s in active}
    nodes = []
    last_by_bands: dict[int, str] = {}  # warm start: previous image with as many bands
    for state in active:
        if isinstance(state, VolumeState):  # one node: the volume read, SR'd and written
            nodes += state.nodes(gpu=settings.device.startswith("cuda"))
            rd.record(state.key, "queued", input=state.item.location,
                      output=str(state.spec.job.output), run=state.run_id)
            continue
        size = _batch_size(settings, sched, state.pending_units())
        bands = len(state.spec.plans[0].bands)
        warm_from = (last_by_bands.get(bands) if state.spec.job.config.warm_start
                     else None)
        image_nodes = build_nodes(state, batch_size=size,
                                  gpu=settings.device.startswith("cuda"), warm_from=warm_from)
        nodes += image_nodes
        last_by_bands[bands] = next(n.key for n in image_nodes
                                    if n.kind == "train" and n.step == 0)
        rd.record(state.key, "queued", input=state.item.location, output=str(
            state.spec.job.output), scale=settings.scale, settings=settings.fingerprint_id(),
            run=state.run_id)
    observer.start(names={s.key: s.name for s in states}, total=len(states),
                   skipped=sum(s.skipped for s in states),
                   failed=sum(s.error is not None for s in states), dashboard=sched.dashboard)
    if sched.dashboard:
        log.info("Dask dashboard: %s", sched.dashboard)
        rd.event("dashboard", url=sched.dashboard)

    def on_event(msg: dict) -> None:
        observer.train_event(msg["key"], msg)

    if sched.client is not None:
        sched.client.subscribe_topic(TRAIN_TOPIC, lambda event: on_event(event[1]))
    LOCAL_SINKS[TRAIN_TOPIC] = on_event
    threads = torch.get_num_threads()  # in-process tasks may set --torch-threads: restore it
    try:
        execute(nodes, sched, retries=settings.retries,
                on_done=lambda node, result: by_key[node.image].on_done(node, result, rd,
                                                                        observer),
                on_error=lambda node, exc: by_key[node.image].on_error(node, exc, rd, observer))
    finally:
        torch.set_num_threads(threads)
        LOCAL_SINKS.pop(TRAIN_TOPIC, None)
        if sched.client is not None:
            sched.client.unsubscribe_topic(TRAIN_TOPIC)


def _counts(states: list[ImageState]) -> dict[str, int]:
    c = {"images": len(states), "finalized": 0, "failed": 0, "images_skipped": 0,
         "tiles_total": 0, "tiles_skipped": 0, "tiles_inferred": 0, "steps_trained": 0,
         "steps_resumed": 0}
    for s in states:
        c["failed"] += s.state == "failed"
        c["finalized"] += s.state == "finalized"
        c["images_skipped"] += s.skipped
        c["tiles_total"] += s.tiles_total
        c["tiles_skipped"] += s.tiles_skipped
        c["tiles_inferred"] += s.tiles_inferred
        c["steps_trained"] += s.steps_trained
        c["steps_resumed"] += s.steps_resumed
    return c

