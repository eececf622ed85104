"""YAML text to plain data, with limits: the one YAML parser of every config and job file.

Config files, presets, job files and ``--set`` values are data written by
someone else.  :func:`parse_yaml` turns their text into plain data with
``yaml.SafeLoader`` (no Python tags) and refuses, with one line naming the
source:

* text over :data:`MAX_YAML_BYTES` (1 MiB; our largest preset is < 2 KiB);
* more than :data:`MAX_ALIASES` alias uses (``*name``): a 1 KB "billion laughs"
  file nests ~90 of them and expands to 10^9 items for whoever walks it;
* more than :data:`MAX_NODES` nodes, nesting deeper than :data:`MAX_DEPTH`;
* ``.inf`` / ``.nan`` anywhere (:func:`refuse_non_finite`, naming the key).

Numbers in exponent form are numbers as in YAML 1.2 and JSON (``1e-4``, ``1e6``,
``2.5E3``): PyYAML follows YAML 1.1, where they are strings, so ``--set
train.learning_rate=1e-4`` used to fail with "expected a number, got '1e-4'".

Reading the *file* safely (regular files only, no blocking on a FIFO, the size
checked before reading, UTF-8 only) is :func:`configs.load_yaml`, the one
place that opens config and job files; it hands the text to this function.
This module lives in ``zssr`` because ``zssr.config.parse_override`` parses
``--set`` values with it; it never touches a path.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["ConfigError", "MAX_YAML_BYTES", "MAX_ALIASES", "MAX_NODES", "MAX_DEPTH",
           "parse_yaml", "refuse_non_finite"]

MAX_YAML_BYTES = 1 << 20
MAX_ALIASES = 16  # no shipped preset or job example uses one
MAX_NODES = 100_000
MAX_DEPTH = 64


class _LimitedLoader(yaml.SafeLoader):
    """``SafeLoader`` that counts aliases, nodes and depth while composing."""

    def __init__(self, stream: str, *, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self.aliases = self.nodes = self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise ConfigError(f"{self.source}: more than {MAX_ALIASES} YAML aliases (*name); "
                                  "config files are plain data, write the values out")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ConfigError(f"{self.source}: more than {MAX_NODES} YAML nodes; not a config")
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise ConfigError(f"{self.source}: YAML nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


# YAML 1.1's float pattern needs a dot and a signed exponent; these are YAML 1.2 floats too
_LimitedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"))


def parse_yaml(text: str, *, source: str, key: str = "") -> Any:
    """Plain data of YAML ``text`` (None when empty); errors are :class:`ConfigError`.

    ``key``: the config key the text is the value of (``--set``), for the messages.
    """
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{source}: {len(text)} characters of YAML; the limit is "
                          f"{MAX_YAML_BYTES} (1 MiB)")
    loader = _LimitedLoader(text, source=source)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None
    finally:
        loader.dispose()
    refuse_non_finite(data, source=source, key=key)
    return data


def refuse_non_finite(data: Any, *, source: str, key: str = "") -> None:
    """Raise :class:`ConfigError` naming the key of the first ``.inf``/``.nan`` in ``data``."""
    budget = [MAX_NODES * 10]  # aliases may share subtrees: bound the walk, not the file

    def walk(value: Any, where: str) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise ConfigError(f"{source}: YAML expands to more than {MAX_NODES * 10} values")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{source}: config key {where or '(top level)'!r} = {value!r}; "
                              "expected a finite number (.inf and .nan are not allowed)")
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where}.{k}" if where else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")

    walk(data, key)
