"""A stop signal that lands while an output lock is being taken leaves no lock file.

``tests/test_corpus_adversarial.py`` signals ``zssr upscale`` as soon as ``.sr.dcm.lock``
appears; under load the signal sometimes landed inside ``FolderLock.__enter__`` (after the
file was created, before the lock was held), and since ``__exit__`` never runs for a
failed ``__enter__`` the file stayed.  Here the signal is sent from inside the acquisition,
deterministically.
"""

from __future__ import annotations

import os
import signal

import pytest

import pipeline.locking as locking
from pipeline.errors import LockedError
from pipeline.locking import OutputLock, output_lock_path


class Stopped(Exception):
    pass


@pytest.fixture
def raising_sigterm():
    def handler(signum, frame):
        raise Stopped(signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def test_sigterm_inside_the_lock_acquisition_leaves_no_lock_file(tmp_path, monkeypatch,
                                                                raising_sigterm):
    real_open = locking.open_lock_file

    def open_then_signal(path):
        fd = real_open(path)
        os.kill(os.getpid(), signal.SIGTERM)  # lands between the open and the flock
        return fd

    monkeypatch.setattr(locking, "open_lock_file", open_then_signal)
    out = tmp_path / "sr.dcm"
    with pytest.raises(Stopped):
        with OutputLock(out):
            pytest.fail("the body must not run: the stop comes first")
    assert not output_lock_path(out).exists()
    assert os.listdir(tmp_path) == []


def test_a_refused_acquisition_leaves_the_holders_lock_alone(tmp_path):
    out = tmp_path / "sr.png"
    with OutputLock(out):
        with pytest.raises(LockedError, match="another zssr is writing this output"):
            with OutputLock(out):
                pytest.fail("two holders")
        assert output_lock_path(out).exists()  # still the first writer's
        assert "pid" in output_lock_path(out).read_text()
    assert not output_lock_path(out).exists()


def test_a_signal_after_the_lock_is_held_releases_it(tmp_path, monkeypatch, raising_sigterm):
    real_pwrite = os.pwrite

    def pwrite_then_signal(fd, data, offset):
        n = real_pwrite(fd, data, offset)
        os.kill(os.getpid(), signal.SIGTERM)  # held, not yet returned from __enter__
        return n

    monkeypatch.setattr(locking.os, "pwrite", pwrite_then_signal)
    out = tmp_path / "sr.tif"
    with pytest.raises(Stopped):
        with OutputLock(out):
            pytest.fail("the body must not run")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []
    with OutputLock(out):  # and nothing stays locked
        pass
