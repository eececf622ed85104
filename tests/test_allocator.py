"""pipeline.runs.allocator: freed memory stays on the heap (glibc), and the opt-out works.

Each case runs in a fresh interpreter: the setting is process-wide and cannot be undone.
A probe allocates and frees 48 MB in 4 MB blocks (a training step's activations), then
allocates them again and counts the minor page faults of the second round: under glibc's
defaults the first round's memory was trimmed back to the kernel and faults in again.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's")

PROBE = """
import resource
import numpy as np
from pipeline.runs.allocator import keep_freed_memory

def step():
    blocks = [np.ones(2 ** 20, np.float32) for _ in range(12)]  # 12 x 4 MB, touched
    del blocks

applied = keep_freed_memory() and keep_freed_memory()
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(applied, faults > 5000)  # 48 MB is 12 288 pages
"""


def _probe(opt_out: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "ZSSR_SYSTEM_MALLOC"}
    if opt_out is not None:
        env["ZSSR_SYSTEM_MALLOC"] = opt_out
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True,
                         text=True, check=True, env=env)
    return out.stdout.split()


@pytest.mark.parametrize("opt_out", [None, "0"])
def test_freed_memory_is_reused_without_page_faults(opt_out):
    assert _probe(opt_out) == ["True", "False"]


def test_opt_out_keeps_glibc_defaults_and_their_page_faults():
    assert _probe("1") == ["False", "True"]
