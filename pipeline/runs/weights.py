"""A trained step's weights file in the run folder: the network's state, the normaliser
(``SampleStats``), the training history and its seconds, as ``torch.save`` bytes of plain
types only (loaded with ``weights_only=True``).  :func:`weights_bytes` /
:func:`weights_from_bytes` for a run folder anywhere (object storage too),
:func:`save_weights` / :func:`load_weights` for a local file."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from io_adapters.output_safety import make_dirs, write_bytes_atomic
from pipeline.source import SampleStats
from zssr.normalize import Normalizer
from zssr.train import TrainingHistory

__all__ = ["weights_bytes", "weights_from_bytes", "save_weights", "load_weights"]

_WEIGHTS_FORMAT = 1


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
