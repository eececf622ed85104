"""The per-image plan resolves its halo through ``pipeline.image.halo.resolve_halo`` (issue 15):
``--halo`` below the dependency radius still runs, with a warning naming the radius."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from geometry import Scale
from io_adapters.base import Metadata
from pipeline.cli.main import main
from pipeline.image.job import ImageJob, plan_step

DATA = Path(__file__).resolve().parent / "data"
SMALL = DATA / "io" / "plain" / "bridge_40x48.png"
WARNING = ("halo 2 < dependency radius 22 LR px: tiled output will differ from whole-image "
           "output near tile seams; use halo='auto'")


def _meta() -> Metadata:
    return Metadata(path=Path("in.png"), format="plain", bands=1, rows=100, cols=90,
                    dtype=np.dtype(np.uint8))


def test_a_small_halo_is_kept_with_a_warning(caplog):
    job = ImageJob(input=Path("in.png"), output=Path("out.png"), scale=2.0, halo=2, tile=64)
    with caplog.at_level(logging.WARNING, logger="pipeline.image.halo"):
        plan = plan_step(_meta(), job, 2.0)
    assert plan.grid.halo == (2, 2) and plan.scale == Scale(2, 2)
    assert caplog.messages == [WARNING]  # the paper config needs 22 px at x2


def test_auto_and_large_halos_are_silent(caplog):
    job = ImageJob(input=Path("in.png"), output=Path("out.png"), scale=2.0, tile=64)
    with caplog.at_level(logging.WARNING, logger="pipeline.image.halo"):
        assert plan_step(_meta(), job, 2.0).grid.halo == (22, 22)  # None: the radius
        assert plan_step(_meta(), dataclasses.replace(job, halo=30), 2).grid.halo == (30, 30)
    assert caplog.messages == []


def test_zssr_upscale_halo_2_warns_with_the_radius(tmp_path, caplog):
    tiny = ["--set", "train.max_iters=2", "--set", "train.crop_size=16", "--set",
            "net.depth=3", "--set", "net.width=4", "-q"]
    with caplog.at_level(logging.WARNING, logger="pipeline.image.halo"):
        assert main(["upscale", str(SMALL), str(tmp_path / "o.png"), "--scale", "2",
                     "--halo", "2", *tiny]) == 0
    assert [m for m in caplog.messages if m.startswith("halo 2 < dependency radius 20 LR px")]
    assert (tmp_path / "o.png").is_file()
