"""What the cluster recipes share: ``zssr run`` pointed at a cluster's scheduler, with
object storage as the only state the machines share (docs/clusters.md).

The recipes (``slurm_run.py``, ``kube_run.py``) start a cluster their own way and then
call :func:`run_on`: wait for workers, run ``zssr run ... --scheduler ADDRESS`` as a
subprocess, return its exit code.  Nothing here imports dask-jobqueue or
dask-kubernetes, and nothing in zssr imports these recipes.

The settings every recipe gives its workers, for the reasons written beside them:

* one Dask thread per worker process (``--nthreads 1``): a zssr task trains or infers
  with torch, which has its own threads; two tasks in one process would fight over them;
* ``OMP_NUM_THREADS=1`` (and MKL/OpenBLAS): numpy and GDAL stay single-threaded; torch's
  intra-op threads are set by ``zssr run --torch-threads`` (the recipe's ``--cores``) on
  every worker, through its worker plugin;
* the worker's ``--local-directory`` and ``TMPDIR`` on the node's own scratch: nothing is
  written to a shared folder, and zssr's temporaries (an input copied for its reader, an
  output built before its upload) stay on the node;
* the ``AWS_*`` variables of the submitting shell, because the workers read the inputs
  and write the run folder on object storage themselves.
"""

from __future__ import annotations

import logging
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

log = logging.getLogger("zssr.recipes")

#: environment variables a worker gets from the submitting shell: every ``AWS_*`` one
#: (credentials, profile, region, a private endpoint for boto3 and for GDAL)
FORWARDED_PREFIXES = ("AWS_",)
#: names whose values are never printed (``--dry-run``), in the recipes' logs or errors
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY", re.IGNORECASE)
#: the thread settings of every worker (see the module doc)
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
#: exit status when no worker joined in time (EX_TEMPFAIL: the queue may start them later)
NO_WORKERS = 75


class RecipeError(Exception):
    """A recipe refused its arguments before starting anything (exit 2)."""


def forwarded_env(environ: Mapping[str, str], extra: Iterable[str] = ()) -> dict[str, str]:
    """The variables of ``environ`` a worker needs: every ``AWS_*`` and the ``extra`` names
    that are set, sorted by name."""
    wanted = set(extra)
    return {k: v for k, v in sorted(environ.items())
            if k.startswith(FORWARDED_PREFIXES) or k in wanted}


def mask_secrets(text: str, env: Mapping[str, str]) -> str:
    """``text`` with the value of every secret variable of ``env`` replaced by ``***``."""
    for name, value in env.items():
        if value and SECRET_NAME.search(name):
            text = text.replace(value, "***")
    return text


def _option(argv: Sequence[str], name: str) -> str | None:
    """The value of ``name`` in ``argv`` (``--out X`` or ``--out=X``), or None."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def zssr_run_argv(zssr_args: Sequence[str], *, scheduler: str, torch_threads: int
                  ) -> list[str]:
    """``python -m pipeline.cli.main run ARGS --scheduler ADDRESS [--torch-threads N]``.

    Refuses (``RecipeError``) a ``--out`` that is not on object storage (the workers share
    no disk with this machine or with each other) and a ``--scheduler`` of the user's own
    (the recipe's cluster is the scheduler).  A ``--torch-threads`` given is kept."""
    args = list(zssr_args)
    if args[:1] == ["run"]:
        args = args[1:]
    out = _option(args, "--out")
    if out is None or not out.startswith("s3://"):
        raise RecipeError(f"--out {out}: the workers share no disk with this machine; give "
                          "the run folder on object storage: --out s3://bucket/prefix")
    if _option(args, "--scheduler") is not None:
        raise RecipeError("--scheduler: the recipe's cluster is the scheduler; leave it out")
    if _option(args, "--torch-threads") is None:
        args += ["--torch-threads", str(torch_threads)]
    return [sys.executable, "-m", "pipeline.cli.main", "run", *args, "--scheduler", scheduler]


def wait_for_workers(client: Any, n: int, timeout: float) -> int:
    """Wait up to ``timeout`` s for ``n`` workers; how many joined (a queue may start
    only some of the jobs in time: the run goes on with those)."""
    try:
        client.wait_for_workers(n, timeout=timeout)
    except TimeoutError:
        pass
    return len(client.scheduler_info(n_workers=-1)["workers"])


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def run_on(cluster: Any, zssr_args: Sequence[str], *, workers: int, torch_threads: int,
           wait: float) -> int:
    """``zssr run`` on ``cluster`` (a started dask ``Cluster``): wait for ``workers``, run,
    return its exit status (``NO_WORKERS`` when none joined within ``wait`` s).  SIGTERM
    and SIGHUP stop the run like Ctrl-C: ``zssr run`` is stopped (it cleans up and the
    next run resumes) and the caller closes the cluster."""
    from distributed import Client

    argv = zssr_run_argv(zssr_args, scheduler=cluster.scheduler_address,
                         torch_threads=torch_threads)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    with Client(cluster, set_as_default=False) as client:
        start = time.monotonic()
        joined = wait_for_workers(client, workers, wait)
        if joined == 0:
            log.error("no worker joined within %.0f s (are the jobs still queued?); "
                      "nothing was run", wait)
            return NO_WORKERS
        log.info("%d of %d workers joined in %.0f s; running %s", joined, workers,
                 time.monotonic() - start, shown(argv))
    proc = subprocess.Popen(argv)
    try:
        return proc.wait()
    finally:
        if proc.poll() is None:  # stopped by a signal: zssr run cleans up on SIGTERM
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``RECIPE-OPTIONS -- ZSSR-RUN-ARGS`` split at the first ``--``."""
    argv = list(argv)
    if "--" not in argv:
        raise RecipeError("usage: RECIPE [options] -- INPUT... --out s3://bucket/prefix "
                          "[zssr run options]")
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def recipe_args(parse: Any, argv: Sequence[str] | None, prog: str) -> tuple[Any, list[str]] | None:
    """A recipe's start: logging, its own options (``parse``) and the ``zssr run`` ones
    checked before anything is started; None after printing the one-line refusal (the
    recipe then exits 2)."""
    setup_logging()
    try:
        args, zssr_args = parse(sys.argv[1:] if argv is None else argv)
        zssr_run_argv(zssr_args, scheduler="tcp://check", torch_threads=args.cores)
    except RecipeError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
    return args, zssr_args


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    # dask-jobqueue logs each job script (with the forwarded credentials) at debug level
    logging.getLogger("dask_jobqueue").setLevel(logging.INFO)


def shown(argv: Sequence[str]) -> str:
    """``zssr run ...`` as a user would type it, for a log line (no secret is in argv)."""
    return "zssr " + shlex.join(argv[3:])
