"""Step names -> steps: built-ins, ``zssr.steps`` entry points, allowed user functions.

Steps are named in YAML either as a string (``- modality_lut``) or as a
one-key mapping of the name to its parameters (``- clip: {min: -1024}``).
Beyond the built-ins (:mod:`pipeline.steps.builtin`) a chain may name

* a step published by an installed package in the entry-point group
  ``zssr.steps`` (a :class:`Step` subclass or a function as below): installing
  a package is the user's act, so these are always allowed;
* a user function by dotted path, ``package.module:function``, **only when
  the person running the command allows it** (:func:`user_steps_allowed`:
  ``--allow-user-steps`` or ``ZSSR_ALLOW_USER_STEPS=1``), never because the
  file says so: a config or job file is data, and a dotted path imports any
  installed module and calls any function in it with chosen arguments
  (``numpy:save`` was).  Allowed, it is imported with :mod:`importlib` (never
  ``eval``) and called as ``function(array, masks, meta, **params)``; it
  returns the array, ``(array, masks)`` or ``(array, masks, meta)``; the
  reserved parameter ``radius`` (default 0) declares its spatial reach.

>>> step = step_from_config({"clip": {"min": 0, "max": 1}})
>>> step.name, step.pointwise
('clip', True)
"""

from __future__ import annotations

import dataclasses
import logging
import re
import types
import typing
from collections.abc import Callable
from importlib import metadata as importlib_metadata
from typing import Any, Literal, get_args, get_origin, get_type_hints

from zssr.config import ConfigError
from zssr.typed import build

from .base import Step, UserStep, _load_function
from .builtin import BUILTIN_STEPS
from .policy import ALLOW_USER_STEPS_ENV, user_steps_allowed

__all__ = ["ENTRY_POINT_GROUP", "available_steps", "step_class", "step_from_config",
           "build_params", "describe_steps"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "zssr.steps"
_DOTTED = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

# ----------------------------------------------------------------------------- registry


def _builtin() -> dict[str, type[Step]]:
    return {cls.name: cls for cls in BUILTIN_STEPS}


def _entry_points() -> dict[str, importlib_metadata.EntryPoint]:
    try:
        eps = importlib_metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception as exc:  # noqa: BLE001 - a broken installed distribution
        log.warning("cannot list entry points %s: %s", ENTRY_POINT_GROUP, exc)
        return {}
    return {ep.name: ep for ep in eps}


def available_steps() -> list[str]:
    """Names of the built-in steps and of the installed ``zssr.steps`` entry points."""
    return sorted(set(_builtin()) | set(_entry_points()))


def step_class(name: str) -> type[Step]:
    """The built-in step class called ``name`` (error lists the available steps)."""
    builtin = _builtin()
    if name not in builtin:
        raise ConfigError(_unknown(name))
    return builtin[name]


def _unknown(name: str) -> str:
    close = [n for n in available_steps() if n[:3] == name[:3]]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return (f"unknown step {name!r}{hint}; available steps: {', '.join(available_steps())}; "
            "or a user function as 'package.module:function'")


def _refuse_user_step(target: str) -> ConfigError:
    return ConfigError(
        f"user step {target!r}: a config or job file may name a function to import only "
        f"when you allow it: pass --allow-user-steps or set {ALLOW_USER_STEPS_ENV}=1 (or "
        f"publish it as a {ENTRY_POINT_GROUP!r} entry point); built-in steps: "
        + ", ".join(sorted(_builtin())))


def _user_step(target: str, fn: Callable[..., Any], params: dict[str, Any]) -> UserStep:
    params = dict(params)
    reach = params.pop("radius", 0)
    if isinstance(reach, bool) or not isinstance(reach, int) or reach < 0:
        raise ConfigError(f"user step {target!r}: 'radius' = {reach!r}; expected an integer "
                          ">= 0 (0: pointwise)")
    return UserStep(target=target, kwargs=tuple(sorted(params.items())), reach=reach,
                    function=fn)


def _split_entry(entry: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and len(entry) == 1:
        name, params = next(iter(entry.items()))
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ConfigError(f"step {name!r}: parameters must be a mapping, got {params!r}")
        return str(name), params
    raise ConfigError(f"chain step {entry!r}: expected a step name or a one-key mapping "
                      "{name: {parameter: value}}")


def step_from_config(entry: Any) -> Step:
    """Build one step from its YAML form (``"name"`` or ``{name: {params}}``)."""
    name, params = _split_entry(entry)
    if ":" in name:
        if not _DOTTED.match(name):
            raise ConfigError(f"user step {name!r}: expected 'package.module:function'")
        if not user_steps_allowed():  # before the import: importing runs the module's code
            raise _refuse_user_step(name)
        return _user_step(name, _load_function(name), params)
    builtin = _builtin()
    if name in builtin:
        return build_params(builtin[name], params)
    eps = _entry_points()
    if name in eps:
        obj = eps[name].load()
        if isinstance(obj, type) and issubclass(obj, Step):
            return build_params(obj, params)
        if callable(obj):
            return _user_step(name, obj, params)
        raise ConfigError(f"entry point {name!r} in {ENTRY_POINT_GROUP}: not a Step or function")
    raise ConfigError(_unknown(name))


# ----------------------------------------------------------------------------- parameters


def build_params(cls: type[Step], params: dict[str, Any]) -> Step:
    """Validate ``params`` against the dataclass fields of ``cls`` (the project's one typed
    loader, :func:`zssr.typed.build`) and build the step."""
    step = build(cls, params, where=lambda key: f"step {cls.name!r}: parameter {key!r}",
                 unknown=lambda key, names: f"step {cls.name!r}: unknown parameter {key!r}; "
                 "parameters: " + (", ".join(names) or "none"))
    step.validate()
    return step


def _type_name(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "|".join(map(str, args))
    if origin is tuple:
        return f"list[{_type_name(args[0])}]"
    return getattr(hint, "__name__", str(hint)).replace("NoneType", "null")


def describe_steps() -> list[dict[str, Any]]:
    """One record per available step: name, summary, kind, inverse, parameters."""
    out = []
    for name, cls in sorted(_builtin().items()):
        hints = get_type_hints(cls)
        params = [{"name": f.name, "type": _type_name(hints[f.name]), "default": f.default,
                   "doc": f.metadata.get("doc", "")}
                  for f in dataclasses.fields(cls) if not f.name.startswith("_")]  # type: ignore
        doc = (cls.__doc__ or "").strip().splitlines()
        out.append({"name": name, "summary": doc[0] if doc else "", "pointwise": cls.pointwise,
                    "exact_inverse": cls.exact_inverse, "params": params,
                    "source": "built-in"})
    for name, ep in sorted(_entry_points().items()):
        if name not in _builtin():
            out.append({"name": name, "summary": f"entry point {ep.value}", "pointwise": None,
                        "exact_inverse": None, "params": [],
                        "source": ENTRY_POINT_GROUP})
    return out
