"""Exceptions of the format adapters.

Like rasterio's, each class also subclasses the matching built-in so callers
can catch either.  Every message names the file and the problem.  ``kind`` names
the class of problem in the pipeline's exit-code table (as :mod:`zssr.errors` does).
"""

from __future__ import annotations

__all__ = [
    "IOAdapterError",
    "UnsupportedFormatError",
    "CorruptFileError",
    "InvalidDataError",
    "WriteError",
    "InputNotFoundError",
]


class IOAdapterError(Exception):
    """Base of all format adapter errors."""

    kind = "internal"


class UnsupportedFormatError(IOAdapterError, ValueError):
    """The file is not in a format we read (the message lists the supported ones)."""

    kind = "format"


class CorruptFileError(IOAdapterError, OSError):
    """The file claims a supported format but cannot be decoded (truncated, damaged)."""

    kind = "corrupt"


class InvalidDataError(IOAdapterError, ValueError):
    """The file decodes but its content cannot be super-resolved (dtype, size, geometry)."""

    kind = "data"


class WriteError(IOAdapterError, OSError):
    """An output could not be written (permissions, disk full, path rules)."""

    kind = "write"


class InputNotFoundError(IOAdapterError, FileNotFoundError):
    """The input path does not exist."""

    kind = "input"
