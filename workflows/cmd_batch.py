"""``zssr batch JOB.yaml``: run a job spec; only inputs not yet done are processed.

Registered as a ``zssr`` subcommand through the ``zssr.commands`` entry point (see
:mod:`pipeline.cli.main`), so :mod:`pipeline` never imports :mod:`workflows`.

An input is done when the output folder's state file records the same
content hash of the input and the same resolved config (preset, set, chain,
scale), and its output still exists: run it every night and it picks up the
new files only.  A second ``zssr batch`` on the same output folder while one
is running exits at once with code 9 (the lock file ``.zssr-batch.lock``).

Job spec keys: inputs (paths, or URLs: s3://bucket/prefix/, s3://bucket/a/*.tif),
output, name, scale, preset, set, chain, scheduler, ground_truth, output_prefix
(s3://bucket/prefix/: outputs uploaded there), stac_items (true: STAC Items and
collection.json) (see workflows/jobspec.py and workflows/examples/).  Scheduling
with cron, systemd or APScheduler: workflows/SCHEDULING.md.

Exit codes: 0 all done, 1 some inputs failed (the others are done), 2 a bad
job spec, 7 the output_prefix's bucket missing or unreachable, 9 another batch
holds the lock, 143 / 129 stopped by SIGTERM / SIGHUP (what timeout, cron and
systemd send; cleaned up like Ctrl-C, 130): the next run picks up what is left.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from configs import merge_dicts
from pipeline.errors import one_line
from zssr.config import parse_override

from .batch import run_job_file

log = logging.getLogger(__name__)


def add_parser(sub, parents) -> None:
    p = sub.add_parser("batch", parents=parents, help="run a job spec (idempotent, locked)",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job", type=Path, metavar="JOB.yaml", help="job spec file")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="override the job's scheduler: local, synchronous or tcp://host:port")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key over the job's 'set' (repeatable)")
    p.set_defaults(func=run)


def _set_map(items: list[str]) -> dict:
    """``--set`` strings as the flat ``{dotted.key: value}`` map a job spec's ``set`` holds."""
    out: dict = {}
    for text in items:
        parsed = parse_override(text)  # validates key=value
        key = text.partition("=")[0].strip()
        node = parsed
        for part in key.split(".")[:-1]:
            node = node[part]
        out = merge_dicts(out, {key: node[key.split(".")[-1]]})
    return out


def run(args: argparse.Namespace) -> int:
    summary = run_job_file(args.job, set_overrides=_set_map(args.set), scheduler=args.scheduler,
                           quiet=args.quiet)
    if not args.quiet:
        c = summary.counts
        print(f"{summary.output}: {c['processed']} processed, {c['skipped']} done earlier, "
              f"{c['failed']} failed ({summary.seconds:.1f}s)")
        for f in summary.failed:
            print(f"  FAILED {one_line(str(f['input']))}: {f.get('error_class')}: "
                  f"{one_line(str(f.get('error') or ''))}")
    return summary.exit_code
