"""Shared ``--preset/--config/--set/--seed`` options and their resolution."""

from __future__ import annotations

import argparse
from pathlib import Path

from configs import resolve_config
from zssr.config import ZSSRConfig


def add_config_args(p: argparse.ArgumentParser, *, default_preset: str | None = None) -> None:
    p.add_argument("--preset", default=default_preset,
                   help="named preset from configs/ (paper, fast, ...)")
    p.add_argument("--config", type=Path, default=None, help="YAML config file (over the preset)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.max_iters=500 (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same output)")


def config_from_args(args: argparse.Namespace) -> tuple[ZSSRConfig, dict]:
    overrides = list(args.set)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    return resolve_config(preset=args.preset, config_file=args.config, overrides=overrides)
