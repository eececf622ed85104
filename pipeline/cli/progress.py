"""Progress bars as observers: the library reports events, the CLI draws them."""

from __future__ import annotations

import sys

from tqdm import tqdm

from zssr.train import TrainEvent

__all__ = ["ImageProgress"]


class ImageProgress:
    """Two bars for one image: training iterations, then tiles."""

    def __init__(self, name: str, *, enabled: bool = True) -> None:
        self.name = name
        self.enabled = enabled and sys.stderr is not None
        self._train: tqdm | None = None
        self._tiles: tqdm | None = None

    def on_event(self, ev: TrainEvent) -> None:
        if not self.enabled:
            return
        if self._train is None or self._train.total != ev.max_iters or ev.iteration < self._train.n - 1:
            self._close_train()
            self._train = tqdm(total=ev.max_iters, desc=f"{self.name} train", unit="it",
                               leave=False, dynamic_ncols=True)
        self._train.update(ev.iteration + 1 - self._train.n)
        post = {"lr": f"{ev.learning_rate:.0e}", "loss": f"{ev.loss:.4f}"}
        if ev.reconstruction_error is not None:
            post["rec"] = f"{ev.reconstruction_error:.2e}"
        self._train.set_postfix(post, refresh=False)

    def on_stage(self, stage: str, total: int) -> None:
        if not self.enabled:
            return
        self._close_train()
        if self._tiles is not None:
            self._tiles.close()
        self._tiles = tqdm(total=total, desc=f"{self.name} tiles", unit="tile", leave=False,
                           dynamic_ncols=True)

    def on_tile(self, _tile) -> None:
        if self._tiles is not None:
            self._tiles.update(1)

    def _close_train(self) -> None:
        if self._train is not None:
            self._train.close()
            self._train = None

    def close(self) -> None:
        self._close_train()
        if self._tiles is not None:
            self._tiles.close()
            self._tiles = None
