from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(__file__).resolve().parent / "data"

#: ``.ci/run`` sets ZSSR_CI=1: there a check whose system tool or permission is missing
#: fails instead of skipping, so a broken install cannot make it vanish silently.
IN_CI = os.environ.get("ZSSR_CI") == "1"


def require(available: bool, what: str) -> None:
    """Skip the calling test when ``what`` is not available here; fail in CI (ZSSR_CI=1)."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing, and CI requires it (.ci/run installs it)",
                    pytrace=False)
    pytest.skip(f"{what} is missing (.ci/run installs it)")


def require_tool(*names: str) -> str:
    """The path of the first of ``names`` on PATH; skip (fail in CI) when none is."""
    path = next(filter(None, map(shutil.which, names)), None)
    require(path is not None, " or ".join(names))
    return str(path)


@pytest.fixture(autouse=True, scope="session")
def _one_thread_for_module_fixtures():
    """Module- and session-scoped fixtures run before the function-scoped fixture below:
    one torch thread for them too, so a fixture's run and a test's reference agree (float
    sums differ between thread counts: a DICOM value off by 1 was seen)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    """Tests run with a fixed torch thread count so results are reproducible."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def data_dir() -> Path:
    return DATA


def tiny_config(**train):
    from zssr.config import config_from_dict

    t = {"max_iters": 20, "crop_size": 32}
    t.update(train)
    return config_from_dict({"train": t, "net": {"depth": 4, "width": 16},
                             "infer": {"back_projection_iters": 2}})


@pytest.fixture
def rng():
    return np.random.default_rng(0)


#: Skips CI accepts: checks that need hardware CI does not have.
CI_ALLOWED_SKIPS = ("needs a CUDA device",)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI every skip is a failure (a missing tool, package or permission), except the
    hardware ones in :data:`CI_ALLOWED_SKIPS`."""
    outcome = yield
    report = outcome.get_result()
    if not IN_CI or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr)
    if any(allowed in reason for allowed in CI_ALLOWED_SKIPS):
        return
    report.outcome = "failed"
    report.longrepr = f"skipped in CI, where every check must run: {reason}"
