"""YAML presets, validated into typed config objects once, at the edge.

A preset is a small diff over the engine defaults (:class:`zssr.config.ZSSRConfig`),
or over another preset named by ``extends:``, each value with a comment saying why.  Resolution order: defaults <- preset <-
config file <- ``--set key=value`` overrides.

Besides the engine's sections (``net``, ``train``, ``infer``, ``norm``,
``scale_steps``, ...) a preset may carry the pipeline sections
:data:`PIPELINE_SECTIONS` (``chain``, ``tile``, ``bands``, ``kernel_sigma``);
they are split off here and validated by :mod:`pipeline.run_config`.

>>> cfg, raw = resolve_config(preset="paper", overrides=["train.max_iters=10"])
>>> cfg.train.max_iters
10
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from zssr.config import ConfigError, ZSSRConfig, config_from_dict, merge_dicts, parse_override

__all__ = ["PRESETS_DIR", "PIPELINE_SECTIONS", "available_presets", "load_preset", "load_yaml",
           "resolve_config", "split_sections"]

PRESETS_DIR = Path(__file__).resolve().parent
#: Top-level keys that configure the pipeline around the engine (pipeline.run_config).
PIPELINE_SECTIONS = ("chain", "tile", "bands", "kernel_sigma")


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping, got {type(data).__name__}")
    return data


def load_preset(name: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A preset's data; ``extends: BASE`` merges the preset over preset BASE first."""
    path = PRESETS_DIR / f"{name}.yaml"
    if not isinstance(name, str) or not name or "/" in name or not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available presets: "
                          + ", ".join(available_presets()))
    data = load_yaml(path)
    base = data.pop("extends", None)
    if base is None:
        return data
    if base in (*_seen, name):
        raise ConfigError(f"{path}: presets extend each other in a cycle: "
                          + " -> ".join([*_seen, name, str(base)]))
    return merge_dicts(load_preset(base, (*_seen, name)), data)


def split_sections(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(engine part, pipeline part)`` of merged config data; unknown keys are errors."""
    engine_keys = [f.name for f in dataclasses.fields(ZSSRConfig)]
    unknown = [k for k in data if k not in engine_keys and k not in PIPELINE_SECTIONS]
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r}; allowed keys: "
                          + ", ".join([*engine_keys, *PIPELINE_SECTIONS]))
    return ({k: v for k, v in data.items() if k in engine_keys},
            {k: v for k, v in data.items() if k in PIPELINE_SECTIONS})


def resolve_config(*, preset: str | None = None, config_file: str | Path | None = None,
                   overrides: list[str] | tuple[str, ...] = ()) -> tuple[ZSSRConfig, dict]:
    """Defaults <- preset <- file <- overrides; returns the typed engine config and the merged
    data (pipeline sections included: :func:`pipeline.run_config.resolve_run_config` types
    them)."""
    data: dict[str, Any] = {}
    if preset:
        data = merge_dicts(data, load_preset(preset))
    if config_file:
        data = merge_dicts(data, load_yaml(config_file))
        try:  # checked here so the message can name the file
            config_from_dict(split_sections(data)[0])
        except ConfigError as exc:
            raise ConfigError(f"{config_file}: {exc}") from None
    for text in overrides:
        data = merge_dicts(data, parse_override(text))
    engine, _ = split_sections(data)
    return config_from_dict(engine), data
