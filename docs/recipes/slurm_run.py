"""``zssr run`` on a SLURM cluster through dask-jobqueue (docs/clusters.md).

Run on a login node, in the environment where zssr is installed (the same Python path
must exist on the compute nodes: a shared software folder or the same image) and where
the ``AWS_*`` variables reach your object storage::

    pip install 'zssr-pipeline[slurm]'
    python docs/recipes/slurm_run.py --jobs 8 --memory 6GiB --walltime 02:00:00 \\
        --queue cpu -- s3://bucket/scenes/ --out s3://bucket/runs/r1 --scale 2

Everything after ``--`` is ``zssr run``'s (``--out`` must be ``s3://``: the nodes share no
disk); the recipe adds ``--scheduler`` and ``--torch-threads``.  It starts the Dask
scheduler in this process, submits ``--jobs`` SLURM jobs of one worker each (one Dask
thread, ``--cores`` CPUs for torch, ``--memory``, scratch on the node's ``$TMPDIR``, the
``AWS_*`` variables exported by the job script), waits for them, runs ``zssr run``, and
cancels the jobs when it ends.  ``--dry-run`` prints the job script (secrets masked) and
the ``zssr run`` command, and submits nothing.  Exit status: ``zssr run``'s; 2 for bad
arguments; 75 when no job started within ``--wait`` seconds.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_run import (  # noqa: E402 - the recipes' shared module, beside this file
    THREAD_ENV,
    RecipeError,
    forwarded_env,
    mask_secrets,
    recipe_args,
    run_on,
    shown,
    split_argv,
    zssr_run_argv,
)

#: the node's own scratch, as shell text expanded by the job script on the node
SCRATCH = "${TMPDIR:-/tmp}"


def job_script_prologue(env: Mapping[str, str], *, scratch: str = SCRATCH) -> list[str]:
    """The lines the job script runs before ``dask worker``: thread settings, ``TMPDIR``
    on the node's scratch (also the working directory), and ``env`` exported."""
    lines = [f"export {k}={v}" for k, v in THREAD_ENV.items()]
    lines += [f'export TMPDIR="{scratch}"', 'mkdir -p "$TMPDIR"', 'cd "$TMPDIR"']
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    return lines


def slurm_cluster(*, env: Mapping[str, str], cores: int = 1, memory: str = "4GiB",
                  walltime: str = "01:00:00", queue: str | None = None,
                  account: str | None = None, scratch: str = SCRATCH,
                  job_extra_directives: Sequence[str] = (), interface: str | None = None,
                  scheduler_host: str | None = None, dashboard_address: str = ":8787",
                  log_directory: str | None = None, python: str | None = None) -> Any:
    """A ``SLURMCluster`` whose every job is one zssr worker (no job submitted yet).

    One worker process per job with one Dask thread (``cores=1, processes=1``), while
    the job books ``cores`` CPUs (``job_cpu``) for torch's threads; the worker's memory
    limit and the job's ``--mem`` are ``memory``; ``local_directory`` and ``TMPDIR`` are
    the node's ``scratch``."""
    from dask_jobqueue import SLURMCluster

    scheduler_options: dict[str, Any] = {"dashboard_address": dashboard_address}
    if scheduler_host:
        scheduler_options["host"] = scheduler_host
    return SLURMCluster(
        cores=1, processes=1, job_cpu=cores, memory=memory, walltime=walltime,
        queue=queue, account=account, job_name="zssr-worker",
        job_script_prologue=job_script_prologue(env, scratch=scratch),
        local_directory='"$TMPDIR"', job_extra_directives=list(job_extra_directives),
        interface=interface, scheduler_options=scheduler_options,
        log_directory=log_directory, python=python or sys.executable)


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    own, zssr_args = split_argv(argv)
    p = argparse.ArgumentParser(prog="slurm_run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2, help="SLURM jobs, one worker each (2)")
    p.add_argument("--cores", type=int, default=1, help="CPUs per job, torch's threads (1)")
    p.add_argument("--memory", default="4GiB", help="memory per job (4GiB)")
    p.add_argument("--walltime", default="01:00:00", help="time limit per job (01:00:00)")
    p.add_argument("--queue", default=None, help="partition (#SBATCH -p)")
    p.add_argument("--account", default=None, help="account (#SBATCH -A)")
    p.add_argument("--job-extra", action="append", default=[], metavar="DIRECTIVE",
                   help="another #SBATCH directive, e.g. --job-extra=--gres=gpu:1")
    p.add_argument("--scratch", default=SCRATCH,
                   help=f"node-local scratch, shell text expanded on the node ({SCRATCH})")
    p.add_argument("--env", action="append", default=[], metavar="NAME",
                   help="another variable to pass to the workers (AWS_* always are)")
    p.add_argument("--interface", default=None, help="network interface (ib0, eth0)")
    p.add_argument("--scheduler-host", default=None,
                   help="address the scheduler listens on (default: this host's)")
    p.add_argument("--dashboard-address", default=":8787")
    p.add_argument("--log-directory", default=None, help="folder for the jobs' logs")
    p.add_argument("--wait", type=float, default=3600,
                   help="seconds to wait for the jobs to start (3600)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the job script and the zssr command; submit nothing")
    args = p.parse_args(own)
    if args.jobs < 1 or args.cores < 1:
        raise RecipeError(f"--jobs {args.jobs} --cores {args.cores}: both must be >= 1")
    return args, zssr_args


def main(argv: Sequence[str] | None = None) -> int:
    got = recipe_args(parse_args, argv, "slurm_run.py")
    if got is None:
        return 2
    args, zssr_args = got
    env = forwarded_env(os.environ, args.env)
    cluster = slurm_cluster(
        env=env, cores=args.cores, memory=args.memory, walltime=args.walltime,
        queue=args.queue, account=args.account, scratch=args.scratch,
        job_extra_directives=args.job_extra, interface=args.interface,
        scheduler_host=args.scheduler_host, dashboard_address=args.dashboard_address,
        log_directory=args.log_directory)
    try:
        if args.dry_run:
            print(mask_secrets(cluster.job_script(), env))
            argv = zssr_run_argv(zssr_args, scheduler=cluster.scheduler_address,
                                 torch_threads=args.cores)
            print(shown(argv))
            return 0
        cluster.scale(jobs=args.jobs)
        return run_on(cluster, zssr_args, workers=args.jobs, torch_threads=args.cores,
                      wait=args.wait)
    finally:
        cluster.close()  # cancels the jobs (scancel)


if __name__ == "__main__":
    sys.exit(main())
