"""Fault injection (issue 7): killed workers, killed runs, a full disk, two runs at once.

Every interrupted run is compared with one uninterrupted synchronous run of the
same inputs and config (the ``reference`` fixture): PNG and GeoTIFF outputs
byte for byte, DICOM by pixel data (a derived DICOM gets new UIDs and dates).

* A Dask worker is SIGKILLed while it trains, and while it infers tiles: the
  run completes and its output is identical.
* The whole ``zssr run`` is SIGKILLed while an image trains, and inside
  finalize (while the output is written under its temporary name; after the
  output is committed but before the manifest says so).  The same command run
  again completes with identical outputs, redoes no finished tile, and no
  temporary is left.  A kill in the middle of the tiles is
  ``test_run_distributed.py::test_killed_run_resumes_without_redoing_tiles``.
* A full disk: writers that raise ``ENOSPC`` (monkeypatched) and, as root, a
  small tmpfs.  ``zssr upscale`` exits 7 with one line naming the file and the
  full disk, leaving nothing; ``zssr run`` fails the image with that message and,
  once space is freed, the same command resumes and completes.
* Two ``zssr run`` processes on one run directory: the second exits 9 with one line
  naming the holder, and touches nothing (the in-process version is in
  ``test_run_sync.py`` and ``test_run_rundir.py``).

Kills are aimed by watching the run directory (manifest states, tile markers,
weights, temporaries) and the scheduler (which worker runs which task).  To make a
stage last long enough on any machine, the killed process slows some functions
down with a sleep (``_run_helpers.slowdown_code``; results unchanged).
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from _run_helpers import (
    ENV,
    ROOT,
    counts,
    dask_cluster,
    manifest,
    markers,
    pixels,
    states,
    tiny,
    wait_until,
    zssr_argv,
)
from conftest import DATA, require

from io_adapters.cog import CogWriter
from pipeline.cli.main import main

ITERS = 100  # with the slowdowns below, training lasts >= 2 s in the killed runs
SLOW_TRAIN = {"zssr.train:_make_son": 0.02}  # per training iteration
BIG = DATA / "sr" / "bird_SRF_2_LR.png"  # 144 x 144: 25 tiles of 32
TIF = DATA / "io" / "geotiff" / "landsat_64x80.tif"  # 6 tiles
DCM = DATA / "dicom" / "CT_small.dcm"  # 16 tiles
OUTPUTS = {BIG: "bird_SRF_2_LR_x2.png", TIF: "landsat_64x80_x2.tif", DCM: "CT_small_x2.dcm"}
SYNC = ("--scale", "2", "--scheduler", "synchronous", "--batch-tiles", "1")


def in_process(*args: str | Path) -> int:
    return main(["run", *map(str, args), "-q", *tiny(ITERS)])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """Outputs of one uninterrupted synchronous run (in this process, torch threads 1)."""
    out = tmp_path_factory.mktemp("reference")
    assert in_process(DCM, BIG, TIF, "--out", out, *SYNC) == 0
    return out / "outputs"


def assert_same_outputs(outputs: Path, reference: Path, inputs) -> None:
    for src in inputs:
        name = OUTPUTS[src]
        if name.endswith(".dcm"):
            np.testing.assert_array_equal(pixels(outputs / name), pixels(reference / name))
        else:
            assert (outputs / name).read_bytes() == (reference / name).read_bytes(), name
    assert not [p.name for p in outputs.glob(".*")]  # no temporary left behind


@contextmanager
def running(argv: list[str]) -> Iterator[subprocess.Popen]:
    """A subprocess, killed on the way out if still alive."""
    proc = subprocess.Popen(argv, env=ENV, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def sigkill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


# ----------------------------------------------------------------------------- a killed worker


def _worker_running(client, prefix: str) -> str | None:
    """The address of a worker with a task whose key starts with ``prefix``."""
    for address, keys in client.processing().items():
        if any(str(k).startswith(prefix) for k in keys):
            return address
    return None


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["train", "infer"])
def test_worker_killed_mid_phase_run_completes_identically(phase: str, tmp_path: Path,
                                                           reference: Path):
    from distributed import Client

    run_dir = tmp_path / "run"
    slow = {**SLOW_TRAIN, "io_adapters.zarr_regions:write_region": 0.1}  # 25 tiles: >= 1.2 s of tiles
    with dask_cluster(tmp_path, slow=slow) as (address, workers), \
            Client(address, timeout="30s", set_as_default=False) as client:
        pids = client.run(os.getpid)
        with running(zssr_argv(BIG, "--out", run_dir, "--scale", "2", "--scheduler", address,
                               "--batch-tiles", "1", iters=ITERS)) as proc:
            if phase == "train":
                wait_until(lambda: _worker_running(client, "zssr-train-"), proc, "training",
                           poll=0.05)
                time.sleep(0.5)  # the task has started its >= 2 s of iterations
            else:
                wait_until(lambda: len(markers(run_dir)) >= 3, proc, "3 tiles")
            victim = _worker_running(client, f"zssr-{phase}-")
            assert victim is not None, f"no worker is running a {phase} task"
            os.kill(pids[victim], signal.SIGKILL)
            trained, tiles = any((run_dir / "weights").glob("*.pt")), len(markers(run_dir))
            out, _ = proc.communicate(timeout=120)
        killed = next(w for w in workers if w.pid == pids[victim])
        assert killed.wait(timeout=10) == -signal.SIGKILL
    assert proc.returncode == 0, out.decode()[-2000:]
    if phase == "train":
        assert not trained and tiles == 0  # killed before its weights were saved
    else:
        assert trained and 3 <= tiles < 25  # killed among the tiles
    c = counts(run_dir)
    assert c["finalized"] == 1 and c["tiles_total"] == 25 and c["failed"] == 0
    assert_same_outputs(run_dir / "outputs", reference, [BIG])


# ----------------------------------------------------------------------------- a killed run


@pytest.mark.slow
def test_run_killed_while_training_resumes_identically(tmp_path: Path, reference: Path):
    run_dir = tmp_path / "run"
    args = (DCM, BIG, "--out", run_dir, *SYNC)
    with running(zssr_argv(*args, iters=ITERS, slow=SLOW_TRAIN)) as proc:
        wait_until(lambda: "finalized" in states(run_dir, "CT_small"), proc, "the DICOM done")
        time.sleep(0.5)  # the bird trains for >= 2 s
        sigkill(proc)
    assert states(run_dir, "bird_SRF_2_LR") == ["queued"]
    assert not list((run_dir / "weights").glob("bird_SRF_2_LR-*"))  # killed while training
    outputs = run_dir / "outputs"
    assert not (outputs / OUTPUTS[BIG]).exists()
    dicom = (outputs / OUTPUTS[DCM]).stat().st_mtime_ns
    assert in_process(*args) == 0
    c = counts(run_dir)
    assert c["images_skipped"] == 1 and c["finalized"] == 1  # the DICOM is not redone
    assert c["steps_trained"] == 1 and c["tiles_inferred"] == 25 and c["tiles_skipped"] == 0
    assert (outputs / OUTPUTS[DCM]).stat().st_mtime_ns == dicom
    assert_same_outputs(outputs, reference, [DCM, BIG])


def _temporaries(output: Path) -> list[Path]:
    return list(output.parent.glob(f".{output.name}.*"))


# Where finalize is held, and what says the kill landed there: the COG's tiles
# being written under a temporary name, or the output committed but not yet
# recorded as finalized (the report material is being computed).
FINALIZE_POINTS = {
    "writing": ({"io_adapters.cog:CogWriter.write": 0.3},
                lambda out, run_dir: "inferred" in states(run_dir, "landsat_64x80")
                and bool(_temporaries(out))),
    "committed": ({"pipeline.runs.finalize:_report_material": 30.0},
                  lambda out, run_dir: out.exists()),
}


@pytest.mark.slow
@pytest.mark.parametrize("point", sorted(FINALIZE_POINTS))
def test_run_killed_in_finalize_resumes_identically(point: str, tmp_path: Path,
                                                    reference: Path):
    run_dir = tmp_path / "run"
    output = run_dir / "outputs" / OUTPUTS[TIF]
    slow, reached = FINALIZE_POINTS[point]
    args = (TIF, "--out", run_dir, *SYNC)
    with running(zssr_argv(*args, iters=ITERS, slow=slow)) as proc:
        wait_until(lambda: reached(output, run_dir), proc, f"finalize ({point})")
        sigkill(proc)
    assert states(run_dir, "landsat_64x80") == ["queued", "trained", "inferred"]
    if point == "writing":
        assert not output.exists() and _temporaries(output)  # nothing presented as complete
    else:
        assert output.read_bytes() == (reference / OUTPUTS[TIF]).read_bytes()  # atomic
    assert in_process(*args) == 0
    c = counts(run_dir)
    assert c["finalized"] == 1 and c["steps_resumed"] == 1 and c["steps_trained"] == 0
    assert c["tiles_inferred"] == 0 and c["tiles_skipped"] == 6  # no tile redone
    assert states(run_dir, "landsat_64x80")[-1] == "finalized"
    assert_same_outputs(run_dir / "outputs", reference, [TIF])


# ----------------------------------------------------------------------------- a full disk


def _enospc(path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _disk_full_cog(monkeypatch) -> None:
    def write(self, *args, **kwargs):
        raise _enospc(self.path)

    monkeypatch.setattr(CogWriter, "write", write)


def test_upscale_on_a_full_disk_exits_7_and_leaves_nothing(tmp_path: Path, monkeypatch,
                                                           capsys):
    _disk_full_cog(monkeypatch)
    out = tmp_path / "out" / "x2.tif"
    out.parent.mkdir()
    rc = main(["upscale", str(TIF), str(out), "--scale", "2", "-q",
               *tiny(5, torch_threads=False)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 7
    assert err == [f"zssr upscale: error: [Errno 28] No space left on device: "
                   f"'{out.resolve()}'"]
    assert list(out.parent.iterdir()) == []  # no output, no temporary


def test_run_disk_full_at_finalize_then_resumes(tmp_path: Path, monkeypatch, reference: Path):
    run_dir = tmp_path / "run"
    args = (TIF, "--out", run_dir, *SYNC)
    _disk_full_cog(monkeypatch)
    assert in_process(*args) == 1
    failed = manifest(run_dir)[-1]
    assert failed["state"] == "failed" and failed["stage"] == "finalize"
    assert failed["error_class"] == "OSError" and failed["error"].startswith(
        "[Errno 28] No space left on device: ") and OUTPUTS[TIF] in failed["error"]
    assert list((run_dir / "outputs").iterdir()) == []
    monkeypatch.undo()  # space is freed
    (run_dir / "outputs" / f".{OUTPUTS[TIF]}.tiles-0123abcd").touch()  # as if killed
    assert in_process(*args) == 0
    c = counts(run_dir)
    assert c["tiles_inferred"] == 0 and c["tiles_skipped"] == 6 and c["steps_trained"] == 0
    assert_same_outputs(run_dir / "outputs", reference, [TIF])


def test_run_disk_full_among_the_tiles_then_resumes(tmp_path: Path, monkeypatch,
                                                    reference: Path):
    import io_adapters.zarr_regions as regions

    real, written = regions.write_region, []

    def filling(store, array, window, **kwargs):
        if len(written) == 3:
            raise _enospc(Path(store) / "c")
        written.append(window)
        return real(store, array, window, **kwargs)

    run_dir = tmp_path / "run"
    args = (TIF, "--out", run_dir, *SYNC)
    monkeypatch.setattr(regions, "write_region", filling)
    assert in_process(*args) == 1
    failed = manifest(run_dir)[-1]
    assert failed["stage"] == "infer" and "No space left on device" in failed["error"]
    assert len(markers(run_dir)) == 3 and list((run_dir / "outputs").iterdir()) == []
    monkeypatch.undo()
    assert in_process(*args) == 0
    c = counts(run_dir)
    assert c["tiles_skipped"] == 3 and c["tiles_inferred"] == 3 and c["steps_trained"] == 0
    assert_same_outputs(run_dir / "outputs", reference, [TIF])


@pytest.fixture
def small_fs():
    """``mount(folder, size)``: a tmpfs of ``size`` at ``folder`` (root only; else skip)."""
    mounted: list[Path] = []

    def mount(folder: Path, size: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        require(os.geteuid() == 0, "root (to mount a small tmpfs)")
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                   str(folder)], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            require(False, f"a tmpfs mount ({exc})")
        require(done.returncode == 0, f"a tmpfs mount ({done.stderr.decode().strip()})")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False, timeout=30)


def _resize(folder: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True, timeout=30)


@pytest.mark.parametrize("src", [TIF, BIG, DCM], ids=["cog", "png", "dicom"])
def test_upscale_on_a_small_filesystem(src: Path, tmp_path: Path, small_fs, capsys):
    folder = small_fs(tmp_path / "small", "64k")  # every output here is larger
    out = folder / f"x2{src.suffix}"
    rc = main(["upscale", str(src), str(out), "--scale", "2", "-q",
               *tiny(5, torch_threads=False)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 7
    assert len(err) == 1 and err[0].startswith(f"zssr upscale: error: {out.resolve()}: cannot ")
    assert "no space left on device" in err[0].lower()
    assert list(folder.iterdir()) == []


def test_run_on_a_full_filesystem_resumes_after_space_is_freed(tmp_path: Path, small_fs,
                                                               reference: Path):
    run_dir = tmp_path / "run"
    outputs = small_fs(run_dir / "outputs", "64k")  # the work folders have room
    args = (DCM, BIG, TIF, "--out", run_dir, *SYNC)
    assert in_process(*args) == 1
    failed = [r for r in manifest(run_dir) if r["state"] == "failed"]
    assert len(failed) == 3 and all(r["stage"] == "finalize" for r in failed)
    for r in failed:
        assert "no space left on device" in r["error"].lower(), r["error"]
    assert list(outputs.iterdir()) == []
    _resize(outputs, "4m")
    assert in_process(*args) == 0
    c = counts(run_dir)
    assert c["finalized"] == 3 and c["steps_trained"] == 0 and c["tiles_inferred"] == 0
    assert_same_outputs(outputs, reference, [DCM, BIG, TIF])


# ----------------------------------------------------------------------------- two runs at once


@pytest.mark.slow
def test_second_run_process_on_the_same_folder_is_refused(tmp_path: Path):
    from pipeline.runs.driver import RunDir

    run_dir = tmp_path / "run"
    args = (TIF, "--out", run_dir, *SYNC)
    with running(zssr_argv(*args, slow={"pipeline.runs.tasks:train_stage": 120.0})) as first:
        wait_until(lambda: "queued" in states(run_dir, "landsat_64x80"), first, "a queued image",
                   poll=0.05)
        before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
        second = subprocess.run(zssr_argv(*args), env=ENV, cwd=ROOT, capture_output=True,
                                timeout=120)
        assert first.poll() is None  # still holding the lock
        sigkill(first)
    assert second.returncode == 9
    err = second.stderr.decode().strip().splitlines()
    assert len(err) == 1 and re.fullmatch(
        rf"zssr run: error: {re.escape(str(run_dir))}: another zssr run is using this run "
        rf"directory \(pid {first.pid} on .+ since .+\); wait for it to finish or choose "
        r"another --out", err[0]), err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    with RunDir(run_dir):  # a killed holder leaves no stale lock
        pass


# ----------------------------------------------------------------------------- the bookkeeping


def test_write_failure_names_a_full_disk(tmp_path: Path):
    from io_adapters._common import write_failure

    out = tmp_path / "x.tif"
    try:
        try:
            raise _enospc(out)
        except OSError as inner:
            raise RuntimeError("TIFFWriteDirectoryTagData:IO error\nTraceback: ...") from inner
    except RuntimeError as exc:
        full = write_failure(out, "finish the GeoTIFF", exc)
    assert str(full) == (f"{out}: cannot finish the GeoTIFF: no space left on device "
                         "(TIFFWriteDirectoryTagData:IO error); free some space and run the "
                         "command again")
    other = write_failure(out, "write the PNG", ValueError("libpng: bad\nmore"))
    assert str(other) == f"{out}: cannot write the PNG: libpng: bad"  # tmp_path has room


def test_stale_temps_are_only_writer_temporaries(tmp_path: Path):
    from io_adapters.detect import stale_temps

    final = tmp_path / "a_x2.tif"
    temps = [tmp_path / ".a_x2.tif.tiles-0123abcd", tmp_path / ".a_x2.tif.cog-89abcdef",
             tmp_path / ".a_x2.tif.cog-89abcdef.aux.xml", tmp_path / ".a_x2.tif.tmp-00000000"]
    others = [final, tmp_path / ".a_x2.tif.keep", tmp_path / ".b_x2.tif.tiles-0123abcd",
              tmp_path / ".a_x2.tif.tiles-0123abcd.bak", tmp_path / "a_x2.tif.tiles-0123abcd"]
    for p in temps + others:
        p.touch()
    assert stale_temps(final) == sorted(temps)
    assert stale_temps(tmp_path / "missing" / "x.png") == []


def test_an_output_claim_outranks_the_manifest(tmp_path: Path, caplog):
    from pipeline.runs.driver import RunDir

    out = tmp_path / "outputs" / "x_x2.png"
    with RunDir(tmp_path) as rd:
        rd.record("x-1", "finalized", output=str(out))
        rd.claim_output("x-2", out)  # x-2 was killed between its commit and its record
        assert rd.output_owners() == {str(out): "x-2"}
        rd.claim(out).write_text("{damaged")
        assert rd.output_owners() == {str(out): "x-1"}
    assert "skipping a damaged output claim" in caplog.text
