"""The one typed loader: plain YAML/CLI data -> frozen dataclasses, with one-line errors.

Every config the project reads goes through :func:`coerce` and :func:`build`: the
engine's sections (:func:`zssr.config.config_from_dict`), the pipeline sections
(:mod:`pipeline.runs.config`), chain step parameters (:mod:`pipeline.steps.registry`)
and batch job specs (:mod:`workflows.jobspec`).  A field's annotation is its type
(``int``, ``float``, ``bool``, ``str``, ``Literal[...]``, ``tuple[T, ...]``,
``tuple[A, B]``, ``dict[str, Any]``, ``X | None``, a nested dataclass); the caller names the key as the
user wrote it (``where``), so every message says which key and what is wrong:

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Blur:
...     sigma: float = 1.0
...     mode: Literal["gaussian", "box"] = "gaussian"
>>> build(Blur, {"sigma": 2}, where=lambda k: f"config key {k!r}")
Blur(sigma=2.0, mode='gaussian')
>>> build(Blur, {"mode": "disk"}, where=lambda k: f"config key {k!r}")
Traceback (most recent call last):
...
zssr.errors.ConfigError: config key 'mode': invalid value 'disk'; allowed: gaussian, box
>>> build(Blur, {"sgima": 2}, where=lambda k: f"config key {k!r}")
Traceback (most recent call last):
...
zssr.errors.ConfigError: unknown config key 'sgima'; allowed keys: sigma, mode
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args, get_origin, get_type_hints

from .errors import ConfigError

__all__ = ["coerce", "build", "public_fields"]


def coerce(where: str, value: Any, hint: Any) -> Any:
    """``value`` converted to the annotation ``hint``, or :class:`ConfigError` starting
    with ``where`` (e.g. ``"config key 'train.max_iters'"``)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(where, value, inner[0])
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: invalid value {value!r}; "
                              f"allowed: {', '.join(map(str, args))}")
        return value
    if origin is dict:  # a free-form mapping (job spec overrides, a chain): checked downstream
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(where, v, args[0]) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(coerce(where, v, a) for v, a in zip(value, args, strict=True))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: expected an integer, got {value!r} "
                              "(.inf and .nan are not allowed)")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} for {where}")  # programming error


def public_fields(cls: type) -> list[str]:
    """The dataclass fields a user may set (not those starting with ``_``)."""
    return [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")]


def build(cls: type, data: dict[str, Any], *, where: Callable[[str], str],
          unknown: Callable[[str, Sequence[str]], str] | None = None,
          prefix: str = "") -> Any:
    """``cls(**data)`` with every value coerced to its field's annotation; nested
    dataclasses are built from nested mappings (their keys named ``prefix.key``).

    ``where(key)`` names a key in messages; ``unknown(key, allowed)`` is the message for
    a key ``cls`` does not have (default: ``unknown config key 'k'; allowed keys: ...``).
    ``validate()`` is the caller's to call.
    """
    hints = get_type_hints(cls)
    names = public_fields(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            allowed = [f"{prefix}{n}" for n in names]
            raise ConfigError(unknown(full, allowed) if unknown else
                              f"unknown config key {full!r}; allowed keys: "
                              + ", ".join(allowed))
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{where(full)}: expected a mapping of "
                                  f"{', '.join(public_fields(hint))}")
            kwargs[key] = build(hint, value, where=where, unknown=unknown, prefix=f"{full}.")
        else:
            kwargs[key] = coerce(where(full), value, hint)
    return cls(**kwargs)
