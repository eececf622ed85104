"""Serve a job spec on a schedule with APScheduler (the optional ``schedule`` extra).

The same function as ``zssr batch`` runs (:func:`workflows.batch.run_job_file`),
so a served job is as idempotent and as locked as a cron one: a run that
finds the lock held (the previous run still working, or a manual run) is
logged and skipped, and the next tick picks up what is left.

    python -m workflows.scheduler workflows/examples/satellite.yaml --cron "0 2 * * *"

``--cron`` takes a standard 5-field crontab line (minute hour day month
weekday) or 6 fields with seconds first; ``--every SECONDS`` a fixed
interval.  APScheduler runs in this process: keep it alive with systemd
(``Restart=on-failure``) or use the cron/systemd-timer setups of
``workflows/SCHEDULING.md``, which need no extra package.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import LockedError, UsageError
from pipeline.runs.allocator import keep_freed_memory

from .batch import BatchSummary, run_job_file

__all__ = ["make_trigger", "serve", "main"]

log = logging.getLogger(__name__)


def _apscheduler():
    try:
        import apscheduler  # noqa: F401
    except ImportError:
        raise UsageError("serving a job needs APScheduler: pip install 'zssr-pipeline[schedule]' "
                         "(or use cron/systemd: workflows/SCHEDULING.md)") from None


def make_trigger(*, cron: str | None = None, every: float | None = None) -> Any:
    """An APScheduler trigger from a crontab line (5 fields, or 6 with seconds first)."""
    _apscheduler()
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if (cron is None) == (every is None):
        raise UsageError("give exactly one of --cron and --every")
    if every is not None:
        if not every > 0:
            raise UsageError(f"--every {every}: expected a number of seconds > 0")
        return IntervalTrigger(seconds=every)
    fields = cron.split()
    try:
        if len(fields) == 5:
            return CronTrigger.from_crontab(cron)
        if len(fields) == 6:
            names = ("second", "minute", "hour", "day", "month", "day_of_week")
            return CronTrigger(**dict(zip(names, fields, strict=True)))
    except ValueError as exc:
        raise UsageError(f"--cron {cron!r}: {exc}") from None
    raise UsageError(f"--cron {cron!r}: expected 5 fields (minute hour day month weekday) or 6 "
                     "(seconds first), e.g. '0 2 * * *'")


def serve(job: str | Path, *, cron: str | None = None, every: float | None = None,
          max_runs: int | None = None, set_overrides: dict[str, Any] | None = None,
          scheduler: str | None = None,
          on_run: Callable[[int, BatchSummary | None], None] | None = None) -> list[BatchSummary]:
    """Run ``job`` on the schedule until interrupted (or ``max_runs`` runs have fired).

    ``on_run(n, summary)`` is called after each run (``summary`` None when the
    lock was held).  Returns the summaries of the runs that did work.
    """
    _apscheduler()
    from apscheduler.schedulers.background import BackgroundScheduler

    trigger = make_trigger(cron=cron, every=every)
    done = threading.Event()
    summaries: list[BatchSummary] = []
    runs = [0]

    def tick() -> None:
        runs[0] += 1
        summary = None
        try:
            summary = run_job_file(job, set_overrides=set_overrides, scheduler=scheduler)
            summaries.append(summary)
            log.info("run %d: %s", runs[0], summary.counts)
        except LockedError as exc:
            log.warning("run %d skipped: %s", runs[0], exc)
        except Exception:  # noqa: BLE001 - a failed run must not stop the schedule
            log.exception("run %d failed", runs[0])
        if on_run is not None:
            on_run(runs[0], summary)
        if max_runs is not None and runs[0] >= max_runs:
            done.set()

    sched = BackgroundScheduler()
    # one run at a time; missed ticks while a run works collapse into one
    sched.add_job(tick, trigger, max_instances=1, coalesce=True, misfire_grace_time=None)
    sched.start()
    log.info("serving %s (%s)", job, cron or f"every {every}s")
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        sched.shutdown(wait=True)
    return summaries


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m workflows.scheduler", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job", type=Path, help="job spec (YAML)")
    p.add_argument("--cron", default=None, help="crontab line, e.g. '0 2 * * *'")
    p.add_argument("--every", type=float, default=None, help="interval in seconds")
    p.add_argument("--max-runs", type=int, default=None, help="stop after this many runs")
    p.add_argument("--scheduler", default=None, help="Dask scheduler (over the job's)")
    args = p.parse_args(argv)
    keep_freed_memory()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s", stream=sys.stderr)
    try:
        serve(args.job, cron=args.cron, every=args.every, max_runs=args.max_runs,
              scheduler=args.scheduler)
    except UsageError as exc:
        print(f"workflows.scheduler: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
