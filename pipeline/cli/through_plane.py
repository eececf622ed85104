"""``--through-plane`` and its options, shared by ``zssr upscale`` and ``zssr run``.

Through-plane SR is asked for by ``--through-plane`` or by a config ``through_plane:``
section (presets ``ct-thin``, ``mr-thin``: the flag is then implied).  The flags
``--scale-z``/``--slice-spacing``/``--slice-profile`` win over the section's keys; the
factor is exactly one of ``scale_z`` and ``slice_spacing``: the rule a batch job's keys
follow too (:func:`pipeline.runs.config.through_plane_settings`, with the flags' names).
Options of in-plane SR that through-plane does not use, and a config chain, are refused
in one line, never ignored.
"""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.errors import UsageError
from pipeline.runs.config import OverrideNames, ResolvedConfig, through_plane_settings

__all__ = ["add_through_plane_args", "through_plane_options", "FLAGS"]

#: the section's overrides as flags (their errors are usage errors)
FLAGS = OverrideNames(
    UsageError, ("--scale-z", "--slice-spacing", "--slice-profile"),
    unasked="--scale-z, --slice-spacing and --slice-profile go with --through-plane (or a "
    "preset such as ct-thin)",
    one_of="--through-plane takes one of --scale-z F and --slice-spacing MM (not --scale)")


def add_through_plane_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--through-plane", action="store_true",
                   help="a thick-slice volume (NIfTI, DICOM series or multi-frame) made thin: "
                   "SR along the slice axis (SMORE-style) with --scale-z or --slice-spacing "
                   "(implied by a preset with a through_plane section: ct-thin, mr-thin)")
    p.add_argument("--scale-z", type=float, default=None, metavar="F",
                   help="--through-plane: slices F times closer (e.g. 4 or 2.5)")
    p.add_argument("--slice-spacing", type=float, default=None, metavar="MM",
                   help="--through-plane: the new slice spacing in mm")
    p.add_argument("--slice-profile", type=float, default=None, metavar="R",
                   help="--through-plane: slice profile FWHM / slice spacing (default: the "
                   "file's slice thickness / spacing, 1 when unknown)")


def through_plane_options(args: argparse.Namespace, rc: ResolvedConfig,
                          unused: dict[str, Any]) -> dict[str, Any] | None:
    """``None`` for in-plane SR; else the :class:`pipeline.image.volume.VolumeJob` fields
    ``scale_z``, ``slice_spacing``, ``profile`` and ``slab``.  ``unused``: the subcommand's
    in-plane flags and their values (a set one is refused)."""
    tp = through_plane_settings(rc.pipeline.through_plane, asked=args.through_plane,
                                scale_z=args.scale_z, slice_spacing=args.slice_spacing,
                                slice_profile=args.slice_profile, names=FLAGS)
    if tp is None:
        return None
    if args.scale is not None:  # the in-plane factor: refused as a second factor
        raise UsageError(FLAGS.one_of.format(both=""))
    flags = [flag for flag, value in unused.items() if value]
    if rc.pipeline.chain.pre or rc.pipeline.chain.post:
        flags.append("config 'chain'")
    # the slice profile is the through-plane kernel: an in-plane kernel (estimated, per
    # band group) has no meaning there
    flags += [f"config '{key}'" for key in ("kernel", "kernel_groups")
              if getattr(rc.pipeline, key) is not None]
    if flags:  # refused, never silently ignored
        raise UsageError(f"{' '.join(flags)}: not used by --through-plane yet; drop it")
    return {"scale_z": tp.scale_z, "slice_spacing": tp.slice_spacing,
            "profile": tp.slice_profile, "slab": tp.slab}
