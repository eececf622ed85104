"""YAML presets, validated into typed config objects once, at the edge.

A preset is a small diff over the engine defaults (:class:`zssr.config.ZSSRConfig`),
or over another preset named by ``extends:``, each value with a comment saying why.  Resolution order: defaults <- preset <-
config file <- ``--set key=value`` overrides.

Besides the engine's sections (``net``, ``train``, ``infer``, ``norm``,
``scale_steps``, ...) a preset may carry the pipeline sections
:data:`PIPELINE_SECTIONS` (``chain``, ``tile``, ``bands``, ``kernel_sigma``, ``kernel``,
``kernel_groups``, ``through_plane``);
they are split off here and validated by :mod:`pipeline.runs.config`.

>>> cfg, raw = resolve_config(preset="paper", overrides=["train.max_iters=10"])
>>> cfg.train.max_iters
10
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from pathlib import Path
from typing import Any

from zssr.config import ConfigError, ZSSRConfig, config_from_dict, merge_dicts, parse_override
from zssr.yamldata import MAX_YAML_BYTES, parse_yaml

__all__ = ["PRESETS_DIR", "PIPELINE_SECTIONS", "available_presets", "load_preset", "load_yaml",
           "read_config_text", "resolve_config", "split_sections"]

PRESETS_DIR = Path(__file__).resolve().parent
#: Top-level keys that configure the pipeline around the engine (pipeline.runs.config).
PIPELINE_SECTIONS = ("chain", "tile", "bands", "kernel_sigma", "kernel", "kernel_groups",
                     "through_plane")


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def read_config_text(path: str | Path, *, max_bytes: int = MAX_YAML_BYTES) -> str:
    """The UTF-8 text of config or job file ``path``, read safely; errors name the file.

    Only a regular file is read: ``/dev/zero``, a FIFO, a socket or a folder is refused
    (checked with ``stat`` before opening, and again with ``fstat`` on the open
    descriptor, which is opened ``O_NONBLOCK`` so a FIFO swapped in between cannot hang
    the process).  A file over ``max_bytes`` is refused before it is read.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise ConfigError(f"{path}: is a folder; give a config or job file")
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{path}: not a regular file (a device, FIFO or socket); "
                              "a config or job file must be one")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: not a regular file; a config or job file must be one")
        if info.st_size > max_bytes:
            raise ConfigError(f"{path}: {info.st_size} bytes; a config or job file is at most "
                              f"{max_bytes} bytes")
        raw = b""
        while len(raw) <= max_bytes:  # the file may have grown since fstat
            chunk = os.read(fd, max_bytes + 1 - len(raw))
            if not chunk:
                break
            raw += chunk
    except OSError as exc:
        code = errno.errorcode.get(exc.errno or 0, "")
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or code})") from exc
    finally:
        os.close(fd)
    if len(raw) > max_bytes:
        raise ConfigError(f"{path}: more than {max_bytes} bytes; a config file is at most that")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                          f"{exc.start}); save the file as UTF-8") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping: the one loader of config, preset and job files.

    :func:`read_config_text` reads the file (regular files only, size-capped, UTF-8),
    :func:`zssr.yamldata.parse_yaml` parses it (safe tags only, aliases and nodes capped,
    no ``.inf``/``.nan``); errors are one line naming the file.
    """
    path = Path(path)
    data = parse_yaml(read_config_text(path), source=str(path))
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
    data (pipeline sections included: :func:`pipeline.runs.config.resolve_run_config` types
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
