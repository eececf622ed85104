"""``zssr run``: a batch of images through one Dask graph, resumable, with a report.

INPUT may be files, folders (a folder of DICOM slices is one series) or glob
patterns.  With --through-plane (or a preset such as ct-thin) and --scale-z F or
--slice-spacing MM each input is a volume made thin along its slice axis, one task each:
``outputs/<name>_z<F>`` (or ``_<MM>mm``) in the input's own format (NIfTI as the input, a
DICOM series as a new derived series folder) or --format zarr.  Everything goes to the run directory ``--out DIR``: the outputs
(``outputs/<name>_x<scale>`` in the input's own format: GeoTIFF -> COG .tif,
DICOM -> .dcm or a folder for a series, PNG -> .png, Zarr -> .zarr), the
manifest, trained weights, tile markers, logs and ``report.html``.

Running the same command again resumes: finished images and tiles are
skipped.  A changed config or scale makes new image keys, never mixing with
earlier results; replacing an existing output of another config needs
--overwrite.

Schedulers: ``local`` (default; a LocalCluster of --workers processes),
``synchronous`` (in this process), or the address of a running Dask
scheduler (``tcp://host:8786``; default from DASK_SCHEDULER_ADDRESS).  With
--device cuda, train and infer tasks ask for the Dask resource GPU=1: start
one worker per GPU with ``CUDA_VISIBLE_DEVICES=i dask worker ADDRESS
--nthreads 1 --resources GPU=1``.

Exit code 1 when any image failed (the others complete; an image whose training
diverges is one of them); see the report.  SIGTERM and SIGHUP stop the run like
Ctrl-C (exit 143 / 129); the next run resumes and removes what a killed one left.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from io_adapters.vsi import display_url
from pipeline.catalog.stac_input import parse_assets
from pipeline.cli.cmd_upscale import parse_device, parse_halo, pipeline_options, scale_option
from pipeline.cli.options import add_config_args, add_image_args, add_transfer_syntax_arg
from pipeline.cli.through_plane import add_through_plane_args, through_plane_options
from pipeline.errors import UsageError, one_line
from pipeline.runs.config import ThroughPlaneConfig, resolved_from_args
from pipeline.runs.graph import resolve_scheduler
from pipeline.runs.progress import TqdmRunProgress
from pipeline.runs.run import FORMAT_SUFFIXES, RunSummary, run_batch
from pipeline.runs.rundir import run_root
from pipeline.runs.settings import RunSettings
from pipeline.runs.upload import check_prefix

log = logging.getLogger(__name__)


def add_parser(sub, parents) -> None:
    p = sub.add_parser("run", parents=parents, help="super-resolve a batch of images (Dask)",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders or glob patterns")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="run directory: a local folder, or s3://bucket/prefix (the whole run "
                        "folder on object storage: workers need no shared disk)")
    add_image_args(p, device_help="cpu or cuda (train and infer tasks then ask Dask for GPU=1)",
                   scale_required=False)
    add_through_plane_args(p)
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="local (default), synchronous, or a scheduler address tcp://host:port")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes of the local cluster (default: one per core, <= 8)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch threads per worker (default: cores / workers for a local "
                   "cluster; unchanged on an existing cluster)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="skip images and tiles finished by an earlier run (default: on)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace outputs written by another config or run")
    p.add_argument("--ground-truth", type=Path, default=None, metavar="DIR",
                   help="reference images, one per input with the same name: PSNR/SSIM")
    p.add_argument("--format", choices=sorted(FORMAT_SUFFIXES), default=None,
                   help="output format (default: the input's own)")
    add_transfer_syntax_arg(p)
    p.add_argument("--batch-tiles", type=int, default=None,
                   help="tiles per inference task (default: automatic)")
    p.add_argument("--warm-start", action="store_true",
                   help="start each image from the weights of the previous image with as many "
                        "bands, with the shorter train.warm_* schedule (same as --set "
                        "warm_start=true)")
    p.add_argument("--stac-item", action="store_true",
                   help="write a STAC Item <output>.stac-item.json beside each output and "
                   "outputs/collection.json, a STAC Collection linking them")
    p.add_argument("--assets", default=None, metavar="NAMES",
                   help="STAC Item INPUTs: stack these assets or eo:bands common names, in "
                   "this order (as zssr upscale --assets)")
    p.add_argument("--output-prefix", default=None, metavar="S3_URL",
                   help="also upload each output (and its STAC Item) to this s3://bucket/"
                   "prefix/, each object appearing only when complete; --out stays local")
    p.add_argument("--retries", type=int, default=2,
                   help="retries of a task after a transient failure (default 2)")
    add_config_args(p)
    p.set_defaults(func=run)


def _positive(value: int | None, flag: str) -> int | None:
    if value is not None and value < 1:
        raise UsageError(f"{flag} {value}: expected a number >= 1")
    return value


def _transfer_syntax(args: argparse.Namespace) -> str:
    """``--transfer-syntax``: for the run's DICOM outputs (others are left as they are);
    refused with a ``--format`` that writes none."""
    if args.transfer_syntax != "explicit-little" and args.format not in (None, "dcm", "dicom"):
        raise UsageError(f"--transfer-syntax {args.transfer_syntax}: --format {args.format} "
                         "writes no DICOM; drop one of them")
    return args.transfer_syntax


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """The run's settings: flags over the config's pipeline sections over the defaults."""
    rc = resolved_from_args(args)
    if args.retries < 0:
        raise UsageError(f"--retries {args.retries}: expected a number >= 0")
    if resolve_scheduler(args.scheduler) in ("synchronous", "local"):
        parse_device(args.device)  # tasks run on this machine: the device must exist here
    volume = through_plane_options(args, rc, {
        "--kernel": args.kernel, "--kernel-sigma": args.kernel_sigma, "--tile": args.tile,
        "--bands": args.bands, "--halo": args.halo != "auto", "--deidentify": args.deidentify,
        "--ground-truth": args.ground_truth, "--batch-tiles": args.batch_tiles,
        "--warm-start": args.warm_start, "--stac-item": args.stac_item,
        "--output-prefix": args.output_prefix,
        "--format": args.format not in (None, "zarr")})
    if volume is not None:  # each input a volume, one task each (pipeline.runs.volumes)
        return RunSettings(
            out_dir=run_root(args.out), scale=1.0, config=rc.engine, config_data=rc.data,
            device=args.device, scheduler=args.scheduler,
            workers=_positive(args.workers, "--workers"),
            torch_threads=_positive(args.torch_threads, "--torch-threads"),
            resume=args.resume, overwrite=args.overwrite, out_format=args.format,
            retries=args.retries, max_pixels=args.max_pixels,
            transfer_syntax=_transfer_syntax(args),
            through_plane=ThroughPlaneConfig(volume["scale_z"], volume["slice_spacing"],
                                             volume["profile"], volume["slab"]))
    if args.scale is None:
        raise UsageError("--scale is required for in-plane SR (--through-plane takes "
                         "--scale-z or --slice-spacing)")
    return RunSettings(
        out_dir=run_root(args.out), scale=scale_option(args.scale), config=rc.engine, config_data=rc.data,
        halo=parse_halo(args.halo), device=args.device, scheduler=args.scheduler,
        workers=_positive(args.workers, "--workers"),
        torch_threads=_positive(args.torch_threads, "--torch-threads"), resume=args.resume,
        overwrite=args.overwrite, ground_truth=args.ground_truth, out_format=args.format,
        batch_tiles=_positive(args.batch_tiles, "--batch-tiles"), retries=args.retries,
        deidentify=args.deidentify, max_pixels=args.max_pixels, stac_items=args.stac_item,
        assets=None if args.assets is None else tuple(parse_assets(args.assets)),
        transfer_syntax=_transfer_syntax(args),
        output_prefix=None if args.output_prefix is None else check_prefix(args.output_prefix),
        **pipeline_options(args, rc.pipeline))


def print_summary(summary: RunSummary) -> None:
    c = summary.counts
    print(f"{display_url(summary.run_dir)}: {c['finalized'] + c['images_skipped']}/{c['images']} images "
          f"done ({c['images_skipped']} by an earlier run), {c['failed']} failed; tiles "
          f"{c['tiles_inferred']} inferred, {c['tiles_skipped']} skipped; {summary.seconds:.1f}s "
          f"({summary.scheduler})")
    for e in summary.failed:
        print(f"  FAILED {one_line(str(e.get('input')))}: {e.get('error_class')}: "
              f"{one_line(str(e.get('error') or ''))}")
    if summary.report:
        print(f"  report: {summary.report}")


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    progress = TqdmRunProgress(enabled=not args.quiet)
    summary = run_batch(args.inputs, settings, observer=progress, quiet=args.quiet)
    if not args.quiet:
        print_summary(summary)
    return summary.exit_code
