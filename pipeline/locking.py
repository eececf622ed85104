"""An exclusive, non-blocking lock file: a second run on the same folder refuses.

``fcntl.flock`` locks die with their process, so a killed run never leaves a
stale lock behind; the file only records who holds it, for the error message.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

from .errors import LockedError

__all__ = ["FolderLock"]


class FolderLock:
    """``with FolderLock(path, refusal):`` holds ``path`` or raises :class:`LockedError`.

    ``refusal(holder)`` builds the one-line message from the holder's description.
    """

    def __init__(self, path: Path, refusal: Callable[[str], str]) -> None:
        self.path = Path(path)
        self._refusal = refusal
        self._fh = None

    def __enter__(self) -> FolderLock:
        fh = open(self.path, "a+")  # noqa: SIM115 - held open while locked
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise LockedError(self._refusal(holder)) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {os.uname().nodename} "
                 f"since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.seek(0)
            self._fh.truncate()
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
