"""The run directory (``zssr run --out DIR``): manifest, config, weights, tile markers, lock.

Layout::

    DIR/.lock                   fcntl lock: one run at a time on DIR
    DIR/manifest.jsonl          append-only: one JSON line per image and state
    DIR/config.yaml             the resolved config of the latest run
    DIR/log.jsonl               structured log lines
    DIR/weights/<key>_s<i>.pt   trained weights + normaliser + history of step i
    DIR/kernels/<key>.npz       --kernel estimate: the image's kernel choice
    DIR/kernels/<key>.npy       ... its kernel alone (none for bicubic), for --kernel FILE.npy
    (kernel_groups: weights/<key>_s0_g<j>.pt and kernels/<key>_g<j>.npz of each group j)
    DIR/work/<key>/s<i>.zarr    the step's super-resolved image (working Zarr)
    DIR/tiles/<key>/s<i>/f<frame>_t<tile>.done   one marker per finished tile
    DIR/entries/<key>.json      the image's report entry
    DIR/report_assets/          crops and curves (PNG)
    DIR/outputs/                final images
    DIR/claims/<hash>.json      the key that last began committing each output
    DIR/report.json, report.html

An image *key* is ``<name>-<hash>``: the hash covers the input's identity
(path + size + modification time, or the content of a small file), the
resolved config, the scale and the tiling, so a changed config or scale
never mixes with earlier results.  A tile marker is written (atomically)
only after the tile's Zarr region is, so a marker always means "on disk".
An output's *owner* (the key whose result it holds, which may replace it) is
the key of its claim, written just before the output is committed, else of its
latest "finalized" record: a run killed between the commit and that record
still owns its output.

**On object storage** (``--out s3://bucket/prefix``, :mod:`pipeline.runs.remote`) the
root is the GDAL name ``/vsis3/bucket/prefix`` and every path above is an object under
the prefix: :class:`RunPaths`' IO methods (``exists``, ``read_bytes``, ``write_file``,
markers, listings, ``clear_work``) go to the bucket, working Zarr stores are written in
place, the lock is a lease object and the manifest one object per record
(:class:`RunDir`).  No worker needs a shared disk.

Every local file here is written by the one output rule (:mod:`io_adapters.output_safety`):
folders created with :func:`~io_adapters.output_safety.make_dirs` (a link at any
component below DIR is refused), files through fresh ``O_EXCL | O_NOFOLLOW``
temporaries renamed into place, the manifest and log appended with ``O_NOFOLLOW``.
:class:`RunPaths` is the picklable part the tasks use on workers (the run
directory must be on a file system the workers share); :class:`RunDir`
(lock, manifest) belongs to the driver.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from io_adapters.objstore import (
    delete_objects,
    delete_under,
    get_bytes,
    is_remote,
    list_under,
    object_exists,
    object_identity,
    put_bytes,
)
from io_adapters.output_safety import (
    RUN_LOCK,
    RUN_MANIFEST,
    UnsafeOutputError,
    check_no_links,
    check_output,
    make_dirs,
    new_temp_file,
    open_append,
    remove_tree,
    replace_onto,
    write_bytes_atomic,
)
from io_adapters.vsi import display_url, gdal_path, is_vsi
from pipeline.locking import FolderLock
from pipeline.runs.remote import LEASE_NAME, RemoteLease
from pipeline.source import SampleStats
from zssr.normalize import Normalizer
from zssr.train import TrainingHistory

__all__ = ["RunPaths", "RunDir", "image_key", "input_identity", "save_weights", "load_weights",
           "weights_bytes", "weights_from_bytes", "JsonLinesHandler", "atomic_write_text",
           "STATES", "run_root"]

log = logging.getLogger(__name__)

_PUSH_LOCK = threading.Lock()
STATES = ("queued", "trained", "inferred", "finalized", "failed")
_RUN_FILES = (RUN_MANIFEST, "log.jsonl", "config.yaml", "report.json", "report.html")
_RUN_FOLDERS = ("weights", "work", "tiles", "entries", "report_assets", "outputs", "claims")
SMALL_FILE = 4 << 20  # files up to this size are identified by their content
_WEIGHTS_FORMAT = 1


def atomic_write_text(path: Path, text: str, *, root: Path) -> None:
    """Write ``text`` to a fresh temporary beside ``path`` and rename it onto ``path``;
    missing folders are made below the run directory ``root`` (links refused)."""
    make_dirs(path.parent, root=root)
    write_bytes_atomic(path, text.encode("utf-8"))


def run_root(out: str | Path) -> Path:
    """The run folder's root for ``--out``: an ``s3://`` URL as its GDAL name
    (``/vsis3/bucket/prefix``: on object storage), a local folder as given."""
    text = str(out)
    if is_remote(text):
        bucket, _, prefix = text[len("s3://"):].strip("/").partition("/")
        if not bucket or not prefix:
            from pipeline.errors import UsageError

            raise UsageError(f"--out {text}: a run folder on object storage needs a prefix "
                             "under the bucket: s3://bucket/prefix")
        return Path(gdal_path(f"s3://{bucket}/{prefix}"))
    return Path(out)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class RunPaths:
    """Where each piece of a run lives (no IO; picklable for the workers)."""

    root: Path

    def weights(self, key: str, step: int, group: int | None = None) -> Path:
        return self.root / "weights" / f"{key}_s{step}{'' if group is None else f'_g{group}'}.pt"

    def kernel(self, key: str, group: int | None = None) -> Path:
        """``--kernel estimate``: the kernel choice (``.npz``), of band group ``group``."""
        return self.root / "kernels" / f"{key}{'' if group is None else f'_g{group}'}.npz"

    def store(self, key: str, step: int) -> Path:
        return self.root / "work" / key / f"s{step}.zarr"

    def mask_store(self, key: str, step: int) -> Path:
        return self.root / "work" / key / f"s{step}_mask.zarr"

    def tiles(self, key: str, step: int) -> Path:
        return self.root / "tiles" / key / f"s{step}"

    def marker(self, key: str, step: int, frame: int, tile: int) -> Path:
        return self.tiles(key, step) / f"f{frame}_t{tile}.done"

    def entry(self, key: str) -> Path:
        return self.root / "entries" / f"{key}.json"

    def claim(self, output: Path) -> Path:
        digest = hashlib.sha256(str(output).encode()).hexdigest()[:16]
        return self.root / "claims" / f"{digest}.json"

    def claim_output(self, key: str, output: Path) -> None:
        """Record that ``key`` is about to commit ``output`` (call just before it)."""
        self.write_file(self.claim(output), json.dumps({"output": str(output),
                                                        "key": key}).encode())

    # ------------------------------------------------------------------ IO, local or remote

    @property
    def remote(self) -> bool:
        """Whether the run folder is on object storage (the root a ``/vsis3/`` name)."""
        return is_vsi(self.root)

    def url(self, path: Path | None = None) -> str:
        """The ``s3://`` URL of ``path`` (default: the root) in a remote run folder."""
        return display_url(self.root if path is None else path)

    def exists(self, path: Path) -> bool:
        """Whether the file ``path`` of the run folder exists."""
        return object_exists(self.url(path)) if self.remote else os.path.exists(path)

    def read_bytes(self, path: Path) -> bytes | None:
        """The content of the file ``path``; None when there is none."""
        if self.remote:
            got = get_bytes(self.url(path))
            return None if got is None else got[0]
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            return None

    def write_file(self, path: Path, data: bytes) -> None:
        """Write ``data`` whole at ``path`` (atomic: a fresh temporary renamed onto it, or
        one PUT); folders are made below the root (links refused)."""
        if self.remote:
            put_bytes(self.url(path), data)
            return
        make_dirs(Path(path).parent, root=self.root)
        write_bytes_atomic(Path(path), data)

    def _names(self, folder: Path) -> list[str]:
        """The files under ``folder`` (relative names; none when it does not exist)."""
        if self.remote:
            return list_under(self.url(folder))
        folder = Path(folder)
        if not folder.is_dir():
            return []
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())

    @property
    def assets(self) -> Path:
        return self.root / "report_assets"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    def make_dir(self, folder: Path) -> Path:
        """``folder`` (inside the run directory) and its parents; a link there is refused
        (object storage has no folders: nothing to make)."""
        return folder if self.remote else make_dirs(folder, root=self.root)

    def check_output(self, output: Path, *, inputs: tuple[Path, ...]) -> Path:
        """The output rule for an image's output: inside ``outputs/``, not an input."""
        if self.remote:  # a key under outputs/ (inputs are never written through it)
            return output
        return check_output(output, inputs=inputs, root=self.outputs, overwrite=None)

    def output_exists(self, output: Path) -> bool:
        """Whether an image's output exists (a Zarr store on object storage: its
        ``zarr.json``, written last)."""
        if self.remote and Path(output).suffix.lower() == ".zarr":
            return self.store_exists(output)
        return self.exists(output) if self.remote else os.path.exists(output)

    def store_exists(self, store: Path) -> bool:
        """Whether the Zarr store ``store`` exists (its ``zarr.json``)."""
        return self.exists(store / "zarr.json") if self.remote else os.path.exists(store)

    def store_ready(self, store: Path) -> bool:
        """Whether a step's Zarr store exists; one that is (or holds) a link is refused."""
        if self.remote:
            return self.store_exists(store)
        if not os.path.lexists(store):
            return False
        check_no_links(store)
        return True

    def mark_tile(self, key: str, step: int, frame: int, tile: int) -> None:
        """Record a finished tile (call only after its region is written)."""
        path = self.marker(key, step, frame, tile)
        if self.remote:
            put_bytes(self.url(path), b"")
            return
        self.make_dir(path.parent)
        tmp, fd = new_temp_file(path, "tmp")
        os.close(fd)
        replace_onto(tmp, path)

    def clear_tiles(self, key: str, step: int) -> None:
        """Forget the tile markers of ``key``'s step ``step``."""
        folder = self.tiles(key, step)
        if self.remote:
            delete_under(self.url(folder))
        else:
            shutil.rmtree(folder, ignore_errors=True)

    def done_tiles(self, key: str, step: int) -> set[tuple[int, int]]:
        """``{(frame, tile)}`` with a marker."""
        folder = self.tiles(key, step)
        if self.remote:
            names = [n for n in list_under(self.url(folder)) if "/" not in n]
        else:
            names = [p.name for p in folder.glob("f*_t*.done")] if folder.is_dir() else []
        out = set()
        for name in names:
            if name.startswith("f") and name.endswith(".done") and "_t" in name:
                f, t = name[1:-len(".done")].split("_t")
                out.add((int(f), int(t)))
        return out

    def clear_work(self, key: str) -> None:
        """Forget every intermediate of ``key`` (weights, stores, markers, entry, kernel)."""
        if self.remote:
            self._clear_remote(key)
            return
        for p in (self.root / "work" / key, self.root / "tiles" / key):
            remove_tree(p)  # a link: only the link goes
        for folder in (self.root / "weights", self.root / "entries", self.root / "kernels"):
            if os.path.islink(folder):  # never reach through it
                raise UnsafeOutputError(f"{folder}: is a symbolic link inside the run "
                                        "directory; zssr never writes through links")
        for folder, pattern in (("weights", f"{key}_s*.pt"), ("kernels", f"{key}_g*.np[yz]"),
                                ("kernels", f"{key}.npy")):
            for p in (self.root / folder).glob(pattern):  # a missing folder: nothing
                remove_tree(p)
        remove_tree(self.entry(key))
        remove_tree(self.kernel(key))

    def _clear_remote(self, key: str) -> None:
        for folder in (self.root / "work" / key, self.root / "tiles" / key):
            delete_under(self.url(folder))
        for folder, keep in (("weights", lambda n: n.startswith(f"{key}_s") and n.endswith(".pt")),
                             ("kernels", lambda n: n.split(".")[0] == key
                              or n.startswith(f"{key}_g"))):
            url = self.url(self.root / folder)
            delete_objects(url, [n for n in list_under(url) if "/" not in n and keep(n)])
        delete_objects(self.url(self.root / "entries"), [f"{key}.json"])


# ----------------------------------------------------------------------------- keys


def input_identity(path: Path) -> dict[str, Any]:
    """What identifies an input's content: path + size + mtime, or a small file's hash.

    A folder (DICOM series, Zarr store) is identified by the names, sizes and
    modification times of the files in it; an ``s3://`` object by its size and ETag, other
    URLs by the URL alone (a changed object there is not noticed: use a new --out).
    """
    if is_vsi(path):
        url = display_url(path)
        return object_identity(url) if is_remote(url) else {"url": url}
    path = Path(path).resolve()
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return {"path": str(path), "listing": h.hexdigest()}
    st = path.stat()
    if st.st_size <= SMALL_FILE:
        return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def image_key(name: str, identity: dict[str, Any], settings: dict[str, Any]) -> str:
    """``<name>-<12 hex>`` from the input identity and everything that shapes the result."""
    blob = json.dumps({"input": identity, "settings": settings}, sort_keys=True, default=str)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]
    return f"{safe}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


# ----------------------------------------------------------------------------- weights


def _stats_to_plain(stats: SampleStats) -> dict[str, Any]:
    n = stats.normalizer
    return {"dtype": np.dtype(n.dtype).str, "offset": list(map(float, n.offset)),
            "span": list(map(float, n.span)), "lo": list(map(float, n.lo)),
            "hi": list(map(float, n.hi)), "fill": list(map(float, stats.fill)),
            "valid_fraction": float(stats.valid_fraction)}


def _stats_from_plain(d: dict[str, Any]) -> SampleStats:
    norm = Normalizer(np.dtype(d["dtype"]), tuple(d["offset"]), tuple(d["span"]), tuple(d["lo"]),
                      tuple(d["hi"]))
    return SampleStats(norm, tuple(d["fill"]), float(d["valid_fraction"]))


def weights_bytes(state: dict[str, torch.Tensor], stats: SampleStats,
                  history: TrainingHistory, seconds: float) -> bytes:
    """One step's training result as the bytes of a weights file (``torch.save``; plain
    types only)."""
    payload = {"format": _WEIGHTS_FORMAT, "state": state, "stats": _stats_to_plain(stats),
               "history": json.dumps(history.to_dict()), "seconds": float(seconds)}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def save_weights(path: Path, state: dict[str, torch.Tensor], stats: SampleStats,
                 history: TrainingHistory, seconds: float) -> None:
    """Save one step's training result atomically at ``DIR/weights/<name>`` (the folder is
    made below DIR; links refused)."""
    make_dirs(path.parent, root=path.parent.parent)
    write_bytes_atomic(path, weights_bytes(state, stats, history, seconds))


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], SampleStats, TrainingHistory, float]:
    """``(state, stats, history, seconds)`` saved by :func:`save_weights` (``weights_only``)."""
    return weights_from_bytes(Path(path).read_bytes(), path)


def weights_from_bytes(data: bytes, where: str | Path
                       ) -> tuple[dict[str, torch.Tensor], SampleStats, TrainingHistory, float]:
    """:func:`load_weights` of a weights file's content (``where`` names it in errors)."""
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if payload.get("format") != _WEIGHTS_FORMAT:
        raise ValueError(f"{where}: unknown weights format {payload.get('format')!r}; "
                         "delete the file to retrain")
    history = TrainingHistory(**json.loads(payload["history"]))
    return payload["state"], _stats_from_plain(payload["stats"]), history, payload["seconds"]


# ----------------------------------------------------------------------------- driver side


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
        from io_adapters.objstore import check_bucket, download

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
                self._compact()
                self._push_log()
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
