"""The fetch cache: one per process (a Dask worker, a ``zssr run``), so that a whole-file
input by URL opened again (the run's train task, each infer batch, finalize) is not
downloaded again; :func:`io_adapters.fetch.open_remote` uses it.

The copies are kept in one private folder per process (``mkdtemp`` in the temporary folder
of the process when this module is loaded, mode 0700, the files read-only), keyed by the
URL *and* the object's identity at open time: its size and ETag / last-modified (``VersionId``,
``generation``) as fsspec's ``info`` gives them, or for a series the listing's names, sizes
and ETags.  Each open asks for that identity (one HEAD, or one listing), so an object
replaced under the same key is fetched again and stale content is never read; an object
with no ETag nor last-modified (some HTTP servers) is not cached.  A copy is kept only when
the backend's read was made against the same identity (s3fs reads with ``If-Match`` on
the ETag of its own HEAD, compared with ours).  Each reader still gets its own private
folder (removed on close), holding hard links to the cached files (a local copy across
file systems); it holds a reference to its entry, so an entry is never evicted while a
reader uses it, and concurrent readers in the process share one download (the others wait
for it).  The cache is bounded by ``ZSSR_FETCH_CACHE_BYTES`` (default 2 GiB): least
recently used unreferenced entries are evicted to make room, an input that cannot fit is
read through a private copy as without the cache; ``0`` disables the cache (each open
downloads, as before).  The folder is removed at process exit (``atexit``; a forked child
starts its own).  The size guard and the one-line errors are the same with or without it.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["FetchCache", "fetch_cache", "cache_limit", "CACHE_ENV", "DEFAULT_CACHE_BYTES",
           "info_version", "info_etag", "listing_identity", "link_entry"]

log = logging.getLogger(__name__)

CACHE_ENV = "ZSSR_FETCH_CACHE_BYTES"
DEFAULT_CACHE_BYTES = 2 * 1024**3
#: Where the cache's folder is made: the process's temporary folder when this module is
#: loaded (``TMPDIR``), the same for the whole life of the process.
_CACHE_PARENT = tempfile.gettempdir()
_VERSION_KEYS = ("ETag", "etag", "VersionId", "generation", "LastModified", "last_modified",
                 "Last-Modified", "updated")


def cache_limit() -> int:
    """Bytes the fetch cache may hold (``ZSSR_FETCH_CACHE_BYTES``; 0: no cache)."""
    text = os.environ.get(CACHE_ENV, "").strip()
    if not text:
        return DEFAULT_CACHE_BYTES
    try:
        return max(0, int(float(text)))
    except ValueError:
        log.warning("%s=%r is not a number of bytes; the default %d is used", CACHE_ENV,
                    text, DEFAULT_CACHE_BYTES)
        return DEFAULT_CACHE_BYTES


def info_version(info: dict[str, Any]) -> tuple[str, ...] | None:
    """What tells one version of an object from another beyond its size (ETag,
    last-modified…); None when the backend gives none (not cacheable)."""
    tags = tuple(str(info.get(k) or "") for k in _VERSION_KEYS)
    return tags if any(tags) else None


def info_etag(info: dict[str, Any] | None) -> str:
    """The ETag that fsspec's ``info`` (or a backend file's ``details``) names; ``""``."""
    return str((info or {}).get("ETag") or (info or {}).get("etag") or "")


def listing_identity(objects: list[dict[str, Any]]) -> tuple | None:
    """The objects' identity at open time (names, sizes, versions); None if one of them
    has no version to tell (not cacheable)."""
    out = []
    for obj in objects:
        version = info_version(obj)
        if version is None:
            return None
        out.append((str(obj["name"]), int(obj.get("size") or 0), version))
    return tuple(out)


class _Entry:
    __slots__ = ("key", "folder", "local", "size", "refs", "stale")

    def __init__(self, key: tuple, folder: Path, local: str, size: int) -> None:
        self.key, self.folder, self.local, self.size = key, folder, local, size
        self.refs, self.stale = 0, False

    def present(self) -> bool:
        local = self.folder / self.local
        return local.is_dir() or local.is_file()


class FetchCache:
    """The process's cache of whole-file copies (module doc): entries keyed by
    ``(url, kind, identity)``, least recently used first, unreferenced ones evicted to
    stay within the byte limit; thread-safe."""

    def __init__(self, parent: str | Path) -> None:
        self.parent, self.pid = Path(parent), os.getpid()
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._loading: dict[tuple, threading.Lock] = {}
        self._root: Path | None = None
        self._reserved = 0
        self.fetches = 0  # downloads made for the cache (tests, debugging)

    @property
    def used(self) -> int:
        with self._lock:
            return sum(e.size for e in self._entries.values())

    def root(self) -> Path:
        """The cache's folder, made on first use (mode 0700), removed at exit."""
        with self._lock:
            if self._root is None or not self._root.is_dir():
                self._root = Path(tempfile.mkdtemp(prefix="zssr-fetch-cache-",
                                                   dir=self.parent))
                atexit.register(self.close)
            return self._root

    def acquire(self, key: tuple, size: int, limit: int,
                fetch: Callable[[Path], str]) -> _Entry | None:
        """The entry for ``key`` with one more reference: found, or fetched by
        ``fetch(folder)`` (which fills the new folder and says the path to open in it);
        None where it cannot fit within ``limit`` (the caller copies privately)."""
        self._reserve(0, limit)  # (a limit lowered since: trimmed first)
        entry = self._hit(key)
        if entry is not None:
            return entry
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one download per key; the others wait for it and share it
            try:
                entry = self._hit(key)
                if entry is not None:
                    return entry
                if not self._reserve(size, limit):
                    return None
                try:
                    folder = Path(tempfile.mkdtemp(prefix="e-", dir=self.root()))
                except OSError:
                    self._unreserve(size)
                    raise
                try:
                    local = fetch(folder)
                    for path in folder.rglob("*"):
                        if path.is_file():
                            os.chmod(path, 0o400)
                except BaseException:
                    self._unreserve(size)
                    _rmtree(folder)
                    raise
                with self._lock:
                    self._reserved -= size
                    self.fetches += 1
                    entry = _Entry(key, folder, local, size)
                    entry.refs = 1
                    for other in list(self._entries.values()):  # older versions of the URL
                        if other.key[:2] == key[:2]:
                            other.stale = True
                            if other.refs == 0:
                                self._drop(other)
                    self._entries[key] = entry
                    return entry
            finally:
                with self._lock:
                    if self._loading.get(key) is loading:
                        del self._loading[key]

    def release(self, entry: _Entry) -> None:
        with self._lock:
            entry.refs -= 1
            if entry.refs <= 0 and (entry.stale or self._entries.get(entry.key) is not entry):
                self._drop(entry)

    def close(self) -> None:
        """Remove the folder and forget the entries (at exit; only the process that made
        the folder removes it)."""
        with self._lock:
            root, self._root = self._root, None
            self._entries.clear()
        if root is not None and os.getpid() == self.pid:
            _rmtree(root)

    def _hit(self, key: tuple) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if not entry.present():  # removed behind our back (a temp cleaner): fetch again
                self._drop(entry)
                return None
            entry.refs += 1
            self._entries.move_to_end(key)
            return entry

    def _reserve(self, size: int, limit: int) -> bool:
        """Room for ``size`` more bytes within ``limit``, evicting unreferenced entries
        (least recently used first)."""
        with self._lock:
            if size > limit:
                return False
            used = sum(e.size for e in self._entries.values()) + self._reserved
            for entry in list(self._entries.values()):
                if used + size <= limit:
                    break
                if entry.refs == 0:
                    used -= entry.size
                    self._drop(entry)
            if used + size > limit:
                return False
            self._reserved += size
            return True

    def _unreserve(self, size: int) -> None:
        with self._lock:
            self._reserved -= size

    def _drop(self, entry: _Entry) -> None:  # (with the lock held)
        if self._entries.get(entry.key) is entry:
            del self._entries[entry.key]
        _rmtree(entry.folder)


def _rmtree(folder: Path | str) -> None:
    shutil.rmtree(folder, ignore_errors=True)  # (read-only files in writable folders)


_CACHE: FetchCache | None = None
_CACHE_LOCK = threading.Lock()


def fetch_cache() -> FetchCache:
    """This process's cache (a forked child makes its own)."""
    global _CACHE
    with _CACHE_LOCK:
        if _CACHE is None or _CACHE.pid != os.getpid():
            _CACHE = FetchCache(_CACHE_PARENT)
        return _CACHE


def link_entry(entry: _Entry, folder: Path) -> Path:
    """The entry's files in the reader's own ``folder`` (hard links; copies across file
    systems); the path to open there."""
    for src in sorted(entry.folder.rglob("*")):
        target = folder / src.relative_to(entry.folder)
        if src.is_dir():
            target.mkdir(mode=0o700)
            continue
        try:
            os.link(src, target)
        except OSError:  # another file system, no hard links there
            shutil.copyfile(src, target)
            os.chmod(target, 0o400)
    return folder / entry.local
