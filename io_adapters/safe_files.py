"""The file primitives of the output rule: every byte zssr writes goes through these.

New files with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (which fails on any link, even a
dangling one), temporary folders with ``mkdir`` (which never follows a link),
append-only logs with ``O_NOFOLLOW``, results moved into place with ``os.replace``,
folders made below a root with every component checked by ``lstat``.  The rule that
decides *whether* a path may be written (never an input, never a control file, confined,
overwrite only what zssr wrote) is :mod:`io_adapters.output_safety`, which re-exports
these.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import uuid
from pathlib import Path

from .errors import WriteError

__all__ = ["UnsafeOutputError", "token", "temp_name", "check_no_links", "create_file",
           "new_temp_file", "new_temp_dir", "replace_onto", "write_bytes_atomic",
           "write_text_atomic", "open_append", "make_dirs", "remove_tree"]

_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_TRIES = 4  # fresh temporary names tried when one is taken (by a planted link, say)


class UnsafeOutputError(WriteError):
    """A write that would break the output rule (see the module doc): exit code 7."""


def token() -> str:
    """The random part of a temporary name (a function so tests can make it predictable)."""
    return uuid.uuid4().hex[:8]


def temp_name(final: Path, tag: str) -> Path:
    """``.<name>.<tag>-<8 hex>`` beside ``final`` (same file system, for ``os.replace``)."""
    return final.parent / f".{final.name}.{tag}-{token()}"


def _refuse(path: Path, problem: str) -> UnsafeOutputError:
    return UnsafeOutputError(f"{path}: {problem}")


def _link_refusal(path: Path, link: Path) -> UnsafeOutputError:
    same = os.path.abspath(link) == os.path.abspath(path)
    where = "is" if same else f"goes through {link}, which is"
    return _refuse(path, f"{where} a symbolic link; zssr never writes through links (they "
                         "could lead outside the output folder); remove the link or choose "
                         "another output")


def check_no_links(tree: Path) -> None:
    """Refuse a folder tree that holds a symbolic link anywhere (before writing into it)."""
    tree = Path(tree)
    if os.path.islink(tree):
        raise _link_refusal(tree, tree)
    for folder, dirs, files in os.walk(tree, followlinks=False):
        for name in dirs + files:
            p = Path(folder) / name
            if os.path.islink(p):
                raise _link_refusal(tree, p)


def create_file(path: Path, mode: int = 0o644) -> int:
    """A new file at ``path`` (fails on anything there, a dangling link included): an fd."""
    try:
        return os.open(path, _NEW_FILE, mode)
    except FileExistsError:
        if os.path.islink(path):
            raise _link_refusal(Path(path), Path(path)) from None
        raise


def _new_temp(final: Path, tag: str, make) -> Path:
    last: OSError | None = None
    for _ in range(_TRIES):
        tmp = temp_name(final, tag)
        try:
            make(tmp)
            return tmp
        except FileExistsError as exc:  # taken (a planted link, a leftover): another name
            last = exc
    raise _refuse(final, f"cannot create a temporary beside it ({last}); every name tried "
                         "was taken")


def new_temp_file(final: Path, tag: str = "tmp") -> tuple[Path, int]:
    """A fresh hidden file beside ``final`` (``O_EXCL | O_NOFOLLOW``): ``(path, fd)``."""
    fds: list[int] = []
    path = _new_temp(final, tag, lambda p: fds.append(os.open(p, _NEW_FILE, 0o644)))
    return path, fds[0]


def new_temp_dir(final: Path, tag: str) -> Path:
    """A fresh private folder beside ``final`` (``mkdir`` never follows a link)."""
    return _new_temp(final, tag, lambda p: os.mkdir(p, 0o700))


def replace_onto(src: Path, final: Path) -> Path:
    """Move ``src`` onto ``final`` atomically; a link at ``final`` is refused and an
    existing folder there is moved aside and deleted (callers checked it is ours)."""
    if os.path.islink(final):
        raise _link_refusal(final, final)
    try:
        if os.path.isdir(final):
            old = temp_name(final, "old")
            os.rename(final, old)  # rename fails on an existing target name: never follows
            os.replace(src, final)
            remove_tree(old)
        else:
            os.replace(src, final)
    except OSError as exc:
        raise WriteError(f"{final}: cannot move the finished output into place: {exc}") from exc
    return final


def write_bytes_atomic(final: Path, data: bytes) -> Path:
    """``data`` to a fresh temporary, fsync, then :func:`replace_onto` ``final``."""
    final = Path(final)
    tmp, fd = new_temp_file(final, "tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return replace_onto(tmp, final)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def write_text_atomic(final: Path, text: str) -> Path:
    return write_bytes_atomic(final, text.encode("utf-8"))


def open_append(path: Path):
    """An append-only text handle on ``path`` (created if missing); a link is refused."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.islink(path):
            raise _link_refusal(Path(path), Path(path)) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _refuse(Path(path), "is not a regular file; zssr appends only to its own logs")
    return os.fdopen(fd, "a", encoding="utf-8")


def make_dirs(path: Path, *, root: Path) -> Path:
    """Create ``path`` and its missing parents below ``root``; every component must be a
    real folder (a link there is refused, never followed)."""
    path, base = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    if not path.is_relative_to(base):
        raise _refuse(path, f"outside the output folder {base}")
    current = base
    for part in path.relative_to(base).parts:
        current = current / part
        try:
            os.mkdir(current)
        except FileExistsError:
            pass
        st = os.lstat(current)
        if stat.S_ISLNK(st.st_mode):
            raise _link_refusal(path, current)
        if not stat.S_ISDIR(st.st_mode):
            raise _refuse(path, f"{current} is not a folder")
    return path


def remove_tree(path: Path) -> None:
    """Delete a file, a link (the link only) or a folder tree (links inside: unlinked)."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
