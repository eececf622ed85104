"""``zssr upscale``: super-resolve one image (plain, GeoTIFF, DICOM, Zarr).

The output format follows OUTPUT's suffix: ``.tif`` (Cloud-Optimized GeoTIFF
when the input is georeferenced), ``.zarr``, ``.dcm`` (or a folder for a DICOM
series), ``.png``/``.tiff``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from geometry import ScaleError, as_scale
from io_adapters.base import check_output_path
from io_adapters.objstore import is_remote, staged_output
from io_adapters.output_safety import (
    UnsafeOutputError,
    absolute,
    check_output,
    conflict,
    write_text_atomic,
)
from pipeline.cli.cloud import add_cloud_args, check_item, record, stac_source, write_item
from pipeline.cli.options import add_config_args, add_image_args, add_transfer_syntax_arg
from pipeline.cli.progress import ImageProgress
from pipeline.cli.through_plane import add_through_plane_args, through_plane_options
from pipeline.errors import UsageError
from pipeline.image.job import ImageJob, dicom_writer_options
from pipeline.image.kernel_estimate import describe_choice
from pipeline.image.kernel_io import kernel_options
from pipeline.image.upscale import upscale_file
from pipeline.image.volume import VolumeJob, upscale_through_plane
from pipeline.runs.config import (
    DEFAULT_TILE,
    PipelineConfig,
    ResolvedConfig,
    resolved_from_args,
)
from pipeline.runs.inputs import input_location, output_location

log = logging.getLogger(__name__)


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """``"1,2,3"`` (1-based, like GDAL) -> ``(0, 1, 2)``."""
    if not text:
        return None
    try:
        bands = tuple(int(b) - 1 for b in text.split(","))
    except ValueError:
        raise UsageError(f"--bands {text!r}: expected 1-based band numbers like 1,2,3") from None
    if any(b < 0 for b in bands):
        raise UsageError(f"--bands {text!r}: band numbers start at 1")
    return bands


def parse_halo(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        halo = int(text)
    except ValueError:
        raise UsageError(f"--halo {text!r}: expected 'auto' or a number of LR pixels") from None
    if halo < 0:
        raise UsageError(f"--halo {halo}: must be >= 0")
    return halo


def scale_option(value: float) -> float:
    """``--scale``: a number > 1 (and <= 64) that :func:`geometry.as_scale` reads exactly,
    checked before any work (in ``zssr run``: one usage error, not one per input)."""
    if not value > 1.0 or value != value or value > 64:
        raise UsageError(f"--scale {value}: expected a number > 1 (and <= 64)")
    try:
        as_scale(value, name="--scale")
    except ScaleError as exc:
        raise UsageError(str(exc)) from None
    return float(value)


def parse_device(text: str) -> str:
    """Check ``--device`` before any work: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {text!r}: expected cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index or 0) >= count:
            raise UsageError(f"--device {text!r}: this machine has {count} CUDA device(s) "
                             "usable by torch; use --device cpu or another index")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {text!r}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {text!r}: expected cpu, cuda, cuda:N or mps")
    return text


def add_parser(sub, parents) -> None:
    p = sub.add_parser("upscale", parents=parents, help="super-resolve one image",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=input_location,
                   help="image file (or a folder of DICOM slices), or a GeoTIFF/COG URL "
                   "(s3://, gs://, az://, https://, /vsi... names), read by windows")
    p.add_argument("output", type=output_location,
                   help="output path (or s3://bucket/key: built locally, then uploaded); "
                   "its suffix picks the format")
    add_image_args(p, scale_required=False)
    add_through_plane_args(p)
    add_transfer_syntax_arg(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output that zssr wrote (a file or store of the "
                   "output's format; never a folder holding anything else, never an input)")
    p.add_argument("--history", type=Path, default=None,
                   help="write the training history (loss, learning rate) as JSON here "
                   "(replaces only an earlier JSON file; never an input or the output)")
    add_cloud_args(p)
    add_config_args(p)
    p.set_defaults(func=run)


def pipeline_options(args: argparse.Namespace, pc: PipelineConfig) -> dict:
    """Tile, bands and kernel: command-line flags win over the config's pipeline sections."""
    tile = args.tile if args.tile is not None else (pc.tile or DEFAULT_TILE)
    if tile < 8 or tile > 8192:
        raise UsageError(f"--tile {tile}: expected 8 <= tile <= 8192 LR pixels")
    bands = parse_bands(args.bands) if args.bands else pc.band_indexes
    return {"tile": tile, "bands": bands, "chain": pc.chain or None,
            "kernel_groups": pc.kernel_group_indexes,
            **kernel_options(args.kernel, args.kernel_sigma, pc)}


def dicom_options(args: argparse.Namespace) -> dict:
    """Writer options of a DICOM output: ``--deidentify`` and ``--transfer-syntax``."""
    if args.transfer_syntax != "explicit-little" and \
            Path(args.output).suffix.lower() not in (".dcm", ""):
        raise UsageError(f"--transfer-syntax {args.transfer_syntax}: {args.output} is not "
                         "a DICOM output (.dcm or a folder); drop the flag")
    return dicom_writer_options(args.output, args.deidentify, args.transfer_syntax)


def check_paths(args: argparse.Namespace) -> None:
    """The output rule (:mod:`io_adapters.output_safety`) for OUTPUT and ``--history``,
    before any work: never the input or a folder around or inside it, never through a
    link, an existing file replaced only when zssr wrote it."""
    check_output(args.output, inputs=(args.input,), overwrite=args.overwrite)
    if args.history is not None:
        check_history(args)
    check_item(args)  # --stac-item: the Item beside the output


def check_history(args: argparse.Namespace) -> None:
    check_output_path(args.history, inputs=(args.input,), overwrite=True)
    if conflict(absolute(args.history), inputs=(args.output,)) is not None:
        raise UnsafeOutputError(f"{args.history}: --history is (or holds, or lies inside) the "
                                f"output {args.output}; choose another file")


def run(args: argparse.Namespace) -> int:
    with stac_source(args) as args.stac_input:  # a STAC Item's --assets, stacked in a VRT
        if is_remote(args.output):  # checked before any work; uploaded only when complete
            with staged_output(args.output, overwrite=args.overwrite) as local:
                args.output = local
                return run_local(args)
        return run_local(args)


def run_local(args: argparse.Namespace) -> int:
    check_paths(args)
    rc = resolved_from_args(args)
    volume = through_plane_options(args, rc, {
        "--kernel": args.kernel, "--kernel-sigma": args.kernel_sigma, "--tile": args.tile,
        "--bands": args.bands, "--history": args.history, "--deidentify": args.deidentify})
    if volume is not None:
        return run_through_plane(args, rc, volume)
    if args.scale is None:
        raise UsageError("--scale is required for in-plane SR (--through-plane takes "
                         "--scale-z or --slice-spacing)")
    job = ImageJob(input=args.input, output=args.output, scale=scale_option(args.scale),
                   config=rc.engine, halo=parse_halo(args.halo),
                   device=parse_device(args.device), overwrite=args.overwrite,
                   writer_options=dicom_options(args),
                   max_pixels=args.max_pixels, **pipeline_options(args, rc.pipeline))
    job = record(job, args)  # provenance tags / attributes in COG, TIFF and Zarr outputs
    progress = ImageProgress(args.input.name, enabled=not args.quiet)
    try:
        result = upscale_file(job, on_event=progress.on_event, on_tile=progress.on_tile,
                              on_stage=progress.on_stage)
    finally:
        progress.close()
    write_item(job, args, args.stac_input, chosen=result.kernel)  # --stac-item / an Item input
    hist = result.history
    if not args.quiet:
        t = result.seconds
        print(f"{result.output}: x{args.scale:g} in {sum(t.values()):.1f}s (train {t['train']:.1f}s,"
              f" {hist.iterations} it; infer {t['infer']:.1f}s, {result.tiles} tiles; "
              f"write {t['write']:.1f}s)")
        if result.kernel is not None:
            print(f"{result.output}: kernel {describe_choice(result.kernel)}")
    if args.history:
        check_history(args)  # again: the folder may have changed during the work
        write_text_atomic(args.history, json.dumps(hist.to_dict(), indent=1))
    return 0


def run_through_plane(args: argparse.Namespace, rc: ResolvedConfig,
                      volume: dict) -> int:
    """``--through-plane``: :func:`pipeline.image.volume.upscale_through_plane`."""
    result = upscale_through_plane(VolumeJob(
        input=args.input, output=args.output, config=rc.engine, device=parse_device(args.device),
        overwrite=args.overwrite, max_pixels=args.max_pixels,
        writer_options=dicom_options(args), **volume))
    if not args.quiet:
        h = result.history
        print(f"{result.output}: {result.slices[0]} -> {result.slices[1]} slices "
              f"(x{result.factor:.4g} through-plane) in {result.seconds:.1f}s (train "
              f"{h.train_seconds:.1f}s, {h.iterations} it; infer {h.infer_seconds:.1f}s)")
    return 0
