"""The engine's errors: one base, each class carrying the kind of problem it is.

``kind`` is the error class's name in the pipeline's exit-code table
(:data:`pipeline.errors.EXIT`): the engine says *what* went wrong (a bad setting,
a bad kernel, data it cannot use), the CLI turns that into a number.  The adapters'
errors (:mod:`io_adapters.errors`) and the pipeline's carry ``kind`` the same way, so
one lookup maps any of them to its exit code.

>>> issubclass(ConfigError, ZSSRError), ConfigError.kind, KernelError.kind
(True, 'usage', 'kernel')
"""

from __future__ import annotations

__all__ = ["ZSSRError", "ConfigError", "KernelError", "NormalizationError"]


class ZSSRError(Exception):
    """Base of the engine's errors; ``kind`` keys the exit-code table."""

    kind = "internal"


class ConfigError(ZSSRError, ValueError):
    """A configuration key or value is invalid (re-exported by :mod:`zssr.config`)."""

    kind = "usage"


class KernelError(ZSSRError, ValueError):
    """A degradation kernel is unusable; the message names its source and the problem."""

    kind = "kernel"


class NormalizationError(ZSSRError, ValueError):
    """The data cannot be normalised (no valid pixels, non-finite values, unsupported dtype)."""

    kind = "data"
