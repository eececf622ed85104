"""Process-wide allocator setting: stop glibc from handing freed memory back every step.

glibc's ``malloc`` adapts two thresholds as a program runs: blocks above the *mmap
threshold* get pages of their own (``mmap``), and when more than the *trim threshold*
(twice the mmap threshold) lies free at the top of the heap, it goes back to the kernel.
A training step allocates and frees the same tens of megabytes every iteration (at crop
128: eight 4 MB activations and their gradients), so the trim returns them at the end of
each step and the kernel zero-fills them again, page by page, in the next: 6 000-15 000
page faults and about a tenth of the step (BENCHMARKS.md section 8).

:func:`keep_freed_memory` fixes both thresholds instead: blocks up to 32 MB (glibc's
ceiling for the mmap threshold) come from the heap, larger ones still get their own
pages and go back when freed, and up to ``TRIM_THRESHOLD`` of free memory stays at the
top of the heap for the next step.  The peak resident size is the heap's high-water mark
either way (BENCHMARKS.md section 5a measures it).  Setting ``ZSSR_SYSTEM_MALLOC=1``
keeps glibc's defaults; other C libraries (musl, macOS) have no ``mallopt`` and are
left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

__all__ = ["keep_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "ENV_OFF"]

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
MMAP_THRESHOLD = 32 * 2 ** 20  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 256 * 2 ** 20
ENV_OFF = "ZSSR_SYSTEM_MALLOC"

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the setting once per process; True when glibc accepted it."""
    global _applied
    if _applied is None:
        _applied = _apply()
        log.debug("malloc thresholds fixed (mmap 32 MB, trim 256 MB): %s", _applied)
    return _applied


def _apply() -> bool:
    if os.environ.get(ENV_OFF, "") not in ("", "0") or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
