from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(__file__).resolve().parent / "data"


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
