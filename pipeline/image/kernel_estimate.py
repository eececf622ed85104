"""``--kernel estimate`` on files: each image's own degradation kernel, from windowed reads.

:func:`estimate_file_kernel` feeds :func:`zssr.kernel_estimation.estimate_kernel_windows`
with 64 x 64 LR windows read from the file (at most ``4 * max_windows`` of them, seeded,
from the middle frame of a stack), in working units, valid pixels only (nodata, masks,
alpha and non-finite values keep a window out), so the cost is bounded on any scene.

The result is a :class:`KernelChoice`: the estimate when it is usable, else the fallback
(the preset's kernel, or bicubic) with the reason in one warning line and in the report.
``zssr upscale`` estimates before planning; ``zssr run`` estimates in a Dask task per
image before training and keeps the choice in the run folder (``kernels/KEY.npz``; the
kernel alone also as ``KEY.npy``), so a resumed run reuses it.  The halo follows the
kernel used (:func:`pipeline.image.job.plan_step`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window as RioWindow

from io_adapters.base import Reader
from io_adapters.output_safety import write_bytes_atomic
from pipeline.source import SampleStats, sample_stats, sr_bands
from zssr.kernel_estimation import (
    WINDOW,
    KernelEstimate,
    KernelEstimationError,
    estimate_kernel_windows,
)
from zssr.sr_steps import scale_steps

__all__ = ["ESTIMATE", "is_estimate", "KernelChoice", "GroupChoices", "estimate_file_kernel",
           "save_choice", "load_choice", "kernel_picture", "describe_choice",
           "kernel_label"]

log = logging.getLogger(__name__)

ESTIMATE = "estimate"
MAX_WINDOWS = 256  # fully valid 64 x 64 windows at most (4x that many reads at most)


def is_estimate(kernel: Any) -> bool:
    """Whether ``kernel`` asks for estimation (the string ``"estimate"``)."""
    return isinstance(kernel, str) and kernel == ESTIMATE


@dataclass(frozen=True)
class KernelChoice:
    """The kernel SR uses for one image, and how it was chosen."""

    kernel: np.ndarray | None  # None: MATLAB bicubic
    used: str  # "estimated", "estimated (bicubic)" or "fallback"
    reason: str = ""  # why the estimate is not used
    info: dict[str, Any] = field(default_factory=dict)  # model, covariance, widths, ...

    def summary(self) -> dict[str, Any]:
        """JSON-ready: what the report and the run folder keep."""
        return {"used": self.used, "reason": self.reason, **self.info}


@dataclass(frozen=True)
class GroupChoices:
    """``kernel_groups``: each group's 1-based file band numbers and its own choice."""

    groups: tuple[tuple[int, ...], ...]
    choices: tuple[KernelChoice, ...]

    def summary(self) -> dict[str, Any]:
        return {"groups": [{"bands": list(g), **c.summary()}
                           for g, c in zip(self.groups, self.choices, strict=True)]}


def describe_choice(choice: KernelChoice | GroupChoices) -> str:
    """One line for the console and the report: what was chosen and why.

    >>> describe_choice(KernelChoice(None, "fallback", "too flat", {"windows": 3}))
    'fallback to bicubic (estimate unusable: too flat)'
    >>> describe_choice(GroupChoices(((1, 2), (3,)), (KernelChoice(None, "fallback", "x"),
    ...                                               KernelChoice(None, "fallback", "y"))))
    'bands 1,2: fallback to bicubic (estimate unusable: x); bands 3: fallback to bicubic (estimate unusable: y)'
    """
    if isinstance(choice, GroupChoices):
        return "; ".join(f"bands {','.join(map(str, g))}: {describe_choice(c)}"
                         for g, c in zip(choice.groups, choice.choices, strict=True))
    info = choice.info
    if choice.used == "fallback":
        what = "the preset's Gaussian" if choice.kernel is not None else "bicubic"
        return f"fallback to {what} (estimate unusable: {choice.reason})"
    if choice.used == "estimated (bicubic)":
        return f"estimated: bicubic ({info.get('windows', 0)} windows)"
    w = info.get("widths_px", [float("nan")] * 2)
    return (f"estimated Gaussian, widths {w[0]:.2f} x {w[1]:.2f} HR px, major axis at "
            f"{info.get('orientation_deg', float('nan')):.0f} deg ({info.get('windows', 0)} "
            f"windows, {info.get('seconds', 0.0):.1f} s)")


def chosen_label(choice: KernelChoice | GroupChoices) -> str:
    """The provenance label of the kernel(s) SR used: :func:`kernel_label` of each chosen
    kernel with how it was chosen (per band group with ``kernel_groups``).

    >>> chosen_label(KernelChoice(None, "fallback", "too flat"))
    'bicubic (fallback)'
    >>> chosen_label(GroupChoices(((1, 2), (3,)), (KernelChoice(None, "fallback", "x"),
    ...                                            KernelChoice(None, "estimated (bicubic)"))))
    'bands 1,2: bicubic (fallback); bands 3: bicubic (estimated (bicubic))'
    """
    if isinstance(choice, GroupChoices):
        return "; ".join(f"bands {','.join(map(str, g))}: {chosen_label(c)}"
                         for g, c in zip(choice.groups, choice.choices, strict=True))
    return f"{kernel_label(choice.kernel)} ({choice.used})"


def chosen_writer_options(options: dict, choice: KernelChoice | GroupChoices) -> dict:
    """Writer options whose provenance (if recorded) names the kernel(s) chosen for the
    image (:func:`chosen_label`) instead of ``estimate``."""
    prov = options.get("provenance")
    if prov is None:
        return options
    return {**options, "provenance": replace(prov, kernel=chosen_label(choice))}


def _geometry(cov: np.ndarray | None) -> dict[str, Any]:
    """Widths (standard deviations along the principal axes, HR px) and the major axis'
    orientation (degrees from the column axis, counter-clockwise, rows pointing down)."""
    if cov is None:
        return {}
    vals, vecs = np.linalg.eigh(np.asarray(cov, np.float64))
    major = vecs[:, 1]  # (row, col) of the larger eigenvalue
    angle = math.degrees(math.atan2(-major[0], major[1])) % 180.0
    return {"covariance": np.round(cov, 4).tolist(),
            "widths_px": [round(math.sqrt(max(v, 0.0)), 3) for v in vals[::-1]],
            "orientation_deg": round(angle, 1)}


def _choice(est: KernelEstimate, fallback: np.ndarray | None, where: str) -> KernelChoice:
    info = {"model": est.model, "scale": est.scale, "windows": est.windows,
            "alpha": None if not np.isfinite(est.alpha) else round(float(est.alpha), 3),
            "seconds": round(est.seconds, 3), **_geometry(est.covariance)}
    if est.ok and est.model == "gaussian":
        return KernelChoice(est.kernel, "estimated", "", info)
    if est.ok:  # the data cannot tell the estimate from bicubic: the standard kernel
        return KernelChoice(None, "estimated (bicubic)", "", info)
    what = "the preset's kernel" if fallback is not None else "the bicubic kernel"
    log.warning("%s: kernel estimation unusable (%s); using %s", where, est.reason, what)
    return KernelChoice(fallback, "fallback", est.reason, info)


def estimate_file_kernel(reader: Reader, *, scale: Any, config, where: str,
                         fallback: np.ndarray | None = None,
                         stats: SampleStats | None = None, bands: list[int] | None = None,
                         max_windows: int = MAX_WINDOWS) -> KernelChoice:
    """The kernel of the file behind ``reader`` for SR at ``scale`` (one isotropic x2 or x4
    step; ``KernelEstimationError`` naming ``where`` otherwise), from the mean of ``bands``
    (the reader's band indexes; default every band SR sees) over pixels valid in each."""
    steps = scale_steps(scale, config)
    if len(steps) != 1:
        raise KernelEstimationError(f"{where}: --kernel estimate needs one x2 or x4 step, "
                                    f"got {len(steps)} gradual steps; drop them or give a "
                                    "kernel file")
    try:
        factor = steps[0]
        meta = reader.meta
        bands = sr_bands(meta) if bands is None else list(bands)
        stats = stats or sample_stats(reader, bands, config.norm)
        frame = meta.frames // 2

        def read(row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
            win = RioWindow(col, row, WINDOW, WINDOW)
            raw = reader.read(win, frame=frame)[bands]
            valid = reader.read_masks(win, frame=frame)[bands].all(axis=0)
            if raw.dtype.kind == "f":
                valid &= np.isfinite(raw).all(axis=0)
                raw = np.where(np.isfinite(raw), raw, 0)
            work = stats.normalizer.forward(raw).astype(np.float64)
            return np.where(valid, work.mean(axis=0), 0.0), valid

        est = estimate_kernel_windows(read, (meta.rows, meta.cols), scale=factor,
                                      seed=config.seed, max_windows=max_windows)
    except KernelEstimationError as exc:
        raise KernelEstimationError(f"{where}: {exc}") from None
    return _choice(est, fallback, where)


def save_choice(path: Path, choice: KernelChoice, *,
                write: Callable[[Path, bytes], None] = write_bytes_atomic) -> None:
    """Keep ``choice`` at ``path`` (``.npz``, atomic): the kernel and its summary; a
    kernel (not bicubic) also as ``path`` with ``.npy``, the kernel alone, which
    ``--kernel FILE.npy`` takes (another image of the same sensor, a rerun).  ``write``
    puts a file's bytes in place (a run folder on object storage passes its own)."""
    if choice.kernel is not None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(choice.kernel, np.float64))
        write(path.with_suffix(".npy"), buf.getvalue())
    buf = io.BytesIO()
    np.savez(buf, kernel=np.zeros((0, 0)) if choice.kernel is None else choice.kernel,
             summary=np.array(json.dumps(choice.summary())))
    write(path, buf.getvalue())


def load_choice(path: Path, *, data: bytes | None = None) -> KernelChoice:
    """The choice :func:`save_choice` kept (``ValueError`` when the file is damaged);
    ``data``: the file's content, read elsewhere (``path`` then only names it)."""
    try:
        with np.load(path if data is None else io.BytesIO(data), allow_pickle=False) as npz:
            kernel, summary = npz["kernel"], json.loads(str(npz["summary"]))
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a saved kernel choice ({exc})") from None
    used, reason = summary.pop("used"), summary.pop("reason")
    return KernelChoice(None if kernel.size == 0 else np.asarray(kernel, np.float64), used,
                        reason, summary)


def kernel_picture(kernel: np.ndarray, *, side: int = 96) -> np.ndarray:
    """A uint8 ``(side, side)`` picture of ``kernel`` (nearest-neighbour enlarged, the
    peak white) for the report."""
    k = np.asarray(kernel, np.float64)
    k = k / k.max() if k.max() > 0 else k
    rows = (np.arange(side) * k.shape[0] // side)[:, None]
    cols = (np.arange(side) * k.shape[1] // side)[None, :]
    return np.clip(np.rint(k[rows, cols] * 255), 0, 255).astype(np.uint8)


def kernel_label(kernel: np.ndarray | str | None, fallback: np.ndarray | None = None) -> str:
    """``"bicubic"`` (MATLAB imresize) or ``"<rows>x<cols> sha256:<hex>"`` of the float64
    kernel, the hash ``zssr run``'s fingerprint uses; ``"estimate"`` (the image's own,
    chosen while the job runs) is recorded as such, with its fallback."""
    if isinstance(kernel, str):
        return f"{kernel} (per image; fallback {kernel_label(fallback)})"
    if kernel is None:
        return "bicubic"
    k = np.ascontiguousarray(kernel, np.float64)
    digest = hashlib.sha256(k.tobytes()).hexdigest()
    return f"{k.shape[0]}x{k.shape[1]} sha256:{digest}"
