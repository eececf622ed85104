"""Helpers shared by the ``zssr run`` tests that start processes (cluster, kills, faults).

A real Dask cluster (``dask scheduler`` + ``dask worker`` subprocesses on
127.0.0.1), the ``zssr run`` command line as a subprocess (optionally with
some functions slowed down, to hold a run inside one stage while a test
kills it), and readers of what a run leaves in its directory (tile markers,
manifest, report counts, output pixels).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from io_adapters.detect import open_reader

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
#: the batch the cluster tests run: a PNG, a GeoTIFF, a DICOM and a larger PNG
PNG = DATA / "io" / "plain" / "butterfly_48x64.png"
TIF = DATA / "io" / "geotiff" / "landsat_64x80.tif"
DCM = DATA / "dicom" / "CT_small.dcm"
BIG = DATA / "sr" / "bird_SRF_2_LR.png"  # 144 x 144: 25 tiles of 32
OUTPUTS = {PNG: "butterfly_48x64_x2.png", TIF: "landsat_64x80_x2.tif", DCM: "CT_small_x2.dcm",
           BIG: "bird_SRF_2_LR_x2.png"}
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# Wraps each ``"module:Owner.attr"`` of ``DELAYS`` with a sleep before the call: a
# test-side stand-in for a slow disk or a long stage, so that a kill lands inside that
# stage on any machine.  Results are unchanged.  Prepended to the CLI (``python -c``)
# or written as a ``dask worker --preload`` file.
_SLOWDOWN = """\
import functools, importlib, sys, time
def _slow(target, seconds):
    module, _, attrs = target.partition(":")
    *path, name = attrs.split(".")
    owner = importlib.import_module(module)
    for part in path:
        owner = getattr(owner, part)
    real = getattr(owner, name)
    @functools.wraps(real)
    def wrapper(*args, **kwargs):
        time.sleep(seconds)
        return real(*args, **kwargs)
    setattr(owner, name, wrapper)
for _target, _seconds in DELAYS.items():
    _slow(_target, _seconds)
"""


def slowdown_code(delays: dict[str, float]) -> str:
    """Python source that slows down the callables named in ``delays`` (see ``_SLOWDOWN``)."""
    return f"DELAYS = {delays!r}\n" + _SLOWDOWN


def tiny(iters: int = 5, *, torch_threads: bool = True) -> list[str]:
    """A tiny network and ``iters`` training iterations (one torch thread for ``zssr run``)."""
    flags = ["--set", f"train.max_iters={iters}", "--set", "net.depth=3", "--set",
             "net.width=8", "--set", "infer.back_projection_iters=1", "--tile", "32"]
    return [*flags, "--torch-threads", "1"] if torch_threads else flags


def zssr_argv(*args: str | Path, iters: int = 5, slow: dict[str, float] | None = None
              ) -> list[str]:
    """``zssr run ARGS -q <tiny>`` as a subprocess command line, ``slow``-ed down if given."""
    cli = ["run", *map(str, args), "-q", *tiny(iters)]
    if slow:
        code = slowdown_code(slow) + "from pipeline.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
        return [sys.executable, "-c", code, *cli]
    return [sys.executable, "-m", "pipeline.cli.main", *cli]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_dirs(logdir: Path, name: str) -> tuple[Path, Path]:
    """``(cwd, TMPDIR)`` of the cluster process ``name`` (``scheduler``, ``w0``, ``w1``...)
    started by ``dask_cluster(..., isolated=True)``: two folders of its own under
    ``logdir/nodes/<name>/``, empty when the process starts."""
    base = logdir / "nodes" / name
    return base / "cwd", base / "tmp"


def _node_env(logdir: Path, name: str, env: dict[str, str] | None, isolated: bool
              ) -> tuple[dict[str, str], Path]:
    """The environment and working directory of one cluster process."""
    if not isolated and env is None:
        return ENV, ROOT  # the default: as before
    # os.environ as it is now (a fixture may have set the S3 endpoint after import)
    merged = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1", **(env or {})}
    if not isolated:
        return merged, ROOT
    cwd, tmp = node_dirs(logdir, name)
    for folder in (cwd, tmp):
        folder.mkdir(parents=True)  # fresh: an existing one is an error
    merged["TMPDIR"] = str(tmp)
    return merged, cwd


@contextmanager
def dask_cluster(logdir: Path, workers: int = 2, *, slow: dict[str, float] | None = None,
                 isolated: bool = False, env: dict[str, str] | None = None
                 ) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """``dask scheduler`` + ``workers`` x ``dask worker`` (no nanny) as subprocesses;
    ``slow``: callables the workers slow down (a ``--preload``, see ``_SLOWDOWN``).

    ``isolated``: no shared disk but the installed code: the scheduler and each worker
    start in an empty folder of their own as working directory, with a ``TMPDIR`` of
    their own (``node_dirs(logdir, name)``; dask's ``dask-scratch-space`` goes there too),
    and the slowdown is handed over as preload text, not a file.  ``env``: variables
    added to the environment of every process, over ``os.environ`` as it is at the call
    (e.g. the S3 endpoint and credentials a fixture set).  Defaults: as before (``ENV``,
    working directory the repository)."""
    from distributed import Client

    dask = Path(sys.executable).with_name("dask")
    preload: list[str | Path] = []
    if slow and isolated:
        preload = ["--preload", slowdown_code(slow)]
    elif slow:
        preload = ["--preload", logdir / "slowdown.py"]
        (logdir / "slowdown.py").write_text(slowdown_code(slow))
    address = f"tcp://127.0.0.1:{free_port()}"
    log = open(logdir / "cluster.log", "w")  # noqa: SIM115 - closed below
    node_env, cwd = _node_env(logdir, "scheduler", env, isolated)
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port",
                               address.rsplit(":", 1)[1], "--no-dashboard"], env=node_env,
                              cwd=cwd, stdout=log, stderr=subprocess.STDOUT)]
    try:
        for i in range(workers):
            node_env, cwd = _node_env(logdir, f"w{i}", env, isolated)
            procs.append(subprocess.Popen(
                [dask, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                 "--name", f"w{i}", "--memory-limit", "0", *preload], env=node_env, cwd=cwd,
                stdout=log, stderr=subprocess.STDOUT))
        with Client(address, timeout="60s", set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=60)
        yield address, procs[1:]
    finally:
        try:
            with Client(address, timeout="10s", set_as_default=False) as client:
                client.shutdown()  # scheduler and workers exit together
        except OSError:
            pass
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()


def pixels(path: Path) -> np.ndarray:
    with open_reader(path) as r:
        return np.stack([r.read(frame=f) for f in range(r.meta.frames)])


def markers(run_dir: Path, key: str = "*") -> list[Path]:
    """The tile markers of the first step (of one image key, or all)."""
    return list((run_dir / "tiles").glob(f"{key}/s0/*.done"))


def wait_for_markers(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    wait_until(lambda: len(markers(run_dir)) >= n, proc, f"{n} tiles", timeout=timeout)


def wait_until(condition, proc: subprocess.Popen, what: str, *, timeout: float = 60,
               poll: float = 0.005) -> None:
    """Poll ``condition()`` until true; fail if ``proc`` ends first or after ``timeout``."""
    end = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before {what}")
        if time.monotonic() > end:
            raise AssertionError(f"no {what} after {timeout} s")
        time.sleep(poll)


def manifest(run_dir: Path) -> list[dict]:
    path = run_dir / "manifest.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


def states(run_dir: Path, name: str) -> list[str]:
    """The manifest states of the image whose key starts with ``name``, oldest first."""
    return [r["state"] for r in manifest(run_dir) if r["key"].startswith(f"{name}-")]


def counts(run_dir: Path) -> dict[str, int]:
    return json.loads((run_dir / "report.json").read_text())["summary"]["counts"]
