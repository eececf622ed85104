"""Exclusive, non-blocking lock files: a second writer of the same output refuses (exit 9).

``fcntl.flock`` locks die with their process, so a killed run never leaves a
stale lock behind; the file only records who holds it, for the error message.

* :class:`FolderLock` — a run directory's ``.lock`` (``zssr run``) or a batch's output
  folder (``zssr batch``); the file stays.
* :class:`OutputLock` — one output of ``zssr upscale``: ``.<name>.lock`` beside it,
  removed on release.  While it is held, :func:`clean_stale_partials` may delete the
  temporaries an earlier, killed writer of that output left (no live writer owns them).

A lock file is opened with ``O_NOFOLLOW`` and must be a regular file with one link:
a link planted at its name (symbolic or hard, say to a file the user can write) is
refused with a :class:`~io_adapters.errors.WriteError`, never truncated or written.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from io_adapters._common import remove_path
from io_adapters.detect import stale_temps
from io_adapters.errors import WriteError
from pipeline.errors import LockedError

__all__ = ["FolderLock", "OutputLock", "open_lock_file", "clean_stale_partials",
           "abort_partials", "output_lock_path", "step_workdir"]

log = logging.getLogger(__name__)


def open_lock_file(path: Path) -> int:
    """A descriptor of the lock file ``path`` (created if missing), never through a link."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise WriteError(f"{path}: the lock file is a symbolic link; zssr never opens a "
                             "lock through a link: remove it") from None
        raise WriteError(f"{path}: cannot open the lock file: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(st.st_mode) else \
            f"a file with {st.st_nlink} hard links"
        raise WriteError(f"{path}: the lock file is {what}; zssr writes only its own lock "
                         "files: remove it")
    return fd


class FolderLock:
    """``with FolderLock(path, refusal):`` holds ``path`` or raises :class:`LockedError`.

    ``refusal(holder)`` builds the one-line message from the holder's description.
    ``remove=True`` deletes the file on release (a lock beside a user's output); the
    acquirer then checks that the name still holds the file it locked, else retries.
    """

    def __init__(self, path: Path, refusal: Callable[[str], str], *,
                 remove: bool = False) -> None:
        self.path = Path(path)
        self._refusal = refusal
        self._remove = remove
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        try:
            self._acquire()
        except BaseException:
            # a stop signal raises Terminated/KeyboardInterrupt from its Python handler at
            # any bytecode, so also between the lock file's creation and our flock;
            # __exit__ never runs for a failed __enter__ and the file would stay (seen in
            # tests/test_corpus_adversarial.py, which signals as soon as it appears)
            self._abandon()
            raise
        return self

    def _abandon(self) -> None:
        """After a failed or interrupted acquisition: release what we hold, and remove a
        lock file (``remove=True``) that nobody holds: we may have just created it.  A
        name that is not one of our lock files (a link, a hard-linked file) is left as
        it is: the refusal said so."""
        if self._fd is not None:
            self.__exit__()
            return
        if not self._remove:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:  # not a lock file of ours
            os.close(fd)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by another writer: theirs
        except OSError:
            os.close(fd)
            return
        self._fd = fd
        self.__exit__()  # unlinks it if the name still holds this file, then unlocks

    def _acquire(self) -> None:
        for _ in range(100):  # a release between our open and our flock: retry
            fd = open_lock_file(self.path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
                os.close(fd)
                raise LockedError(self._refusal(holder)) from None
            except OSError as exc:  # ENOLCK: a file system without locks (some NFS mounts)
                os.close(fd)
                raise WriteError(f"{self.path}: cannot lock the file: {exc.strerror or exc}; "
                                 "use a local folder") from None
            if self._same_file(fd):
                self._fd = fd
                break
            os.close(fd)  # the holder removed the file we locked: lock the new one
        else:  # pragma: no cover - a hundred releases in a row
            raise LockedError(self._refusal("a writer that keeps replacing the lock file"))
        os.ftruncate(fd, 0)
        os.pwrite(fd, (f"pid {os.getpid()} on {os.uname().nodename} "
                       f"since {time.strftime('%Y-%m-%d %H:%M:%S')}\n").encode(), 0)

    def _same_file(self, fd: int) -> bool:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def __exit__(self, *exc: object) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._remove and self._same_file(fd):
                self.path.unlink(missing_ok=True)  # before unlocking: no one holds a ghost
            else:
                os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def output_lock_path(output: Path) -> Path:
    """``<folder>/.<name>.lock``: the lock of one output file (or DICOM series folder)."""
    output = Path(output)
    return output.parent / f".{output.name}.lock"


class OutputLock(FolderLock):
    """The lock of one output of ``zssr upscale``: a second writer exits 9 at once."""

    def __init__(self, output: Path) -> None:
        output = Path(output)
        super().__init__(output_lock_path(output), lambda holder: (
            f"{output}: another zssr is writing this output ({holder}); wait for it to "
            "finish or choose another output"), remove=True)


def clean_stale_partials(output: Path) -> list[Path]:
    """Delete what a killed writer of ``output`` left: the writers' temporaries
    (``.<name>.<tag>-<8 hex>``), a Zarr store's ``<name>.partial`` and the folders of
    gradual SR's intermediate steps (:func:`step_workdir`).

    Call only while holding ``output``'s lock (:class:`OutputLock`, or the run directory's
    lock for outputs inside it): then no live writer owns them.  Returns what was removed.
    """
    output = Path(output)
    found = list(stale_temps(output))
    steps = re.compile(re.escape(f".{output.name}{STEPS_TAG}") + r"[a-z0-9_]{8}")
    try:
        found += [p for p in output.parent.iterdir() if steps.fullmatch(p.name)
                  and p.is_dir() and not p.is_symlink()]
    except OSError:
        pass
    if output.suffix.lower() == ".zarr":
        partial = output.with_name(output.name + ".partial")
        if partial.exists() or partial.is_symlink():
            found.append(partial)
    for path in found:
        log.info("removing %s, left by a writer that was killed", path)
        remove_path(path)
    return found


STEPS_TAG = ".steps-"


def step_workdir(output: Path) -> Path:
    """A new hidden folder beside ``output`` for the intermediate results of gradual SR
    (``.<name>.steps-XXXXXXXX``): named after the output so that
    :func:`clean_stale_partials` finds it when a killed run left it."""
    output = Path(output)
    parent = output.absolute().parent.resolve()  # never through a link at the output's name
    return Path(tempfile.mkdtemp(prefix=f".{output.name}{STEPS_TAG}", dir=parent))


def abort_partials(output: Path, *, settle: float = 0.1, rounds: int = 5) -> None:
    """After this process's writer of ``output`` was stopped mid-write (a signal), remove
    its temporaries, and again while they reappear: Zarr's I/O thread may still finish a
    chunk it had started after the main thread was interrupted (seen: 1 run in 5)."""
    for _ in range(rounds):
        if not clean_stale_partials(output):
            return
        time.sleep(settle)
