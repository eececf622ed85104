"""The driver's view of a run folder (:class:`RunDir`): the lock, the manifest, the log and
the config; the tasks use only :class:`~pipeline.runs.rundir.RunPaths`.

On a local folder the lock is ``fcntl``'s (:class:`~pipeline.locking.FolderLock`), the
manifest an append-only ``manifest.jsonl`` (fsync'ed per line) and the log
``log.jsonl``.  On object storage (:mod:`pipeline.runs.remote`) the lock is the lease,
the manifest's records are read once on entry (this run holds the lease: no one else
writes them), each new one is its own object, and all are compacted into
``manifest.jsonl`` on exit; the log is a local temporary file uploaded with each renewal
and on exit.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from io_adapters.errors import WriteError
from io_adapters.output_safety import RUN_LOCK, RUN_MANIFEST, check_no_links, open_append
from io_adapters.s3_objects import (
    check_bucket,
    delete_objects,
    download,
    get_bytes,
    list_under,
    put_bytes,
)
from io_adapters.vsi import is_vsi
from pipeline.locking import FolderLock
from pipeline.runs.remote import LEASE_NAME, RemoteLease
from pipeline.runs.rundir import RunPaths, run_root

__all__ = ["RunDir", "JsonLinesHandler", "STATES"]

log = logging.getLogger(__name__)

_PUSH_LOCK = threading.Lock()
STATES = ("queued", "trained", "inferred", "finalized", "failed")
_RUN_FILES = (RUN_MANIFEST, "log.jsonl", "config.yaml", "report.json", "report.html")
_RUN_FOLDERS = ("weights", "work", "tiles", "entries", "report_assets", "outputs", "claims")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


class JsonLinesHandler(logging.Handler):
    """A logging handler writing one JSON object per record (``extra=`` fields kept)."""

    _SKIP = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._fh = open_append(path)  # never through a link; closed in close()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "zssr_logged", False):  # RunDir.event wrote it already
            return
        try:
            line = {"time": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc)
                    .isoformat(timespec="milliseconds"), "level": record.levelname,
                    "logger": record.name, "message": record.getMessage()}
            line.update({k: v for k, v in vars(record).items() if k not in self._SKIP})
            self._fh.write(json.dumps(line, default=str) + "\n")
            self._fh.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)

    def close(self) -> None:
        self._fh.close()
        super().close()


class RunDir(RunPaths):
    """The driver's view: lock, manifest, config.  Use as a context manager (holds the lock).

    On object storage the lock is the lease of :mod:`pipeline.runs.remote`; the manifest's
    records are read once on entry (this run holds the lease: no one else writes them),
    each new one is its own object, and all are compacted into ``manifest.jsonl`` on exit;
    the log is a local temporary file uploaded with each renewal and on exit.
    """

    def __init__(self, root: str | Path) -> None:
        root = run_root(root)
        object.__setattr__(self, "root", root if is_vsi(root) else Path(root).absolute())
        object.__setattr__(self, "_lock_fh", None)
        object.__setattr__(self, "_scratch", None)  # remote: a private local folder
        object.__setattr__(self, "_records", None)  # remote: the manifest, read on entry
        object.__setattr__(self, "_record_names", [])  # remote: record objects read
        object.__setattr__(self, "_run_id", "")

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.root)

    @property
    def log_path(self) -> Path:
        """Where the driver appends ``log.jsonl`` (remote: a local copy, uploaded)."""
        return (self._scratch if self.remote else self.root) / "log.jsonl"

    @property
    def scratch(self) -> Path:
        """A private local folder of the driver (remote run folders only)."""
        if self._scratch is None:
            raise RuntimeError("a local run folder has no scratch folder")
        return self._scratch

    def __enter__(self) -> RunDir:
        if self.remote:
            return self._enter_remote()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            from io_adapters.errors import WriteError

            raise WriteError(f"--out {self.root}: cannot create the run directory: "
                             f"{exc.strerror or exc}") from exc
        root = self.root
        lock = FolderLock(root / RUN_LOCK, lambda holder: (
            f"{root}: another zssr run is using this run directory ({holder}); "
            "wait for it to finish or choose another --out"))
        lock.__enter__()
        object.__setattr__(self, "_lock_fh", lock)
        try:
            self.check_tree()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _enter_remote(self) -> RunDir:
        url = self.url()
        check_bucket(url)
        scratch = Path(tempfile.mkdtemp(prefix=".zssr-run-"))
        object.__setattr__(self, "_scratch", scratch)
        lease = RemoteLease(self.url(self.root / LEASE_NAME), lambda holder: (
            f"{url}: another zssr run is using this run folder ({holder}); wait for it to "
            "finish or choose another --out"), on_renew=self._push_log)
        try:
            lease.__enter__()
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        object.__setattr__(self, "_lock_fh", lease)
        try:
            object.__setattr__(self, "_run_id", _dt.datetime.now(_dt.timezone.utc).strftime(
                "%Y%m%dT%H%M%S%fZ") + f"-{os.getpid()}")
            download(self.url(self.root / "log.jsonl"), self.log_path)  # the log continues
            self._read_records()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _read_records(self) -> None:
        records: list[dict[str, Any]] = []
        got = get_bytes(self.url(self.root / RUN_MANIFEST))
        lines = [] if got is None else got[0].decode("utf-8", "replace").splitlines()
        names = [n for n in list_under(self.url(self.root / "manifest")) if n.endswith(".json")]
        for name in names:  # sorted: run id (start time), then sequence number
            one = get_bytes(self.url(self.root / "manifest" / name))
            if one is not None:
                lines.append(one[0].decode("utf-8", "replace"))
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s: skipping a damaged manifest line", self.url())
        object.__setattr__(self, "_records", records)
        object.__setattr__(self, "_record_names", names)

    def _push_log(self) -> None:
        """``log.jsonl`` to the bucket (one PUT; the renewal thread and the exit both call
        it, one at a time)."""
        with _PUSH_LOCK:
            if self._scratch is not None and self.log_path.exists():
                put_bytes(self.url(self.root / "log.jsonl"), self.log_path.read_bytes())

    def check_tree(self) -> None:
        """Refuse, before any work, a run directory where a link was planted at a name the
        run writes (a file, or anywhere in a folder it writes into)."""
        for name in (*_RUN_FILES, *_RUN_FOLDERS):
            path = self.root / name
            if os.path.lexists(path):
                check_no_links(path)

    def check_lease(self) -> None:
        """Stop (:class:`~pipeline.errors.LockedError`) when the remote lease was taken over."""
        if isinstance(self._lock_fh, RemoteLease):
            self._lock_fh.check()

    def __exit__(self, *exc: object) -> None:
        lock = self._lock_fh
        try:
            if isinstance(lock, RemoteLease) and lock.lost is None:
                try:  # the work is done: a failure here costs tidiness, not results
                    self._compact()
                    self._push_log()
                except WriteError as error:
                    log.warning("%s: the manifest or the log was not tidied up (%s); the "
                                "next run reads the records as they are", self.url(), error)
        finally:
            if lock is not None:
                lock.__exit__(*exc)
                object.__setattr__(self, "_lock_fh", None)
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
                object.__setattr__(self, "_scratch", None)

    def _compact(self) -> None:
        """Every record into ``manifest.jsonl`` (one PUT), then the record objects go
        (a crash between the two leaves duplicates, which mean the same)."""
        if self._records is None:
            return
        names = [n for n in list_under(self.url(self.root / "manifest")) if n.endswith(".json")]
        if not names:
            return
        text = "".join(json.dumps(r, default=str) + "\n" for r in self._records)
        put_bytes(self.url(self.root / RUN_MANIFEST), text.encode())
        delete_objects(self.url(self.root / "manifest"), names)

    def record(self, key: str, state: str, **fields: Any) -> None:
        """Append one manifest line ``{time, key, state, ...}``."""
        if state not in STATES:
            raise ValueError(f"state {state!r} unknown; expected one of {STATES}")
        line = {"time": _now(), "key": key, "state": state, **fields}
        if self.remote:
            self.check_lease()
            n = len(self._records)
            put_bytes(self.url(self.root / "manifest" / f"{self._run_id}-{n:08d}.json"),
                      json.dumps(line, default=str).encode())
            self._records.append(line)
            return
        with open_append(self.root / RUN_MANIFEST) as fh:
            fh.write(json.dumps(line, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def manifest(self) -> Iterator[dict[str, Any]]:
        """Every manifest line, oldest first (a torn last line from a crash is skipped)."""
        if self.remote:
            yield from list(self._records or [])
            return
        path = self.root / RUN_MANIFEST
        if not path.exists():
            return
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: skipping a damaged manifest line", path)

    def last_states(self) -> dict[str, dict[str, Any]]:
        """The latest manifest record of each key."""
        return {rec["key"]: rec for rec in self.manifest()}

    def queued_records(self) -> dict[str, dict[str, Any]]:
        """``{key: its latest "queued" record}`` (input location, output, settings id)."""
        return {rec["key"]: rec for rec in self.manifest()
                if rec.get("state") == "queued" and "key" in rec}

    def output_owners(self) -> dict[str, str]:
        """``{output path: key}``: the key that last claimed each output, else the key of
        its latest finalized record."""
        owners = {rec["output"]: rec["key"] for rec in self.manifest()
                  if rec.get("state") == "finalized" and "output" in rec}
        folder = self.root / "claims"
        names = [n for n in list_under(self.url(folder)) if n.endswith(".json")] \
            if self.remote else [p.name for p in sorted(folder.glob("*.json"))]
        for name in names:
            try:
                claim = json.loads(self.read_bytes(folder / name) or b"")
                owners[str(claim["output"])] = str(claim["key"])
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("%s: skipping a damaged output claim", folder / name)
        return owners

    def event(self, message: str, **fields: Any) -> None:
        """One structured line in ``log.jsonl`` (and an INFO log record)."""
        line = {"time": _now(), "level": "INFO", "logger": "pipeline.runs.run", "message": message,
                **fields}
        with open_append(self.log_path) as fh:
            fh.write(json.dumps(line, default=str) + "\n")
        log.info("%s %s", message, " ".join(f"{k}={v}" for k, v in fields.items()),
                 extra={"zssr_logged": True})

    def save_config(self, data: dict[str, Any]) -> None:
        self.write_file(self.root / "config.yaml",
                        yaml.safe_dump(data, sort_keys=False, default_flow_style=None).encode())
