"""``zssr eval``: score bicubic or ZSSR on an HR benchmark folder (PSNR-Y, SSIM-Y)."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

from io_adapters.output_safety import check_output, write_text_atomic
from pipeline.cli.options import add_config_args, config_from_args
from pipeline.errors import UsageError
from pipeline.image.evaluate import EvalRow, evaluate, summarize


def add_parser(sub, parents) -> None:
    p = sub.add_parser("eval", parents=parents, help="benchmark PSNR-Y/SSIM-Y on an HR folder",
                       description=__doc__)
    p.add_argument("--hr", type=Path, required=True, help="folder of HR images (8-bit)")
    p.add_argument("--scale", type=float, required=True, help="integer scale factor (2, 3, 4)")
    p.add_argument("--method", choices=["bicubic", "zssr"], default="zssr")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--json", type=Path, default=None,
                   help="write the results as JSON here (outside --hr; replaces only an "
                   "earlier JSON file)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="only images with index %% N == I (run N processes side by side)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    add_config_args(p)
    p.set_defaults(func=run)


def _print_row(row: EvalRow) -> None:
    print(f"{row.image:<14} {row.psnr_y:8.3f} {row.ssim_y:8.4f} {row.seconds:9.1f} "
          f"{row.iterations:6d}", flush=True)


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    i, sep, n = text.partition("/")
    if not (sep and i.isdigit() and n.isdigit() and 0 <= int(i) < int(n)):
        raise UsageError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/2")
    return int(i), int(n)


def check_json(args: argparse.Namespace) -> None:
    """The output rule for ``--json``: never inside (or around) the HR folder, never
    through a link, an existing file replaced only when it is a JSON document."""
    if args.json is not None:
        check_output(args.json, inputs=(args.hr,), overwrite=True)


def run(args: argparse.Namespace) -> int:
    check_json(args)
    cfg, raw = config_from_args(args)
    print(f"{'image':<14} {'PSNR-Y':>8} {'SSIM-Y':>8} {'seconds':>9} {'iters':>6}")
    rows = evaluate(args.hr, scale=args.scale, method=args.method, config=cfg, limit=args.limit,
                    device=args.device, on_row=None if args.quiet else _print_row,
                    shard=_parse_shard(args.shard))
    summary = summarize(rows)
    m = summary["mean"]
    print(f"{'mean':<14} {m['psnr_y']:8.3f} {m['ssim_y']:8.4f} {m['seconds']:9.1f} "
          f"{m['iterations']:6.0f}")
    if args.json:
        from zssr import __version__
        from zssr.config import config_to_dict

        summary.update({
            "hr": str(args.hr), "scale": args.scale, "method": args.method,
            "preset": args.preset, "overrides": args.set, "config": config_to_dict(cfg),
            "command": " ".join(["zssr"] + sys.argv[1:]), "version": __version__,
            "machine": f"{platform.node()} {platform.machine()} {platform.processor()}".strip(),
        })
        args.json.parent.mkdir(parents=True, exist_ok=True)
        check_json(args)  # again: the folder may have changed during the work
        write_text_atomic(args.json, json.dumps(summary, indent=2))
    return 0
