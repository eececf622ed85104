"""Shared ``--preset/--config/--set/--seed`` options and their resolution."""

from __future__ import annotations

import argparse
from pathlib import Path

from zssr.config import ZSSRConfig

from .run_config import resolve_run_config


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
