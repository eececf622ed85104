"""Nothing lost, no one in (issue 20): training that diverges, one writer per output,
and SIGTERM / SIGHUP / SIGKILL leaving no partial output behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from io_adapters.errors import WriteError
from pipeline.cli.main import main
from pipeline.errors import EXIT, LockedError, exit_code
from pipeline.locking import OutputLock, output_lock_path
from zssr.train import TrainingDivergedError

pytestmark = pytest.mark.skipif(sys.platform != "linux",
                                reason="signals and O_NOFOLLOW locks are tested on Linux")
ROOT = Path(__file__).resolve().parents[1]
ZSSR = ROOT / ".venv" / "bin" / "zssr"
DATA = ROOT / "tests" / "data"
SMALL = DATA / "io" / "plain" / "bridge_40x48.png"
TINY = ["--set", "train.max_iters=3", "--set", "train.crop_size=16", "--set", "net.depth=3",
        "--set", "net.width=4", "--set", "infer.back_projection_iters=0", "-q"]


def _noise_png(path: Path, side: int = 300) -> Path:
    """A seeded grey image large enough that inference lasts seconds (time to signal)."""
    pixels = np.random.default_rng(20).integers(0, 256, (side, side), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _leftovers(folder: Path, output: Path) -> list[str]:
    """What a writer of ``output`` may leave: temporaries, a partial store, the lock."""
    return sorted(p.name for p in folder.iterdir()
                  if p.name.startswith(f".{output.name}.") or p.name == output.name + ".partial")


# ------------------------------------------------------------------------------ divergence


def test_training_at_an_absurd_learning_rate_stops_with_the_setting_named():
    from tests.conftest import tiny_config
    from zssr.model import build_model
    from zssr.sampling import ArrayCropSource
    from zssr.train import train

    cfg = tiny_config(learning_rate=10.0, max_iters=60, run_test_every=10).train
    img = np.random.default_rng(0).random((1, 40, 48)).astype(np.float32)
    model = build_model(1, tiny_config().net, seed=0)
    with pytest.raises(TrainingDivergedError, match=r"lower train\.learning_rate") as err:
        train(model, ArrayCropSource(img), scale=2, cfg=cfg)
    assert err.value.iteration <= 10  # found at the first test point, not after 60 iterations
    assert exit_code(err.value) == EXIT["usage"]


def test_a_sane_learning_rate_trains_without_a_divergence_error():
    from tests.conftest import tiny_config
    from zssr.model import build_model
    from zssr.sampling import ArrayCropSource
    from zssr.train import train

    img = np.random.default_rng(0).random((1, 40, 48)).astype(np.float32)
    hist = train(build_model(1, tiny_config().net, seed=0), ArrayCropSource(img), scale=2,
                 cfg=tiny_config(max_iters=12, run_test_every=5).train)
    assert hist.iterations == 12 and all(np.isfinite(hist.losses))


def test_diverging_upscale_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "o.png"
    code = main(["upscale", str(SMALL), str(out), "--scale", "2", *TINY,
                 "--set", "train.max_iters=30", "--set", "train.run_test_every=10",
                 "--set", "net.depth=4", "--set", "net.width=16",  # explodes at lr 10
                 "--set", "train.learning_rate=10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "bridge_40x48.png: training diverged" in err[0]
    assert "--set train.learning_rate=" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output, no temporary, no lock


def test_a_diverging_image_fails_alone_in_a_run(tmp_path, monkeypatch, capsys):
    """The engine's error for one image is recorded as that image's failure; the others
    finish and the run exits 1."""
    import pipeline.image.job as job_mod

    real = job_mod.train

    def diverge_on_bad(model, source, **kw):
        if "bad" in str(source.reader.meta.path):
            raise TrainingDivergedError(iteration=4, loss=float("nan"), learning_rate=1e-3)
        return real(model, source, **kw)

    monkeypatch.setattr(job_mod, "train", diverge_on_bad)
    src = tmp_path / "in"
    src.mkdir()
    for name in ("good.png", "bad.png"):
        (src / name).write_bytes(SMALL.read_bytes())
    code = main(["run", str(src), "--out", str(tmp_path / "run"), "--scale", "2",
                 "--scheduler", "synchronous", *TINY])
    assert code == EXIT["batch"]
    assert [p.name for p in (tmp_path / "run" / "outputs").iterdir()] == ["good_x2.png"]
    lines = (tmp_path / "run" / "manifest.jsonl").read_text().splitlines()
    failed = [json.loads(line) for line in lines if '"failed"' in line]
    assert len(failed) == 1 and failed[0]["input"].endswith("bad.png")
    assert failed[0]["error_class"] == "TrainingDivergedError"
    assert "training diverged" in failed[0]["error"]


# ---------------------------------------------------------------------------------- locks


def test_second_writer_of_an_output_exits_9_and_leaves_the_first_ones_partial(tmp_path):
    out = tmp_path / "o.zarr"
    partial = tmp_path / "o.zarr.partial"
    with OutputLock(out):  # the first writer, still running
        partial.mkdir()
        (partial / "zarr.json").write_text("{}")
        code = main(["upscale", str(SMALL), str(out), "--scale", "2", *TINY])
        assert code == EXIT["locked"]
        assert (partial / "zarr.json").read_text() == "{}"  # untouched
    assert not output_lock_path(out).exists()  # released and removed
    assert not out.exists()


def test_lock_refusal_names_the_holder(tmp_path):
    out = tmp_path / "o.png"
    with OutputLock(out), pytest.raises(LockedError, match=rf"o\.png: another zssr is "
                                                           rf"writing this output \(pid {os.getpid()}"):
        OutputLock(out).__enter__()


@pytest.mark.parametrize("plant", ["symlink", "hardlink"])
def test_a_link_planted_at_the_lock_name_is_refused_and_its_target_untouched(tmp_path, plant):
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    lock = output_lock_path(tmp_path / "o.png")
    (os.symlink if plant == "symlink" else os.link)(target, lock)
    with pytest.raises(WriteError, match=r"\.o\.png\.lock: the lock file is"):
        OutputLock(tmp_path / "o.png").__enter__()
    assert target.read_text() == "keep me\n"
    assert main(["upscale", str(SMALL), str(tmp_path / "o.png"), "--scale", "2", *TINY]) == 7
    assert target.read_text() == "keep me\n" and not (tmp_path / "o.png").exists()


def test_a_file_system_without_locks_is_a_write_error(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(WriteError, match=r"\.o\.png\.lock: cannot lock the file: No locks"):
        OutputLock(tmp_path / "o.png").__enter__()


# -------------------------------------------------------------------------------- signals


def _start_upscale(src: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([str(ZSSR), "upscale", str(src), str(out), "--scale", "2",
                             "--tile", "32", *TINY], env=env, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_partial(folder: Path, out: Path, proc: subprocess.Popen) -> list[str]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        found = [n for n in _leftovers(folder, out) if not n.endswith(".lock")]
        if found:
            return found
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no partial output of {out.name} appeared (exit {proc.poll()})")


@pytest.mark.parametrize(("name", "sig", "code"), [
    ("o.zarr", signal.SIGTERM, 143), ("o.tif", signal.SIGTERM, 143),
    ("o.zarr", signal.SIGHUP, 129)])
def test_stop_signal_mid_write_exits_128_plus_signal_and_leaves_nothing(tmp_path, name, sig,
                                                                        code):
    src = _noise_png(tmp_path / "in.png")
    out = tmp_path / name
    proc = _start_upscale(src, out)
    _wait_for_partial(tmp_path, out, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"stopped by {signal.Signals(sig).name}" in err
    assert _leftovers(tmp_path, out) == [] and not out.exists()


def test_sigkill_leaves_a_partial_that_the_next_run_removes(tmp_path):
    src = _noise_png(tmp_path / "in.png")
    out = tmp_path / "o.tif"
    proc = _start_upscale(src, out)
    stale = _wait_for_partial(tmp_path, out, proc)
    proc.kill()
    proc.wait(timeout=30)
    assert set(stale) <= set(_leftovers(tmp_path, out))  # SIGKILL cannot be handled
    code = main(["upscale", str(SMALL), str(out), "--scale", "2", *TINY])
    assert code == 0 and out.is_file()
    assert _leftovers(tmp_path, out) == []


def test_sigterm_stops_a_run_with_143_and_frees_its_folder(tmp_path):
    """``zssr run`` (synchronous scheduler): SIGTERM inside inference exits 143, leaves no
    temporary in outputs/, and releases the run folder's lock for the next run."""
    from pipeline.locking import FolderLock

    (tmp_path / "in").mkdir()
    _noise_png(tmp_path / "in" / "a.png")
    run = tmp_path / "run"
    proc = subprocess.Popen([str(ZSSR), "run", str(tmp_path / "in"), "--out", str(run),
                             "--scale", "2", "--scheduler", "synchronous", "--tile", "32", *TINY],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not list((run / "tiles").rglob("*.done")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert list((run / "outputs").iterdir()) == []
    with FolderLock(run / ".lock", lambda holder: holder):
        pass  # free: the killed run released it


def test_stale_partials_are_only_what_a_writer_of_that_output_leaves(tmp_path):
    from pipeline.locking import clean_stale_partials, step_workdir

    out = tmp_path / "o.tif"
    steps = step_workdir(out)  # gradual SR's intermediate folder, as a killed run leaves it
    (steps / "step0.zarr").mkdir()
    temp = tmp_path / ".o.tif.tiles-0123abcd"
    temp.write_bytes(b"x")
    keep = [tmp_path / ".o.tif.steps-notmine", tmp_path / ".other.tif.tiles-0123abcd",
            tmp_path / "o.tif.partial", tmp_path / "notes.txt"]
    for path in keep:
        path.write_text("user's")
    linked = tmp_path / ".o.tif.steps-abcdefgh"
    linked.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "f").write_text("user's")
    removed = clean_stale_partials(out)
    assert sorted(removed) == sorted([steps, temp])
    assert not steps.exists() and not temp.exists()
    assert all(path.read_text() == "user's" for path in keep)
    assert (tmp_path / "elsewhere" / "f").read_text() == "user's" and linked.is_symlink()


def test_stop_signals_restore_the_previous_handlers():
    from pipeline.cli.main import stop_signals_as_interrupts

    before = signal.getsignal(signal.SIGTERM)
    hook_before = sys.unraisablehook
    with stop_signals_as_interrupts():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
    assert sys.unraisablehook is hook_before


def test_a_stop_raised_inside_a_weakref_callback_is_delivered_again():
    """CI once saw SIGTERM's Terminated land inside a WeakSet callback, where Python drops
    exceptions: the job ran on and exited 0 with its output written.  The stop must come
    back to the main thread instead."""
    import time
    import weakref

    from pipeline.cli.main import stop_signals_as_interrupts
    from pipeline.errors import Terminated

    class Thing:
        pass

    def callback(_ref) -> None:
        signal.raise_signal(signal.SIGTERM)  # the handler runs here, inside the callback
        for _ in range(1000):
            pass

    with pytest.raises(Terminated) as caught:
        with stop_signals_as_interrupts():
            thing = Thing()
            ref = weakref.ref(thing, callback)  # noqa: F841 - kept alive so it calls back
            del thing  # the callback runs now; its Terminated is dropped by Python
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                time.sleep(0.001)
    assert caught.value.signum == signal.SIGTERM
