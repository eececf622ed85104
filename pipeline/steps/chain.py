"""Preprocessing chains around SR, by wrapping the reader and the writer.

A chain is declared in YAML (a preset, a config file, a job spec)::

    chain:
      pre:                       # input -> SR: applied by ChainReader on every read
        - mask_nodata: {value: 0}
        - reflectance: {scale: 0.0001, offset: -0.1}
      post:                      # SR -> output: applied by ChainWriter on every write
        - clip_to_input

The engine never sees the chain: :class:`ChainReader` implements the reader
contract with the pre steps applied (its ``meta`` has the changed bands and
dtype), and :class:`ChainWriter` implements the writer contract, applying the
post steps and then the exact inverses of the pre steps in reverse order, so
outputs come back in the input's units and dtype (steps without an inverse,
such as band selection or denoising, stay applied).

Tiling stays exact: a pre step with a spatial radius (denoising) makes
:class:`ChainReader` read that many extra pixels around every window, clipped
to the raster, and filter with edge-replicating borders, so a window's values
equal the same pixels of the whole filtered image.  The tile halo therefore
needs no widening (``ChainReader.radius`` reports the reach).  Post steps see
tile cores without a halo, so they must be pointwise.

>>> spec = ChainSpec.from_config({"pre": ["modality_lut", {"clip": {"min": -1024}}]})
>>> [s.name for s in spec.pre], spec.radius
(['modality_lut', 'clip'], 0)
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from io_adapters.base import Metadata, Reader, Writer
from pipeline.source import SAMPLE_SIZE, SAMPLE_WINDOWS, _sample_windows
from zssr.config import ConfigError

from .base import Sample, Step
from .registry import step_from_config

__all__ = ["ChainSpec", "BoundChain", "ChainReader", "ChainWriter", "bind_chain"]

log = logging.getLogger(__name__)


def _steps(data: Any, where: str) -> tuple[Step, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ConfigError(f"{where}: expected a list of steps, got {data!r}")
    return tuple(step_from_config(entry) for entry in data)


@dataclass(frozen=True)
class ChainSpec:
    """The declared steps (validated, not yet fitted to an image)."""

    pre: tuple[Step, ...] = ()
    post: tuple[Step, ...] = ()

    @classmethod
    def from_config(cls, data: Any) -> ChainSpec:
        """From ``{pre: [...], post: [...]}`` (None: the empty chain)."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError(f"chain: expected a mapping with 'pre' and/or 'post', got {data!r}")
        unknown = sorted(set(data) - {"pre", "post"})
        if unknown:
            raise ConfigError(f"chain: unknown key {unknown[0]!r}; allowed keys: pre, post")
        spec = cls(_steps(data.get("pre"), "chain.pre"), _steps(data.get("post"), "chain.post"))
        for step in spec.post:
            if not step.pointwise:
                raise ConfigError(f"chain.post: step {step.name!r} has a spatial radius "
                                  f"({step.radius} px); only pre steps may (post steps see tile "
                                  "cores without a halo)")
        return spec

    def to_config(self) -> dict[str, list[dict[str, Any]]]:
        return {"pre": [s.to_config() for s in self.pre],
                "post": [s.to_config() for s in self.post]}

    def __bool__(self) -> bool:
        return bool(self.pre or self.post)

    @property
    def radius(self) -> int:
        """Total spatial reach of the pre steps (input pixels on each side)."""
        return sum(s.radius for s in self.pre)


def _sample(reader: Reader) -> list[Sample]:
    """A bounded, deterministic set of windows of every frame (like the normaliser's fit)."""
    meta = reader.meta
    frames = range(meta.frames) if meta.frames <= 8 else np.linspace(0, meta.frames - 1, 8,
                                                                      dtype=int)
    out = []
    for f in frames:
        for win in _sample_windows(meta.rows, meta.cols, SAMPLE_WINDOWS, SAMPLE_SIZE):
            out.append((reader.read(win, frame=int(f)), reader.read_masks(win, frame=int(f)),
                        int(f)))
    return out


@dataclass(frozen=True)
class BoundChain:
    """A chain fitted to one image: fitted steps and the metadata between them."""

    pre: tuple[Step, ...]
    metas: tuple[Metadata, ...]  # metas[i]: input of pre[i]; metas[-1]: what SR sees
    post: tuple[Step, ...]

    @property
    def source_meta(self) -> Metadata:
        return self.metas[0]

    @property
    def meta(self) -> Metadata:
        return self.metas[-1]

    @property
    def radius(self) -> int:
        return sum(s.radius for s in self.pre)

    def forward(self, array: np.ndarray, masks: np.ndarray, *,
                frame: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Source units -> the units SR works in (the pre steps)."""
        for step, meta in zip(self.pre, self.metas, strict=False):
            array, masks, _ = step.apply(array, masks, meta, frame=frame)
        return array, masks

    def _hr_metas(self, hr: Metadata) -> tuple[list[Metadata], list[Metadata]]:
        """Metadata along the way back: after each post step, after each inverse."""
        post = [hr]
        for step in self.post:
            post.append(step.out_meta(post[-1]))
        back = [post[-1]]
        for step, source in zip(reversed(self.pre), reversed(self.metas[:-1]), strict=True):
            back.append(step.inverse_meta(back[-1], source=source))
        return post, back

    def output_meta(self, hr: Metadata) -> Metadata:
        """Metadata of the output file, for ``hr`` (the SR result's, in chain units)."""
        return self._hr_metas(hr)[1][-1]

    def backward(self, array: np.ndarray, masks: np.ndarray, hr: Metadata, *,
                 frame: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Chain units -> output units: post steps, then the pre steps' inverses reversed."""
        post, back = self._hr_metas(hr)
        for step, meta in zip(self.post, post, strict=False):
            array, masks, _ = step.apply(array, masks, meta, frame=frame)
        for i, (step, source) in enumerate(zip(reversed(self.pre), reversed(self.metas[:-1]),
                                               strict=True)):
            array, masks = step.inverse(array, masks, back[i], source=source, frame=frame)
        return array, masks


def bind_chain(spec: ChainSpec, reader: Reader) -> BoundChain:
    """Fit ``spec``'s data-dependent steps on a sample of ``reader`` and record the metas."""
    metas = [reader.meta]
    samples = _sample(reader) if any(_fits(s) for s in (*spec.pre, *spec.post)) else []
    fitted = []
    for step in spec.pre:
        step = step.fit(samples, metas[-1])
        samples = [step.apply(a, m, metas[-1], frame=f)[:2] + (f,) for a, m, f in samples]
        metas.append(step.out_meta(metas[-1]))
        fitted.append(step)
    post = tuple(step.fit(samples, metas[-1]) for step in spec.post)
    return BoundChain(tuple(fitted), tuple(metas), post)


def _fits(step: Step) -> bool:
    return type(step).fit is not Step.fit


class ChainReader:
    """A reader whose pixels went through the pre steps (the reader contract)."""

    def __init__(self, reader: Reader, chain: ChainSpec | BoundChain) -> None:
        self.inner = reader
        self.chain = chain if isinstance(chain, BoundChain) else bind_chain(chain, reader)
        self.meta: Metadata = self.chain.meta
        self._cache: tuple[tuple, np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()
        alpha = self.meta.alpha_band
        if alpha is not None and self.meta.dtype != reader.meta.dtype:
            from io_adapters.errors import InvalidDataError

            raise InvalidDataError(f"{reader.meta.path}: the chain changes the dtype of an image "
                                   "with an alpha band; drop the alpha band with select_bands")

    @property
    def radius(self) -> int:
        """Extra input pixels read around every window for the spatial pre steps."""
        return self.chain.radius

    def _fill(self) -> float:
        nodata = self.meta.nodata
        return 0.0 if nodata is None else nodata

    def _compute(self, window: Window | None, frame: int) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = self.meta.rows, self.meta.cols
        if window is None:
            window = Window(0, 0, cols, rows)
        r0, c0 = int(round(window.row_off)), int(round(window.col_off))
        h, w = int(round(window.height)), int(round(window.width))
        key = (r0, c0, h, w, frame)
        with self._lock:
            if self._cache is not None and self._cache[0] == key:
                return self._cache[1], self._cache[2]
        rad = self.radius
        ir0, ic0 = max(0, r0 - rad), max(0, c0 - rad)
        ir1, ic1 = min(rows, r0 + h + rad), min(cols, c0 + w + rad)
        if (ir0, ic0, ir1, ic1) == (r0, c0, r0 + h, c0 + w):  # inside, no reach: no copy
            inner = Window(c0, r0, w, h)
            array, masks = self.chain.forward(self.inner.read(inner, frame=frame),
                                              self.inner.read_masks(inner, frame=frame),
                                              frame=frame)
        else:
            array = np.full((self.meta.bands, h, w), self._fill(), self.meta.dtype)
            masks = np.zeros((self.meta.bands, h, w), bool)
            if ir1 > ir0 and ic1 > ic0:
                inner = Window(ic0, ir0, ic1 - ic0, ir1 - ir0)
                a, m = self.chain.forward(self.inner.read(inner, frame=frame),
                                          self.inner.read_masks(inner, frame=frame),
                                          frame=frame)
                # the part of the window inside the raster, in both coordinate frames
                y0, x0 = max(r0, 0), max(c0, 0)
                y1, x1 = min(r0 + h, rows), min(c0 + w, cols)
                if y1 > y0 and x1 > x0:
                    dst = np.s_[:, y0 - r0:y1 - r0, x0 - c0:x1 - c0]
                    src = np.s_[:, y0 - ir0:y1 - ir0, x0 - ic0:x1 - ic0]
                    array[dst] = a[src]
                    masks[dst] = m[src]
        with self._lock:
            self._cache = (key, array, masks)
        return array, masks

    def read(self, window: Window | None = None, *, frame: int = 0,
             bands: list[int] | None = None) -> np.ndarray:
        array = self._compute(window, frame)[0]
        return (array if bands is None else array[list(bands)]).copy()

    def read_masks(self, window: Window | None = None, *, frame: int = 0) -> np.ndarray:
        return self._compute(window, frame)[1].copy()

    def read_mask(self, window: Window | None = None, *, frame: int = 0) -> np.ndarray:
        return self._compute(window, frame)[1].all(axis=0)

    def close(self) -> None:
        self._cache = None
        self.inner.close()

    def __enter__(self) -> ChainReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"inner": self.inner, "chain": self.chain}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["inner"], state["chain"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"ChainReader({self.inner!r}, pre={[s.name for s in self.chain.pre]})"


class ChainWriter:
    """A writer that takes SR results in chain units and writes them in output units.

    ``hr_meta`` describes what it receives (the chain's metadata scaled by the
    SR factor); the wrapped ``writer`` was opened with
    ``chain.output_meta(hr_meta)``.
    """

    def __init__(self, writer: Writer, chain: BoundChain, hr_meta: Metadata) -> None:
        self.inner = writer
        self.chain = chain
        self.hr_meta = hr_meta
        self.path: Path = writer.path

    def write(self, array: np.ndarray, window: Window, *, frame: int = 0,
              mask: np.ndarray | None = None) -> None:
        masks = np.ones(array.shape, bool) if mask is None else np.broadcast_to(
            np.asarray(mask, bool), array.shape).copy()
        out, out_masks = self.chain.backward(array, masks, self.hr_meta, frame=frame)
        if mask is None:
            self.inner.write(out, window, frame=frame)
        else:  # the mask goes on in the form it came: per band, or one for all bands
            keep = out_masks if np.ndim(mask) == 3 else out_masks.all(axis=0)
            self.inner.write(out, window, frame=frame, mask=keep)

    def commit(self) -> Path:
        return self.inner.commit()

    def abort(self) -> None:
        self.inner.abort()

    def __enter__(self) -> ChainWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
