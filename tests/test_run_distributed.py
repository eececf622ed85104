"""``zssr run`` on a real multi-process Dask cluster, and killed runs.

The cluster tests start ``dask scheduler`` and two ``dask worker`` processes
on 127.0.0.1 (no nanny, one thread, OMP_NUM_THREADS=1, torch threads 1), run
a batch of real images (GeoTIFF + DICOM + PNG from tests/data) through
``--scheduler tcp://127.0.0.1:PORT`` and compare with ``--scheduler
synchronous`` pixel for pixel (PNG and GeoTIFF byte for byte; a derived
DICOM gets new UIDs and dates, so its pixels are compared).  The kill tests
SIGKILL one worker, or the whole run, in the middle and check that the run
completes (or the rerun redoes no finished tile) with identical outputs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from _run_helpers import (
    BIG,
    DCM,
    ENV,
    OUTPUTS,
    PNG,
    ROOT,
    TIF,
    dask_cluster,
    markers,
    pixels,
    tiny,
    wait_for_markers,
    zssr_argv,
)

from pipeline.cli.main import main

pytestmark = pytest.mark.slow

TINY = tiny(5)


def cli(*args: str | Path) -> list[str]:
    return zssr_argv(*args)


def in_process(*args: str | Path) -> int:
    return main(["run", *map(str, args), "-q", *TINY])


def assert_same_outputs(a: Path, b: Path, inputs) -> None:
    for src in inputs:
        name = OUTPUTS[src]
        np.testing.assert_array_equal(pixels(a / name), pixels(b / name), err_msg=name)
        if not name.endswith(".dcm"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """Outputs of an uninterrupted synchronous run, in this process (torch threads 1)."""
    out = tmp_path_factory.mktemp("reference")
    assert in_process(PNG, TIF, DCM, BIG, "--out", out, "--scale", "2", "--scheduler",
                      "synchronous") == 0
    return out / "outputs"


def test_cluster_run_equals_synchronous(tmp_path: Path, reference: Path):
    with dask_cluster(tmp_path) as (address, _):
        t0 = time.perf_counter()
        assert in_process(PNG, TIF, DCM, "--out", tmp_path / "run", "--scale", "2",
                          "--scheduler", address, "--batch-tiles", "2") == 0
        seconds = time.perf_counter() - t0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["summary"]["scheduler"] == address
    assert report["summary"]["counts"]["finalized"] == 3 and seconds < 60
    assert_same_outputs(tmp_path / "run" / "outputs", reference, [PNG, TIF, DCM])


def test_killed_worker_run_completes_identically(tmp_path: Path, reference: Path):
    run_dir = tmp_path / "run"
    with dask_cluster(tmp_path) as (address, workers):
        proc = subprocess.Popen(cli(BIG, "--out", run_dir, "--scale", "2", "--scheduler",
                                    address, "--batch-tiles", "1"), env=ENV, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_for_markers(run_dir, 3, proc)
            os.kill(workers[0].pid, signal.SIGKILL)
            out, _ = proc.communicate(timeout=80)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, out.decode()[-2000:]
    assert workers[0].wait() == -signal.SIGKILL
    counts = json.loads((run_dir / "report.json").read_text())["summary"]["counts"]
    assert counts["finalized"] == 1 and counts["tiles_total"] == 25
    assert_same_outputs(run_dir / "outputs", reference, [BIG])


def test_killed_run_resumes_without_redoing_tiles(tmp_path: Path, reference: Path):
    run_dir = tmp_path / "run"
    args = (PNG, BIG, "--out", run_dir, "--scale", "2", "--scheduler", "synchronous",
            "--batch-tiles", "1")
    proc = subprocess.Popen(cli(*args), env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        n_png = 4  # the PNG (first input) finishes before the big image starts
        wait_for_markers(run_dir, n_png + 5, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    done = {p: p.stat().st_mtime_ns for p in markers(run_dir)}
    key = next(p.parent.parent.name for p in done if p.parent.parent.name.startswith("bird"))
    big_done = sum(1 for p in done if p.parent.parent.name == key)
    assert 5 <= big_done < 25, big_done
    chunks = {p: p.stat().st_mtime_ns for p in (run_dir / "work" / key).rglob("c/*/*/*")}
    assert in_process(*args) == 0
    counts = json.loads((run_dir / "report.json").read_text())["summary"]["counts"]
    assert counts["images_skipped"] == 1
    assert counts["tiles_skipped"] == big_done and counts["tiles_inferred"] == 25 - big_done
    assert counts["steps_resumed"] == 1 and counts["steps_trained"] == 0
    assert {p: p.stat().st_mtime_ns for p in done} == done  # no finished tile redone
    assert all(p.stat().st_mtime_ns == t for p, t in chunks.items())
    assert_same_outputs(run_dir / "outputs", reference, [PNG, BIG])


def test_default_local_cluster(tmp_path: Path, reference: Path, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    assert in_process(PNG, DCM, "--out", tmp_path / "run", "--scale", "2", "--workers", "2") == 0
    summary = json.loads((tmp_path / "run" / "report.json").read_text())["summary"]
    assert summary["scheduler"] == "local" and summary["counts"]["finalized"] == 2
    assert_same_outputs(tmp_path / "run" / "outputs", reference, [PNG, DCM])
