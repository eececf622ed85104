"""Finalize one image: Zarr -> the output format, then the image's report material.

The last step's Zarr store holds the output values already cast to the
output dtype with invalid pixels set (as the final writer would); this
copies it tile by tile into the writer of the output's format (COG, DICOM,
PNG, Zarr), which writes under a temporary name and renames on commit.

The report material is computed here, where the pixels are: a centred crop
of the input and the same ground area of the output (PNG files, the input
enlarged nearest-neighbour to the output's zoom), the LR-consistency
(:func:`zssr.metrics.lr_consistency` on a centred window) and PSNR/SSIM
against a ground truth.
"""

from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from geometry import Region, as_scale, output_size
from io_adapters.base import Metadata, Reader
from io_adapters.detect import open_reader, scale_metadata
from io_adapters.errors import WriteError
from io_adapters.objstore import staged_output
from io_adapters.vsi import display_url, is_vsi
from io_adapters.zarr_reader import ZarrReader
from pipeline.image.job import clip_to_output, open_input, open_output, writer_options
from pipeline.image.kernel_estimate import (
    GroupChoices,
    KernelChoice,
    chosen_writer_options,
    describe_choice,
    kernel_picture,
)
from pipeline.image.kernel_groups import group_names
from pipeline.runs.stac_run import write_item
from pipeline.runs.tasks import ImageSpec, TrainOutcome, apply_threads
from pipeline.runs.upload import upload_output
from pipeline.source import declared_range, sr_bands
from pipeline.steps.chain import BoundChain, ChainReader
from zssr.kernels import prepare_kernel
from zssr.metrics import lr_consistency, psnr, ssim

__all__ = ["finalize_task", "finalize_image", "copy_store", "CROP_LR", "CONSISTENCY_LR"]

log = logging.getLogger(__name__)

CROP_LR = 96  # side of the report crop, LR pixels
CONSISTENCY_LR = 256  # side of the LR-consistency window, LR pixels


def needs_mask(meta: Metadata) -> bool:
    """Whether invalid pixels exist for this output (nodata, a mask or an alpha band)."""
    return meta.nodata is not None or meta.has_mask or meta.alpha_band is not None


def copy_store(spec: ImageSpec, store: ZarrReader, out_meta: Metadata, *,
               chain: BoundChain | None = None, claim_as: Path | None = None) -> Path:
    """Copy the last step's store into the final writer and commit it.

    ``out_meta`` is the SR result's metadata (the store's units); with a
    ``chain`` the writer turns the values back into the input's units.  ``claim_as``:
    the output's name in the run folder's claims when the writer writes elsewhere (a
    local copy that is uploaded).
    """
    job, plan = spec.job, spec.plans[spec.last]
    output = Path(job.output)
    remote = is_vsi(output)  # a Zarr store written straight to the bucket
    if not remote and output.exists() and not spec.replace_output:
        raise WriteError(f"{output}: output exists and was not written by this configuration "
                         "of this input; pass --overwrite to replace it, or use another --out")
    if not remote:
        output.parent.mkdir(parents=True, exist_ok=True)
    # Zarr chunks are the grid's HR tiles, as in zssr upscale: each window below is one
    # tile's core, whole chunks only (any --tile, not only the default's 512 px chunks)
    options: dict[str, Any] = writer_options(output, plan, job.writer_options)
    if remote or output.exists():
        options["overwrite"] = spec.replace_output if remote else True
    mask_path = spec.paths.mask_store(spec.key, spec.last)
    masks = ZarrReader(mask_path) if spec.paths.store_exists(mask_path) else None
    with_mask = masks is not None or needs_mask(out_meta)
    spec.paths.claim_output(spec.key, claim_as or output)  # this key owns what commits next
    with open_output(job, out_meta, chain=chain, **options) as writer:
        for frame in range(spec.frames):
            for tile in plan.grid:
                clipped = clip_to_output(tile, spec.out_shape)
                if clipped is None:
                    continue
                win = clipped[0]
                values = store.read(win, frame=frame)
                if not with_mask:
                    writer.write(values, win, frame=frame)
                    continue
                valid = masks.read(win, frame=frame)[0] > 0 if masks is not None \
                    else store.read_masks(win, frame=frame)  # per band
                writer.write(values, win, frame=frame, mask=valid)
    return output


def finalize_task(spec: ImageSpec, *deps: Any) -> dict[str, Any]:
    """The Dask task: write the final output from the last step's store; returns the
    report entry part. ``deps``: the :class:`TrainOutcome` of every step, then the infer
    results (ordering only)."""
    apply_threads(spec)
    outcomes = [d for d in deps if isinstance(d, TrainOutcome)]
    return finalize_image(spec, outcomes)


def finalize_image(spec: ImageSpec, outcomes: list[TrainOutcome]) -> dict[str, Any]:
    """Write the output, then the crops and metrics of the report entry."""
    t0 = time.perf_counter()
    kernel = _chosen_kernel(spec, outcomes)
    if kernel is not None:  # the output's provenance names the kernel(s) chosen
        spec = replace(spec, job=replace(spec.job, writer_options=chosen_writer_options(
            spec.job.writer_options, kernel)))
    reader = open_input(spec.job)
    try:
        meta = reader.meta
        out_meta = scale_metadata(meta, spec.job.scale)
        store = ZarrReader(spec.paths.store(spec.key, spec.last))
        _check_complete(spec)
        chain = reader.chain if isinstance(reader, ChainReader) else None
        if is_vsi(spec.job.output) and Path(spec.job.output).suffix.lower() == ".zarr":
            output = copy_store(spec, store, out_meta, chain=chain)  # chunks to the bucket
        elif is_vsi(spec.job.output):  # a run folder on object storage: built here, uploaded
            output = spec.job.output
            with staged_output(display_url(output), overwrite=spec.replace_output) as local:
                copy_store(replace(spec, job=replace(spec.job, output=local)), store, out_meta,
                           chain=chain, claim_as=output)
        else:
            output = copy_store(spec, store, out_meta, chain=chain)
            write_item(spec, chosen=kernel)  # --stac-item: the output's STAC Item beside it
            upload_output(spec)  # --output-prefix: the output (and its Item) to object storage
        write_seconds = time.perf_counter() - t0
        entry: dict[str, Any] = {"output": display_url(output), "write_seconds": write_seconds,
                                 "shape_in": [meta.frames, meta.bands, meta.rows, meta.cols],
                                 "shape_out": [out_meta.frames, out_meta.bands, out_meta.rows,
                                               out_meta.cols],
                                 "format_in": meta.format}
        entry.update(_report_material(spec, reader, store, kernel))
    finally:
        reader.close()
    return entry


def _chosen_kernel(spec: ImageSpec, outcomes: list[TrainOutcome]
                   ) -> KernelChoice | GroupChoices | None:
    """The kernel chosen by ``--kernel estimate`` (None: none estimated); with
    ``kernel_groups`` each group's, from its train outcome."""
    if spec.groups is None:
        return next((o.kernel for o in outcomes if o.kernel is not None), None)
    by_group = {o.group: o.kernel for o in outcomes}
    return GroupChoices(group_names(spec.job), tuple(by_group[g] for g in range(len(spec.groups))))


def _check_complete(spec: ImageSpec) -> None:
    done = spec.paths.done_tiles(spec.key, spec.last)
    missing = [u for u in spec.units(spec.last) if u not in done]
    if missing:
        raise RuntimeError(f"{spec.job.input}: {len(missing)} tile(s) of the last step have no "
                           f"completion marker (first: frame {missing[0][0]}, tile "
                           f"{missing[0][1]}); run the same command again to redo them")


# ----------------------------------------------------------------------------- report material


def _centred(rows: int, cols: int, size: int, q: int) -> Region:
    """A centred LR window of at most ``size`` px whose offsets and sides are multiples of
    ``q`` (so it maps to whole HR pixels), or the whole image."""
    def axis(n: int) -> tuple[int, int]:
        if n <= size:
            return 0, n
        side = max(q, size - size % q)
        start = (n - side) // 2
        return start - start % q, side
    (r0, h), (c0, w) = axis(rows), axis(cols)
    return Region(r0, c0, h, w)


def _hr_region(region: Region, scale: float, hr_shape: tuple[int, int]) -> Region:
    sy, sx = as_scale(scale)
    r0, c0 = int(region.row * sy), int(region.col * sx)
    r1 = min(hr_shape[0], output_size(region.row_stop, sy))
    c1 = min(hr_shape[1], output_size(region.col_stop, sx))
    return Region(r0, c0, r1 - r0, c1 - c0)


def _nearest(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour enlargement of ``(C, h, w)`` to ``shape`` (same ground area)."""
    h, w = array.shape[-2:]
    ri = np.minimum((np.arange(shape[0]) + 0.5) * h / shape[0], h - 1).astype(int)
    ci = np.minimum((np.arange(shape[1]) + 0.5) * w / shape[1], w - 1).astype(int)
    return array[:, ri][:, :, ci]


def _display_bands(meta: Metadata) -> list[int]:
    bands = sr_bands(meta)
    return bands[:3] if len(bands) >= 3 else bands[:1]


def _to_uint8(arrays: list[np.ndarray], ref: np.ndarray) -> list[np.ndarray]:
    """Stretch every array with the 1-99 % range of ``ref`` (uint8 data kept as is)."""
    if ref.dtype == np.uint8:
        return [a.astype(np.uint8) for a in arrays]
    finite = ref[np.isfinite(ref)] if ref.dtype.kind == "f" else ref
    lo, hi = (np.percentile(finite, (1, 99)) if finite.size else (0.0, 1.0))
    hi = hi if hi > lo else lo + 1.0
    return [np.clip(np.nan_to_num((a.astype(np.float64) - lo) / (hi - lo)) * 255 + 0.5, 0, 255)
            .astype(np.uint8) for a in arrays]


def _save_png(spec: ImageSpec, array: np.ndarray, path: Path) -> None:
    """A report crop at ``DIR/report_assets/<name>`` by the output rule (no link followed;
    an object in a run folder on object storage)."""
    img = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buffer, format="PNG")
    spec.paths.write_file(path, buffer.getvalue())


def _data_range(meta: Metadata, sample: np.ndarray) -> float:
    declared = declared_range(meta)
    if declared is not None:
        return declared[1] - declared[0]
    if meta.dtype.kind in "ui":
        info = np.iinfo(meta.dtype)
        return float(info.max) - float(info.min)
    finite = sample[np.isfinite(sample)]
    return float(finite.max() - finite.min()) if finite.size and finite.max() > finite.min() \
        else 1.0


def _report_material(spec: ImageSpec, reader: Reader, store: ZarrReader,
                     kernel: KernelChoice | GroupChoices | None = None) -> dict[str, Any]:
    meta, scale = reader.meta, spec.job.scale
    frame = meta.frames // 2
    q = math.lcm(*(s.denominator for s in as_scale(scale)))
    hr_shape = (store.meta.rows, store.meta.cols)
    out: dict[str, Any] = {"frame": frame}
    crop = _centred(meta.rows, meta.cols, CROP_LR, q)
    hr = _hr_region(crop, scale, hr_shape)
    bands = _display_bands(meta)
    lr_px = reader.read(crop.to_window(), frame=frame)[bands]
    sr_px = store.read(hr.to_window(), frame=frame)[bands]
    lr_img, sr_img = _to_uint8([_nearest(lr_px, hr.shape), sr_px], lr_px)
    assets = spec.paths.assets
    _save_png(spec, lr_img, assets / f"{spec.key}_lr.png")
    _save_png(spec, sr_img, assets / f"{spec.key}_sr.png")
    out["assets"] = {"lr": f"report_assets/{spec.key}_lr.png",
                     "sr": f"report_assets/{spec.key}_sr.png"}
    out["crop"] = {"lr": [crop.row, crop.col, crop.height, crop.width],
                   "hr": [hr.row, hr.col, hr.height, hr.width], "zoom": float(scale)}
    kernels = _kernel_material(spec, meta, kernel, out)
    try:  # kernel_groups: the mean per-band PSNR over the groups, each with its own kernel
        values = [(len(b), _consistency(spec, reader, store, frame, q, k, b)) for b, k in kernels]
        out["lr_consistency_db"] = values[0][1] if len(values) == 1 else \
            sum(n * v for n, v in values) / sum(n for n, _ in values)
    except (ValueError, ZeroDivisionError) as exc:
        out["lr_consistency_error"] = str(exc)
    if spec.ground_truth is not None:
        try:
            out.update(_ground_truth_scores(spec, store))
        except (ValueError, OSError) as exc:
            out["ground_truth_error"] = f"{type(exc).__name__}: {exc}"
    return out


def _kernel_material(spec: ImageSpec, meta: Metadata,
                     kernel: KernelChoice | GroupChoices | None, out: dict[str, Any]
                     ) -> list[tuple[list[int], np.ndarray | None]]:
    """``--kernel estimate``: the chosen kernel (each group's with ``kernel_groups``) into
    the entry ``out``, with its picture.  Returns ``(bands, raw kernel)`` pairs: the kernel
    SR assumed for those bands."""
    if kernel is None:
        return [(sr_bands(meta), spec.job.kernel)]
    out["kernel"] = {**kernel.summary(), "description": describe_choice(kernel)}
    assets = spec.paths.assets
    if isinstance(kernel, KernelChoice):
        if kernel.kernel is not None:
            _save_png(spec, kernel_picture(kernel.kernel)[None], assets / f"{spec.key}_kernel.png")
            out["assets"]["kernel"] = f"report_assets/{spec.key}_kernel.png"
        return [(sr_bands(meta), kernel.kernel)]
    for i, (part, c) in enumerate(zip(out["kernel"]["groups"], kernel.choices, strict=True)):
        part["description"] = describe_choice(c)
        if c.kernel is not None:  # a picture per group, named in the entry's group
            _save_png(spec, kernel_picture(c.kernel)[None], assets / f"{spec.key}_kernel_g{i}.png")
            part["asset"] = f"report_assets/{spec.key}_kernel_g{i}.png"
    return [(list(g), c.kernel) for g, c in zip(spec.groups, kernel.choices, strict=True)]


def _consistency(spec: ImageSpec, reader: Reader, store: ZarrReader, frame: int,
                 q: int, raw_kernel: np.ndarray | None, bands: list[int]) -> float:
    """LR-consistency (dB) of a centred window of ``bands``, degraded by the kernel SR
    assumed for them."""
    meta, scale = reader.meta, spec.job.scale
    win = _centred(meta.rows, meta.cols, CONSISTENCY_LR, q)
    hr = _hr_region(win, scale, (store.meta.rows, store.meta.cols))
    lr = reader.read(win.to_window(), frame=frame)[bands].astype(np.float64)
    sr = store.read(hr.to_window(), frame=frame)[bands].astype(np.float64)
    kernel = None if raw_kernel is None else prepare_kernel(raw_kernel, scale)
    return lr_consistency(sr, lr, scale=scale, kernel=kernel, data_range=_data_range(meta, lr))


def _ground_truth_scores(spec: ImageSpec, store: ZarrReader) -> dict[str, Any]:
    """PSNR/SSIM of the whole output against its reference (mean over frames)."""
    scale = spec.job.scale
    ref_reader = open_reader(spec.ground_truth)
    try:
        ref_meta = ref_reader.meta
        if ref_meta.frames != store.meta.frames:
            raise ValueError(f"{spec.ground_truth}: {ref_meta.frames} frame(s), but the output "
                             f"has {store.meta.frames}")
        bands = sr_bands(ref_meta)
        rows, cols = store.meta.rows, store.meta.cols
        slack = math.ceil(scale)
        if not (rows <= ref_meta.rows < rows + slack and cols <= ref_meta.cols < cols + slack):
            raise ValueError(f"{spec.ground_truth}: {ref_meta.rows} x {ref_meta.cols} does not "
                             f"match the {rows} x {cols} output (up to {slack - 1} extra "
                             "rows/cols are cropped)")
        scores_p, scores_s = [], []
        for f in range(store.meta.frames):
            ref = ref_reader.read(frame=f)[bands][:, :rows, :cols].astype(np.float64)
            sr = store.read(frame=f)[sr_bands(store.meta)].astype(np.float64)
            dr = _data_range(ref_meta, ref)
            scores_p.append(psnr(sr, ref, scale=scale, data_range=dr))
            scores_s.append(ssim(sr, ref, scale=scale, data_range=dr))
    finally:
        ref_reader.close()
    return {"ground_truth": str(spec.ground_truth), "psnr": float(np.mean(scores_p)),
            "ssim": float(np.mean(scores_s))}
