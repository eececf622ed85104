"""The orchestrator integration: APScheduler serves a job on a cron schedule, for real.

Needs the optional extra ``schedule`` (APScheduler); skipped without it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.errors import UsageError
from workflows.batch import BatchLock

apscheduler = pytest.importorskip("apscheduler")

from workflows.scheduler import main, make_trigger, serve  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
TINY = {"train.max_iters": 5, "net.depth": 3, "net.width": 8, "infer.back_projection_iters": 1}


@pytest.fixture
def job(tmp_path) -> Path:
    (tmp_path / "in").mkdir()
    shutil.copy(DATA / "io" / "plain" / "bridge_40x48.png", tmp_path / "in")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"inputs": ["in/"], "output": "out", "scale": 2,
                                    "set": TINY, "scheduler": "synchronous"}))
    return path


def test_cron_schedule_runs_the_batch_each_tick(job):
    """Every second (6-field cron): run 1 does the image, a file arrives, run 2 does just
    that one, run 3 finds the lock held by the test and is skipped, run 4 does nothing."""
    out = job.parent / "out"
    seen = []
    lock = BatchLock(out)

    def on_run(n, summary):
        seen.append(None if summary is None else summary.counts)
        if n == 1:
            shutil.copy(DATA / "io" / "plain" / "butterfly_48x64.png", job.parent / "in")
        elif n == 2:
            lock.__enter__()
        elif n == 3:
            lock.__exit__(None, None, None)

    summaries = serve(job, cron="* * * * * *", max_runs=4, on_run=on_run)
    assert seen == [{"processed": 1, "skipped": 0, "failed": 0},
                    {"processed": 1, "skipped": 1, "failed": 0}, None,
                    {"processed": 0, "skipped": 2, "failed": 0}]
    assert len(summaries) == 3 and (out / "butterfly_48x64_x2.png").is_file()


def test_interval_schedule_and_cli(job):
    assert main([str(job), "--every", "0.2", "--max-runs", "1"]) == 0
    assert (job.parent / "out" / "bridge_40x48_x2.png").is_file()
    assert main([str(job), "--cron", "61 * * * *"]) == 2


def test_trigger_errors():
    assert type(make_trigger(cron="0 2 * * *")).__name__ == "CronTrigger"
    with pytest.raises(UsageError, match="give exactly one of --cron and --every"):
        make_trigger()
    with pytest.raises(UsageError, match="give exactly one of --cron and --every"):
        make_trigger(cron="* * * * *", every=3)
    with pytest.raises(UsageError, match="--every 0: expected a number of seconds > 0"):
        make_trigger(every=0)
    with pytest.raises(UsageError, match="expected 5 fields"):
        make_trigger(cron="* *")
    with pytest.raises(UsageError, match="--cron '99 \\* \\* \\* \\*'"):
        make_trigger(cron="99 * * * *")
