"""The options ``zssr upscale`` and ``zssr run`` share, defined once.

:func:`add_image_args`: what one image is and how it is super-resolved (scale, kernel,
tiles, bands, device, de-identification, user steps, size limit);
:func:`add_transfer_syntax_arg`: the encoding of DICOM outputs;
:func:`add_config_args`: ``--preset/--config/--set/--seed`` and their resolution.
Each subcommand adds only its own options beside these.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from io_adapters.detect import DEFAULT_MAX_PIXELS
from io_adapters.dicom import TRANSFER_SYNTAXES
from pipeline.image.budget import parse_max_pixels
from pipeline.runs.config import resolve_run_config
from zssr.config import ZSSRConfig


def add_image_args(p: argparse.ArgumentParser, *, device_help: str = "cpu, cuda or cuda:N",
                   scale_required: bool = True) -> None:
    """``--scale --kernel --kernel-sigma --tile --halo --bands --device --deidentify
    --allow-user-steps --max-pixels``.  ``scale_required=False``: the subcommand checks
    ``--scale`` itself (``zssr upscale --through-plane`` takes ``--scale-z`` instead)."""
    p.add_argument("--scale", type=float, required=scale_required, default=None,
                   help="scale factor, e.g. 2 or 1.5")
    p.add_argument("--kernel", default=None, metavar="FILE|estimate",
                   help="degradation kernel: .npy or MATLAB .mat with variable 'Kernel', or "
                   "'estimate': each image's own, estimated from the image (x2/x4; falls back "
                   "to --kernel-sigma's Gaussian, else bicubic, when the estimate is unusable)")
    p.add_argument("--kernel-sigma", type=float, default=None,
                   help="Gaussian PSF of this sigma (HR pixels) as the degradation kernel")
    p.add_argument("--tile", type=int, default=None,
                   help="LR tile side in pixels (default: the preset's, else 256)")
    p.add_argument("--halo", default="auto", help="halo in LR pixels, or 'auto' (default)")
    p.add_argument("--bands", default=None, help="1-based bands to use, e.g. 1,2,3")
    p.add_argument("--device", default="cpu", help=device_help)
    p.add_argument("--deidentify", action="store_true",
                   help="DICOM outputs: PS3.15 Basic Profile attribute actions at every nesting "
                   "level, private tags removed (limits: see io_adapters/deidentify.py)")
    p.add_argument("--allow-user-steps", action="store_true",
                   help="let the config name chain steps as package.module:function (imported "
                   "and called); also ZSSR_ALLOW_USER_STEPS=1")
    p.add_argument("--max-pixels", type=parse_max_pixels, default=DEFAULT_MAX_PIXELS,
                   help="refuse inputs declaring more pixels (rows x cols x frames) than this "
                   f"(default {DEFAULT_MAX_PIXELS:.0e}); checked on the header, before reading")


def add_transfer_syntax_arg(p: argparse.ArgumentParser) -> None:
    """``--transfer-syntax`` of DICOM outputs (``zssr upscale`` and ``zssr run``)."""
    p.add_argument("--transfer-syntax", choices=tuple(TRANSFER_SYNTAXES),
                   default="explicit-little",
                   help="DICOM outputs: explicit-little (uncompressed, default), rle (RLE "
                   "Lossless) or jpeg2000-lossless (needs pylibjpeg-openjpeg); all lossless")


def add_config_args(p: argparse.ArgumentParser, *, default_preset: str | None = None) -> None:
    p.add_argument("--preset", default=default_preset,
                   help="named preset from configs/ (paper, fast, ...)")
    p.add_argument("--config", type=Path, default=None, help="YAML config file (over the preset)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.max_iters=500 (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same output)")


def config_from_args(args: argparse.Namespace) -> tuple[ZSSRConfig, dict]:
    """The engine config and the merged data of ``--preset/--config/--set/--seed``.

    Resolved like every command's config, pipeline sections included, so a config file
    is held to the same rules everywhere: a chain step named ``package.module:function``
    is refused without the invocation's opt-in even where the chain is not run (``zssr
    eval`` scores the engine alone).
    """
    overrides = list(args.set)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    rc = resolve_run_config(preset=args.preset, config_file=args.config, overrides=overrides)
    return rc.engine, rc.data
