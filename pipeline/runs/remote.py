"""The run folder on object storage (``zssr run --out s3://bucket/prefix``): the lease.

With an ``s3://`` ``--out`` every piece of the run folder is an object under the prefix
(:class:`pipeline.runs.rundir.RunPaths` maps each path to its key), so Dask workers on
machines that share no disk run a batch: a worker writes only its own temporary folder
and the bucket.  What is different from a local folder:

* **One run at a time** (this module): the lease object ``<prefix>/.lock``, created by a
  conditional write (``If-None-Match: *``: of two drivers starting together, exactly one
  wins), renewed by the holder every third of its time to live (``ZSSR_LEASE_SECONDS``,
  default 60) with ``If-Match`` on the ETag it last wrote, and deleted at the end.  A
  second run finds it and exits 9, as on disk.  A lease not renewed for its time to live
  (a driver killed with SIGKILL, a lost machine) is taken over by a conditional write on
  the stale ETag: of two drivers taking over together, one wins.  The age is the
  server's: ``Date`` of the read minus ``Last-Modified`` of the lease, so no two
  machines' clocks are compared.  A holder whose renewal finds the lease changed (taken
  over after a pause longer than the time to live) stops the run: it must not write
  beside the new holder.
* **The manifest** is one object per record (``manifest/<run>-<n>.json``, the run id
  sorts by start time), compacted into ``manifest.jsonl`` at the end of the run.
* **The log** is kept in a local temporary file and uploaded to ``log.jsonl`` with
  every renewal and at the end.
* **Working Zarr stores** are written in place (chunk by chunk, by the tasks that own
  the chunks); each final output is built in the worker's temporary folder and uploaded
  (:func:`io_adapters.objstore.staged_output`: the key appears only when complete).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from io_adapters.s3_objects import (
    PreconditionFailed,
    delete_object,
    get_with_age,
    new_client,
    put_bytes,
)
from pipeline.errors import LockedError

__all__ = ["RemoteLease", "lease_seconds", "LEASE_NAME"]

log = logging.getLogger(__name__)

LEASE_NAME = ".lock"
DEFAULT_LEASE_SECONDS = 60.0


def lease_seconds() -> float:
    """The lease's time to live: ``ZSSR_LEASE_SECONDS`` (default 60, at least 3)."""
    try:
        return max(3.0, float(os.environ.get("ZSSR_LEASE_SECONDS", DEFAULT_LEASE_SECONDS)))
    except ValueError:
        return DEFAULT_LEASE_SECONDS


def _current(url: str, client: Any) -> tuple[dict[str, Any], str, float] | None:
    """``(holder record, ETag, age in server seconds)`` of the lease; None: there is none."""
    got = get_with_age(url, client=client)
    if got is None:
        return None
    body, etag, age = got
    try:
        record = json.loads(body)
    except ValueError:
        record = None
    return (record if isinstance(record, dict) else {}), etag, age


class RemoteLease:
    """``with RemoteLease(url, refusal):`` holds the lease object ``url`` or raises
    :class:`LockedError` (exit 9); see the module doc.  ``on_renew`` runs after each
    renewal (the driver uploads its log there)."""

    def __init__(self, url: str, refusal: Callable[[str], str], *,
                 on_renew: Callable[[], None] | None = None,
                 seconds: float | None = None) -> None:
        self.url = url
        self._refusal = refusal
        self._on_renew = on_renew
        self.seconds = lease_seconds() if seconds is None else seconds
        self._client = new_client()
        self._etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None  # why the lease was lost (taken over), else None
        self.holder = f"{socket.gethostname()} pid {os.getpid()}"

    def _body(self) -> bytes:
        return json.dumps({"holder": self.holder, "ttl_seconds": self.seconds}).encode()

    def __enter__(self) -> RemoteLease:
        try:
            self._etag = put_bytes(self.url, self._body(), if_none_match=True,
                                   client=self._client)
        except PreconditionFailed:
            self._take_over()
        self._thread = threading.Thread(target=self._renew_loop, name="zssr-lease",
                                        daemon=True)
        self._thread.start()
        return self

    def _take_over(self) -> None:
        current = _current(self.url, self._client)
        if current is None:  # released meanwhile: create it (a race lost raises below)
            try:
                self._etag = put_bytes(self.url, self._body(), if_none_match=True,
                                       client=self._client)
                return
            except PreconditionFailed:
                current = _current(self.url, self._client)
                if current is None:
                    raise LockedError(self._refusal("a run that keeps replacing the lease")
                                      ) from None
        record, etag, age = current
        holder = str(record.get("holder", "unknown holder"))
        ttl = float(record.get("ttl_seconds", self.seconds) or self.seconds)
        if age <= ttl:
            raise LockedError(self._refusal(f"{holder}, renewed {age:.0f} s ago"))
        try:
            self._etag = put_bytes(self.url, self._body(), if_match=etag, client=self._client)
        except PreconditionFailed:
            raise LockedError(self._refusal("another run took over the stale lease first")
                              ) from None
        log.warning("%s: took over a lease not renewed for %.0f s (%s)", self.url, age, holder)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                self._etag = put_bytes(self.url, self._body(), if_match=self._etag,
                                       client=self._client)
            except PreconditionFailed:
                self.lost = (f"{self.url}: the lease was taken over by another run (this "
                             f"run was not heard from for over {self.seconds:.0f} s)")
                log.error("%s", self.lost)
                return
            except Exception as exc:  # noqa: BLE001 - a failed renewal is tried again
                log.warning("%s: renewing the lease failed (%s); trying again", self.url, exc)
                continue
            if self._on_renew is not None:
                try:
                    self._on_renew()
                except Exception as exc:  # noqa: BLE001 - the log upload is best effort
                    log.warning("%s: uploading the log failed (%s)", self.url, exc)

    def check(self) -> None:
        """Raise :class:`LockedError` if the lease was taken over (the run must stop)."""
        if self.lost is not None:
            raise LockedError(self.lost)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.lost is None and self._etag is not None:
            try:
                delete_object(self.url, if_match=self._etag, client=self._client)
            except PreconditionFailed:
                pass  # taken over: the new holder's, not ours to delete
            except Exception as exc:  # noqa: BLE001 - a stale lease expires by itself
                log.warning("%s: could not delete the lease (%s); it expires in %.0f s",
                            self.url, exc, self.seconds)
        self._etag = None
