"""Progress of a ``zssr run`` as observers: the driver reports, the CLI draws.

:class:`RunObserver` is the silent interface; :class:`TqdmRunProgress` draws
an overall bar (images) and, per image in flight, a training bar (fed by the
train tasks' events: Dask worker events, or direct calls under the
synchronous scheduler) and a tile bar (fed by finished infer batches).
Calls may come from the Dask client's event thread: a lock serialises them.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from tqdm import tqdm

__all__ = ["RunObserver", "TqdmRunProgress"]


class RunObserver:
    """Receives a run's progress; every method is a no-op here."""

    def start(self, *, names: dict[str, str], total: int, skipped: int, failed: int,
              dashboard: str | None) -> None:
        """Before the first task; ``skipped`` images were finished by an earlier run."""

    def train_event(self, image: str, msg: dict[str, Any]) -> None:
        """A training progress message (iteration, max_iters, loss, learning_rate, ...)."""

    def stage(self, image: str, step: str, total: int, *, done: int = 0) -> None:
        """Training of a step finished; ``total`` tiles follow, ``done`` already on disk."""

    def tiles(self, image: str, n: int) -> None:
        """``n`` more tiles of ``image`` are written."""

    def tile_megapixels(self, image: str, megapixels: float) -> None:
        """The tiles that follow (the next :meth:`stage`) write ``megapixels`` output MP each
        on average."""

    def image_done(self, image: str, state: str) -> None:
        """``image`` is ``"finalized"`` or ``"failed"``."""

    def close(self) -> None:
        """The run is over."""


class TqdmRunProgress(RunObserver):
    """tqdm bars on stderr: overall images, and per image training iterations and tiles."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled and sys.stderr is not None
        self._lock = threading.Lock()
        self._names: dict[str, str] = {}
        self._overall: tqdm | None = None
        self._bars: dict[str, tqdm] = {}
        self._tile_mp: dict[str, float] = {}

    def start(self, *, names: dict[str, str], total: int, skipped: int, failed: int,
              dashboard: str | None) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._names = dict(names)
            if dashboard:
                tqdm.write(f"Dask dashboard: {dashboard}", file=sys.stderr)
            self._overall = tqdm(total=total, initial=skipped + failed, desc="images",
                                 unit="img", dynamic_ncols=True, position=0)
            if skipped:
                self._overall.set_postfix({"skipped": skipped}, refresh=False)

    def _bar(self, image: str, desc: str, total: int, unit: str) -> tqdm:
        old = self._bars.pop(image, None)
        if old is not None:
            old.close()
        bar = tqdm(total=total, desc=f"{self._names.get(image, image)} {desc}", unit=unit,
                   leave=False, dynamic_ncols=True)
        self._bars[image] = bar
        return bar

    def train_event(self, image: str, msg: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self._lock:
            bar = self._bars.get(image)
            desc_ok = bar is not None and bar.unit == "it" and bar.total == msg["max_iters"]
            if not desc_ok or msg["iteration"] + 1 < bar.n:
                bar = self._bar(image, f"train s{msg.get('step', 0)}", msg["max_iters"], "it")
            bar.update(msg["iteration"] + 1 - bar.n)
            post = {"lr": f"{msg['learning_rate']:.0e}", "loss": f"{msg['loss']:.4f}"}
            bar.set_postfix(post, refresh=False)

    def stage(self, image: str, step: str, total: int, *, done: int = 0) -> None:
        if not self.enabled:
            return
        with self._lock:
            bar = self._bar(image, f"tiles {step}".rstrip(), total, "tile")
            bar.update(done)

    def tile_megapixels(self, image: str, megapixels: float) -> None:
        with self._lock:
            self._tile_mp[image] = megapixels

    def tiles(self, image: str, n: int) -> None:
        with self._lock:
            bar = self._bars.get(image)
            if bar is not None and bar.unit == "tile":
                bar.update(n)  # tqdm's ETA: from the tile rate, not the image count
                rate, mp = bar.format_dict.get("rate"), self._tile_mp.get(image)
                if rate and mp:
                    bar.set_postfix({"s/MP": f"{1 / (rate * mp):.1f}"}, refresh=False)

    def image_done(self, image: str, state: str) -> None:
        if not self.enabled:
            return
        with self._lock:
            bar = self._bars.pop(image, None)
            if bar is not None:
                bar.close()
            if state == "failed":
                tqdm.write(f"{self._names.get(image, image)}: failed", file=sys.stderr)
            if self._overall is not None:
                self._overall.update(1)

    def close(self) -> None:
        with self._lock:
            for bar in self._bars.values():
                bar.close()
            self._bars.clear()
            if self._overall is not None:
                self._overall.close()
                self._overall = None
