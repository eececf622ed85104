"""Error classes the CLI turns into one line and a distinct exit code.

Each class of problem has its own exit code so batch schedulers can tell a
bad input from a bad config from a full disk:

====  ==================================================================
code  meaning
====  ==================================================================
0     success
1     some images of a batch failed (the others completed)
2     usage or configuration error (bad flag, unknown key, bad value; also
      training that diverged: the remedy is a lower ``train.learning_rate``)
3     input missing or not a file/folder as expected
4     unsupported input format
5     corrupt or truncated input
6     input decodes but cannot be processed (dtype, size, geometry)
7     output cannot be written (permissions, path rules, disk full)
8     bad degradation kernel
9     another run holds the lock on this output
10    internal error (a bug: please report it with ``-v`` output)
129   hung up (SIGHUP)
130   interrupted (SIGINT, Ctrl-C)
143   terminated (SIGTERM: timeout, cron, systemd)
====  ==================================================================

Training that diverges (:class:`zssr.train.TrainingDivergedError`) exits 2, not
6: the input decoded and was normalised to the working range, so NaN weights
come from the step size; the fix is a config value (the message names it), and a
scheduler must not retry the same command unchanged.
"""

from __future__ import annotations

import errno
import re

__all__ = ["PipelineError", "InputError", "LockedError", "UsageError", "Terminated",
           "exit_code", "one_line", "EXIT"]

EXIT = {
    "ok": 0, "batch": 1, "usage": 2, "input": 3, "format": 4, "corrupt": 5, "data": 6,
    "write": 7, "kernel": 8, "locked": 9, "internal": 10, "hangup": 129, "interrupted": 130,
    "terminated": 143,
}


class PipelineError(Exception):
    """Base of the pipeline's own errors."""

    kind = "internal"


class UsageError(PipelineError, ValueError):
    """Bad command-line usage (conflicting flags, bad scale)."""

    kind = "usage"


class InputError(PipelineError, FileNotFoundError):
    """An input path is missing or of the wrong kind."""

    kind = "input"


class LockedError(PipelineError, RuntimeError):
    """Another run holds the lock on the output."""

    kind = "locked"


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread like Ctrl-C's KeyboardInterrupt, so the
    same ``with``/``finally`` blocks abort the writers and release the locks."""

    def __init__(self, signum: int, name: str) -> None:
        super().__init__(f"stopped by {name}; partial outputs removed")
        self.signum, self.name = signum, name

    def __reduce__(self):
        return Terminated, (self.signum, self.name)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """``text`` on one line: control characters (a newline or NUL in a file name, a
    library's multi-line message) escaped as Python does (``\\n``, ``\\x00``), nothing cut."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def exit_code(exc: BaseException) -> int:
    """The exit code of an exception's class (see the module table)."""
    if isinstance(exc, Terminated):
        return 128 + exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return EXIT["interrupted"]
    kind = getattr(type(exc), "kind", None)  # zssr, io_adapters, geometry, pipeline errors
    if kind in EXIT and kind != "internal":
        return EXIT[kind]
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return EXIT["input"]
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS,
                                                  errno.EACCES, errno.EPERM):
        return EXIT["write"]
    return EXIT["internal"]
