"""Scheduled and chained runs that call the pipeline's public functions.

* :mod:`workflows.jobspec` — the job spec (YAML) and its validation;
* :mod:`workflows.batch` — ``zssr batch JOB.yaml``: idempotent, locked runs of a job;
* :mod:`workflows.scheduler` — serve a job on a cron schedule (APScheduler, optional extra);
* ``zssr-batch.service`` / ``zssr-batch.timer`` and ``SCHEDULING.md`` — cron and systemd.
"""
