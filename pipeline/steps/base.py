"""The step contract: :class:`Step`, its parameters and the value helpers steps share.

A step is a frozen dataclass of its parameters (validated from YAML once, at
the edge) with the operation itself::

    apply(array (bands, rows, cols), masks (bands, rows, cols) bool, meta, frame=0)
        -> (array, masks, meta)

and, where one exists, the exact ``inverse`` that brings super-resolved
values back to the input's units and dtype.  A step declares whether it is
*pointwise* (each output pixel depends on its input pixel only) or has a
spatial ``radius`` (a denoising filter): :class:`pipeline.steps.chain.ChainReader`
reads that many extra pixels around every window, so a tile's values equal
the whole image's.  Data-dependent parameters (percentiles, the input's value
range) are fitted once per image by :meth:`Step.fit` on a bounded sample of
windows, like the engine's normaliser.  Names, entry points and user functions
are resolved by :mod:`pipeline.steps.registry`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from io_adapters.base import Metadata
from zssr.config import ConfigError

__all__ = ["Step", "UserStep", "Sample", "param", "check", "restore_values"]


#: One fitting sample: ``(array, masks, frame)`` of a window in the step's input units.
Sample = tuple[np.ndarray, np.ndarray, int]


def param(default: Any, doc: str) -> Any:
    """A step parameter with its default and a one-line description (``zssr steps``)."""
    if isinstance(default, (list, dict)):
        raise TypeError("use a tuple default")  # programming error, not user input
    return field(default=default, metadata={"doc": doc})


def check(ok: bool, step: str, key: str, value: Any, allowed: str) -> None:
    """Raise :class:`ConfigError` naming the step, the key and what is allowed."""
    if not ok:
        raise ConfigError(f"step {step!r}: parameter {key!r} = {value!r} is invalid; "
                          f"expected {allowed}")


class Step:
    """Base of all steps (subclasses are frozen dataclasses of their parameters)."""

    name: ClassVar[str] = ""
    pointwise: ClassVar[bool] = True  # False: the step has a spatial radius
    exact_inverse: ClassVar[bool] = False  # inverse() undoes forward() exactly

    @property
    def radius(self) -> int:
        """Input pixels on each side that one output pixel depends on (0 = pointwise)."""
        return 0

    def validate(self) -> None:
        """Check the parameters (raise :class:`ConfigError`)."""

    def fit(self, samples: list[Sample], meta: Metadata) -> Step:
        """A copy with data-dependent parameters fitted on ``samples`` (default: self)."""
        return self

    def out_meta(self, meta: Metadata) -> Metadata:
        """Metadata of this step's output for an input described by ``meta``."""
        return meta

    def forward(self, array: np.ndarray, masks: np.ndarray, meta: Metadata,
                frame: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def apply(self, array: np.ndarray, masks: np.ndarray, meta: Metadata, *,
              frame: int = 0) -> tuple[np.ndarray, np.ndarray, Metadata]:
        """``(array, masks, meta)`` after this step; ``meta`` describes the input."""
        out, out_masks = self.forward(array, masks, meta, frame)
        return out, out_masks, self.out_meta(meta)

    def inverse(self, array: np.ndarray, masks: np.ndarray, meta: Metadata, *,
                source: Metadata, frame: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Back to the step's input units; ``source`` is the metadata the step saw as input.

        The default is the identity: steps without an exact inverse (band selection,
        clipping, denoising) leave super-resolved values as they are.
        """
        return array, masks

    def inverse_meta(self, meta: Metadata, *, source: Metadata) -> Metadata:
        """Metadata after :meth:`inverse` (``meta``: of the step's output, maybe scaled)."""
        return meta

    def params(self) -> dict[str, Any]:
        """The user-given parameters (plain data, for config files and hashes)."""
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if not f.name.startswith("_"):
                v = getattr(self, f.name)
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def to_config(self) -> dict[str, Any]:
        """``{name: params}``: what :func:`step_from_config` turns back into this step."""
        return {self.name: self.params()}


@dataclass(frozen=True)
class UserStep(Step):
    """A user function named by dotted path or published under ``zssr.steps``."""

    target: str = ""  # "package.module:function" or the entry-point name
    kwargs: tuple[tuple[str, Any], ...] = ()
    reach: int = 0  # declared radius
    function: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    seen: tuple[str, int] | None = field(default=None, compare=False, repr=False)  # dtype, bands

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.target

    @property
    def pointwise(self) -> bool:  # type: ignore[override]
        return self.reach == 0

    @property
    def radius(self) -> int:
        return self.reach

    def __getstate__(self) -> dict[str, Any]:  # travel by name; re-imported by the receiver
        return {"target": self.target, "kwargs": self.kwargs, "reach": self.reach,
                "seen": self.seen}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)
        object.__setattr__(self, "function", _load_function(self.target))

    def forward(self, array, masks, meta, frame):
        result = self.function(array, masks, meta, **dict(self.kwargs))  # type: ignore[misc]
        if isinstance(result, tuple):
            if len(result) not in (2, 3):
                raise ConfigError(f"user step {self.target!r} returned a tuple of {len(result)}; "
                                  "expected array, (array, masks) or (array, masks, meta)")
            out, out_masks = result[0], result[1]
        else:
            out, out_masks = result, masks
        out = np.asarray(out)
        if out.ndim != 3 or out.shape[1:] != array.shape[1:]:
            raise ConfigError(f"user step {self.target!r}: returned shape {out.shape} for input "
                              f"{array.shape}; a step must keep the rows and cols of its input")
        out_masks = np.asarray(out_masks, bool)
        if out_masks.shape != out.shape:  # bands changed: a pixel is valid where all were
            out_masks = out_masks.all(axis=0) if out_masks.ndim == 3 else out_masks
        out_masks = np.broadcast_to(out_masks, out.shape).copy()
        return out, out_masks

    def fit(self, samples, meta):
        if not samples:
            return self
        out, _ = self.forward(samples[0][0], samples[0][1], meta, samples[0][2])
        # the output dtype and band count, seen on real data
        return dataclasses.replace(self, seen=(out.dtype.str, int(out.shape[0])))

    def out_meta(self, meta):
        if self.seen is None:
            return meta
        dtype, bands = np.dtype(self.seen[0]), self.seen[1]
        if dtype == meta.dtype and bands == meta.bands:
            return meta
        return dataclasses.replace(meta, dtype=dtype, bands=bands,
                                   band_names=meta.band_names if bands == meta.bands else ())

    def params(self) -> dict[str, Any]:
        out = dict(self.kwargs)
        if self.reach:
            out["radius"] = self.reach
        return out


def _load_function(target: str) -> Callable[..., Any]:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"user step {target!r}: cannot import module {module_name!r} ({exc}); "
                          "is it installed or on PYTHONPATH?") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"user step {target!r}: module {module_name!r} has no function "
                          f"{attr!r}")
    return fn


def restore_values(meta: Metadata, source: Metadata) -> Metadata:
    """``meta`` with the value fields (dtype, nodata, rescale, band scales) of ``source``."""
    medical = meta.medical
    if medical is not None and source.medical is not None:
        s = source.medical
        medical = replace(medical, photometric=s.photometric, rescale_slope=s.rescale_slope,
                          rescale_intercept=s.rescale_intercept, bits_stored=s.bits_stored)
    geo = meta.geo
    if geo is not None and source.geo is not None and len(source.geo.scales) == meta.bands:
        geo = replace(geo, scales=source.geo.scales, offsets=source.geo.offsets,
                      units=source.geo.units)
    return replace(meta, dtype=source.dtype, nodata=source.nodata, medical=medical, geo=geo)
