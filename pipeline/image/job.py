"""One image, end to end: train on windowed reads, infer tile by tile, write atomically.

The three stages are separate functions so the Dask graph can run them as
tasks (``train_stage`` once per image, ``infer_tiles`` over batches of tiles,
the writer's ``commit`` in a finalize task) and :func:`pipeline.image.upscale.upscale_file`
runs them in-process for ``zssr upscale``.

Data flow: reader -> :class:`~pipeline.source.ReaderCropSource` (working
units) -> engine (train; ``predict`` on each halo'd tile) -> crop the HR core
-> inverse normalisation -> writer (nodata re-applied from the upsampled mask).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window as RioWindow

from geometry import Scale, ScaleLike, Tile, TileGrid, as_scale
from io_adapters.base import Metadata, Reader, Writer
from io_adapters.detect import DEFAULT_MAX_PIXELS, open_reader, open_writer, scale_metadata
from io_adapters.errors import InvalidDataError
from pipeline.image.budget import check_budget
from pipeline.image.halo import resolve_halo
from pipeline.image.kernel_estimate import is_estimate
from pipeline.source import ReaderCropSource, SampleStats, sample_stats, sr_bands
from pipeline.steps.chain import BoundChain, ChainReader, ChainSpec, ChainWriter
from zssr.config import ZSSRConfig
from zssr.inference import predict
from zssr.kernels import prepare_kernel
from zssr.model import build_model, state_fits
from zssr.normalize import Normalizer
from zssr.resize import imresize
from zssr.train import TrainEvent, TrainingDivergedError, TrainingHistory, train

__all__ = ["ImageJob", "TrainResult", "StepPlan", "plan_step", "with_kernel", "train_stage",
           "infer_tiles",
           "UpscaleResult", "preflight_output", "open_input",
           "open_output", "clip_to_output"]

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ImageJob:
    """Everything needed to super-resolve one input (picklable: travels to Dask workers)."""

    input: Path
    output: Path
    scale: float
    config: ZSSRConfig = field(default_factory=ZSSRConfig)
    kernel: np.ndarray | str | None = None  # raw 2-D kernel (HR px); None: MATLAB bicubic;
    #: "estimate": the image's own (pipeline.image.kernel_estimate), else fallback_kernel
    fallback_kernel: np.ndarray | None = None
    bands: tuple[int, ...] | None = None  # 0-based band selection
    kernel_groups: tuple[tuple[int, ...], ...] | None = None  # 0-based file bands: with
    #: kernel="estimate", one kernel and network per group (pipeline.image.kernel_groups)
    tile: int = 256  # LR tile side
    halo: int | None = None  # None: computed from the config (full dependency radius)
    device: str = "cpu"
    overwrite: bool = False
    writer_options: dict = field(default_factory=dict)
    chain: ChainSpec | None = None  # pre/post steps around SR (pipeline.steps.chain)
    max_pixels: int = DEFAULT_MAX_PIXELS  # declared size limit (--max-pixels; pipeline.image.budget)


@dataclass
class TrainResult:
    state: dict[str, torch.Tensor]  # trained weights (CPU)
    history: TrainingHistory
    stats: SampleStats


@dataclass(frozen=True)
class StepPlan:
    """Geometry and operators of one (gradual) SR step on one reader."""

    scale: Scale  # relative to this step's input
    grid: TileGrid
    kernel: torch.Tensor | None
    bands: list[int]


def open_input(job: ImageJob) -> Reader:
    """The input's reader; with a chain, a :class:`ChainReader` (pre steps applied)."""
    reader = open_reader(job.input, bands=list(job.bands) if job.bands is not None else None,
                         max_pixels=job.max_pixels)  # refused on the header, before a read
    if job.chain:
        try:
            return ChainReader(reader, job.chain)
        except BaseException:
            reader.close()
            raise
    return reader


def open_output(job: ImageJob, hr_meta: Metadata, *, chain: BoundChain | None = None,
                **options) -> Writer:
    """The final writer for ``hr_meta`` (the SR result's metadata, in the units SR works in).

    With a ``chain`` (``ChainReader.chain``) the file gets the chain's output
    metadata and a :class:`ChainWriter` turns every write back into the input's
    units and dtype.
    """
    inputs = (Path(job.input),)
    if chain is None:
        return open_writer(job.output, hr_meta, inputs=inputs, **options)
    writer = open_writer(job.output, chain.output_meta(hr_meta), inputs=inputs, **options)
    return ChainWriter(writer, chain, hr_meta)


def check_size(meta: Metadata, job: ImageJob) -> None:
    """Refuse inputs the engine cannot train on, with the reason."""
    if meta.rows < 2 or meta.cols < 2:
        raise InvalidDataError(f"{job.input}: image is {meta.rows} x {meta.cols} pixels; "
                               "ZSSR needs at least 2 x 2 (it trains on the image's own "
                               "downscaled copy)")
    if not sr_bands(meta):
        raise InvalidDataError(f"{job.input}: no bands to super-resolve")
    check_budget(meta, config=job.config, scale=float(job.scale), tile=job.tile,
                 bands=len(sr_bands(meta)), max_pixels=job.max_pixels, device=job.device)


def preflight_output(job: ImageJob, meta: Metadata, scale: float, *,
                     chain: BoundChain | None = None) -> None:
    """Open the final writer and abort it at once, before any training: a bad output
    path, an existing output or a format that cannot hold the result fails in seconds."""
    open_output(job, scale_metadata(meta, scale), chain=chain, overwrite=job.overwrite,
                **job.writer_options).abort()


def plan_step(meta: Metadata, job: ImageJob, rel_scale: ScaleLike) -> StepPlan:
    """The tile grid and kernel of one step at ``rel_scale``.  The halo is
    :func:`~pipeline.image.halo.resolve_halo`'s: the dependency radius for ``job.halo=None``,
    else the given one, with a warning naming the radius when it is smaller.

    With ``job.kernel="estimate"`` (known only once a task has estimated it) the plan is
    bicubic's; :func:`with_kernel` gives the plan of the kernel then chosen.
    """
    scale = as_scale(rel_scale)
    sy, sx = scale
    tile = max(job.tile, sy.denominator, sx.denominator)
    tile -= tile % math.lcm(sy.denominator, sx.denominator)
    grid = TileGrid(shape=(meta.rows, meta.cols), tile=tile, halo=0, scale=scale)
    raw = None if is_estimate(job.kernel) else job.kernel
    return with_kernel(StepPlan(scale, grid, None, sr_bands(meta)), job, raw)


def with_kernel(plan: StepPlan, job: ImageJob, kernel: np.ndarray | None) -> StepPlan:
    """``plan`` with the raw 2-D ``kernel`` (None: bicubic) and the halo it needs: the
    same tiles (their cores do not depend on the halo), the kernel and halo of
    :func:`plan_step` for that kernel."""
    down = None if kernel is None else prepare_kernel(kernel, plan.scale)
    halo = resolve_halo("auto" if job.halo is None else job.halo, config=job.config,
                        scale=plan.scale, down_kernel=down)
    grid = TileGrid(shape=plan.grid.shape, tile=plan.grid.tile_shape, halo=halo,
                    scale=plan.scale)
    return replace(plan, kernel=down, grid=grid)


def train_stage(job: ImageJob, reader: Reader, plan: StepPlan, *, step: int = 0,
                init_state: dict[str, torch.Tensor] | None = None,
                stats: SampleStats | None = None,
                on_event: Callable[[TrainEvent], None] | None = None,
                warm_state: dict[str, torch.Tensor] | None = None,
                father_sources: Sequence[tuple[ReaderCropSource, float]] = ()) -> TrainResult:
    """Train the network for one step from windowed reads of ``reader``.

    ``warm_state`` (step 0 only): weights of a previous image of the batch; used, with
    the shorter ``train.warm_*`` schedule, when their shapes fit this image's network.
    ``father_sources``: earlier outputs of the official gradual SR, with their scales.
    """
    cfg = job.config
    stats = stats or sample_stats(reader, plan.bands, cfg.norm)
    source = ReaderCropSource(reader, plan.bands, stats, seed=cfg.seed + step)
    reinit = init_state is None or cfg.reinit_each_step
    model = build_model(len(plan.bands), cfg.net, seed=cfg.seed + (step if reinit else 0),
                        device=job.device, state=None if reinit else init_state)
    warm = step == 0 and warm_state is not None and state_fits(model, warm_state)
    if warm:
        model.load_state_dict(warm_state)
    lo, hi = (torch.from_numpy(v) for v in stats.normalizer.clip_range)
    try:
        hist = train(model, source, scale=plan.scale, cfg=cfg.train.warm() if warm else cfg.train,
                     kernel=plan.kernel, clip_range=(lo, hi), seed=cfg.seed + step,
                     on_event=on_event, father_sources=father_sources)
    except TrainingDivergedError as exc:  # name the file, and the warm schedule's own rate
        raise exc.located(where=str(job.input),
                          setting="train.warm_learning_rate" if warm else None) from None
    hist.warm_started = warm
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return TrainResult(state, hist, stats)


def _hr_masks(valid: np.ndarray, scale: tuple[float, float], shape: tuple[int, int]
              ) -> np.ndarray:
    """Per-band validity ``(bands, h, w)`` upsampled: bicubic of the mask, > 0.5."""
    if valid.all():
        return np.ones((valid.shape[0], *shape), bool)
    up = imresize(torch.from_numpy(valid.astype(np.float32)), scale=scale, output_shape=shape)
    return up.numpy() > 0.5


SKIP_INVALID_TILES = True  # tiles whose whole read window is nodata are not inferred


def infer_tile(model: torch.nn.Module, source: ReaderCropSource, plan: StepPlan, tile: Tile,
               *, frame: int, infer_cfg, normalizer: Normalizer, working: bool = False,
               output_normalizer: Normalizer | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The HR core of one tile: ``(array (bands, h, w), valid (bands, h, w))``.

    ``working=True`` keeps working units (float32) for an intermediate gradual step.
    Float inputs: NaN and +-inf pixels are invalid, like nodata (left out of training
    and statistics, filled for inference); where the upsampled mask says invalid the
    output is nodata, or NaN when the file declares none.
    """
    meta = source.reader.meta
    window = tile.read_window
    rs, cs = tile.crop
    # the tile's one read: pixels and per-band masks (a pixel invalid in one band keeps its
    # valid values in the others)
    raw = source.reader.read(window, frame=frame)
    read_masks = source.reader.read_masks(window, frame=frame)
    masks = read_masks & np.isfinite(raw) if meta.dtype.kind == "f" else read_masks
    hr_valid = _hr_masks(masks, plan.scale.floats, tuple(tile.hr_read.shape))[:, rs, cs]
    inverse = output_normalizer or normalizer
    if (SKIP_INVALID_TILES and not working and not masks.any()
            and meta.alpha_band is None and len(plan.bands) == masks.shape[0]):
        # nodata over the whole read window (a scene's collar): every output pixel of the
        # core is nodata whatever the network says, so it is not run (exact)
        fill = meta.nodata if meta.nodata is not None else (
            np.nan if inverse.dtype.kind == "f" else 0)
        return np.full(hr_valid.shape, fill, dtype=inverse.dtype), hr_valid
    work, valid = source.working(raw, read_masks.all(axis=0))
    lo, hi = (torch.from_numpy(v) for v in normalizer.clip_range)
    sr = predict(model, torch.from_numpy(work), scale=plan.scale, infer=infer_cfg,
                 down_kernel=plan.kernel, clip_range=(lo, hi)).cpu().numpy()
    sr = sr[:, rs, cs]
    out = sr if working else inverse.inverse(sr)
    if working:
        hr_valid = hr_valid[plan.bands]
    if meta.dtype.kind == "f" and out.dtype.kind == "f" and meta.nodata is None \
            and out.shape == hr_valid.shape:
        out = np.where(hr_valid, out, np.float32(np.nan)).astype(out.dtype)  # NaN marks them
    alpha = meta.alpha_band
    if alpha is not None and not working:
        a = raw[alpha].astype(np.float32)
        a_up = imresize(torch.from_numpy(a[None]), scale=plan.scale.floats,
                        output_shape=tuple(tile.hr_read.shape))[0].numpy()[rs, cs]
        if meta.dtype.kind in "iu":
            info = np.iinfo(meta.dtype)
            a_up = np.clip(np.rint(a_up), info.min, info.max).astype(meta.dtype)
        else:  # a float alpha (0 transparent): resampled, never below 0
            a_up = np.maximum(a_up, 0).astype(meta.dtype)
        out = np.insert(out, alpha, a_up, axis=0)
    return out, hr_valid


def clip_to_output(tile: Tile, shape: tuple[int, int] | None
                   ) -> tuple[RioWindow, tuple[slice, slice]] | None:
    """``(window, (rows, cols) slices of the core))``: the part of ``tile.hr_core`` inside an
    output of ``shape`` (the last gradual step may round the size up by a pixel); None when
    the core lies outside."""
    core = tile.hr_core
    if shape is None:
        return tile.hr_window, (slice(None), slice(None))
    h, w = min(core.height, shape[0] - core.row), min(core.width, shape[1] - core.col)
    if h <= 0 or w <= 0:
        return None
    return RioWindow(core.col, core.row, w, h), (slice(0, h), slice(0, w))


def write_core(writer, tile: Tile, out: np.ndarray, valid: np.ndarray, *,
               hr_shape: tuple[int, int] | None, frame: int) -> None:
    """Hand a tile's HR core (clipped to the writer's ``hr_shape``) to ``writer``: the
    merger of the tile loop (a file writer, or a Zarr region in a Dask task)."""
    clipped = clip_to_output(tile, hr_shape)
    if clipped is not None:
        window, (rs, cs) = clipped
        writer.write(out[:, rs, cs], window, frame=frame, mask=valid[..., rs, cs])


def infer_tiles(job: ImageJob, reader: Reader, plan: StepPlan, result: TrainResult,
                tiles: Iterable[int], writer, *, frame: int = 0, working: bool = False,
                on_tile: Callable[[Tile], None] | None = None,
                model: torch.nn.Module | None = None,
                hr_shape: tuple[int, int] | None = None,
                output_normalizer: Normalizer | None = None) -> int:
    """Run the tiles ``tiles`` of ``plan.grid`` and hand each HR core to ``writer``.

    ``model``: the network already built from ``result.state`` (a worker's
    cache); by default it is built here.  ``hr_shape``: the writer's size when
    it is smaller than the grid's (the last gradual step); cores are clipped to it.
    ``output_normalizer``: the input's normaliser, for the last of several gradual
    steps (whose own normaliser is the identity on working units).
    """
    cfg = job.config
    if model is None:
        model = build_model(len(plan.bands), cfg.net, seed=cfg.seed, device=job.device,
                            state=result.state)
    source = ReaderCropSource(reader, plan.bands, result.stats, seed=cfg.seed)
    n = 0
    for index in tiles:
        tile = plan.grid.tile(index)
        out, valid = infer_tile(model, source, plan, tile, frame=frame, infer_cfg=cfg.infer,
                                normalizer=result.stats.normalizer, working=working,
                                output_normalizer=output_normalizer)
        write_core(writer, tile, out, valid, hr_shape=hr_shape, frame=frame)
        n += 1
        if on_tile is not None:
            on_tile(tile)
    return n


def dicom_writer_options(output: Path, deidentify: bool,
                         transfer_syntax: str = "explicit-little") -> dict:
    """The DICOM writer's options of a DICOM output (``.dcm`` or a series folder):
    ``{"deidentify": True}`` and a ``transfer_syntax`` other than the default (uncompressed);
    none for another format (``zssr run`` of mixed inputs: its DICOM outputs only)."""
    options: dict = {"deidentify": True} if deidentify else {}
    if transfer_syntax != "explicit-little":
        options["transfer_syntax"] = transfer_syntax
    if options and Path(output).suffix.lower() not in (".dcm", ""):
        if deidentify:
            log.info("--deidentify: %s is not a DICOM output; it holds no patient attributes",
                     output)
        return {}
    return options


def writer_options(path: Path, plan: StepPlan, options: dict) -> dict:
    """Format-specific writer options: Zarr chunks are the grid's HR tiles."""
    opts = dict(options)
    if Path(path).suffix.lower() == ".zarr":
        opts.setdefault("chunks", plan.grid.hr_chunk_shape)
    return opts


@dataclass
class UpscaleResult:
    output: Path
    history: TrainingHistory
    seconds: dict[str, float]
    tiles: int
    meta: Metadata
    kernel: Any = None  # KernelChoice with --kernel estimate (GroupChoices with kernel_groups)


def working_meta(meta: Metadata, plan: StepPlan, path: Path) -> Metadata:
    """Metadata of an intermediate gradual-SR result (float32 working units, no nodata)."""
    scaled = scale_metadata(meta, plan.scale)
    return replace(scaled, path=path, format="zarr", bands=len(plan.bands), dtype=np.dtype(
        "float32"), nodata=None, has_mask=False, band_names=(), extra={},
        alpha_band=None)


def open_working_writer(path: Path, meta: Metadata, plan: StepPlan) -> Writer:
    """A Zarr writer for an intermediate step's result (working units, tile-aligned chunks)."""
    return open_writer(path, working_meta(meta, plan, path), **writer_options(path, plan, {}))


def write_step(job: ImageJob, reader: Reader, plan: StepPlan, result: TrainResult, writer,
               timings: dict[str, float], *, working: bool,
               on_tile: Callable[[Tile], None] | None, hr_shape: tuple[int, int] | None,
               output_normalizer: Normalizer | None = None) -> int:
    """Every tile of every frame into ``writer``, then commit it; adds to ``timings``."""
    t0 = time.perf_counter()
    n = 0
    with writer:
        for f in range(reader.meta.frames):
            n += infer_tiles(job, reader, plan, result, range(len(plan.grid)), writer, frame=f,
                             working=working, on_tile=on_tile, hr_shape=hr_shape,
                             output_normalizer=output_normalizer)
        t1 = time.perf_counter()
        timings["infer"] += t1 - t0
    timings["write"] += time.perf_counter() - t1
    return n


def working_stats(stats: SampleStats) -> SampleStats:
    """Stats for a gradual step's input, already in working units: an identity
    normaliser that keeps the first step's clip range and fill values."""
    lo, hi = stats.normalizer.clip_range
    n = len(stats.normalizer.offset)
    identity = Normalizer(np.dtype("float32"), (0.0,) * n, (1.0,) * n, tuple(map(float, lo)),
                          tuple(map(float, hi)))
    return SampleStats(identity, stats.fill, 1.0)
