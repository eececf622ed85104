"""A run's settings become each input's :class:`ImageJob` in one place
(:meth:`RunSettings.image_job`), and no ImageJob field is left out of it unnoticed."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np

from pipeline.image.job import ImageJob
from pipeline.runs.settings import IMAGE_FIELDS, RUN_ONLY_IMAGE_FIELDS, RunSettings
from pipeline.steps.chain import ChainSpec
from zssr.config import config_from_dict


def test_every_image_job_field_is_taken_from_the_settings_or_said_not_to_be():
    job_fields = {f.name for f in fields(ImageJob)}
    assert set(IMAGE_FIELDS) | set(RUN_ONLY_IMAGE_FIELDS) == job_fields
    assert not set(IMAGE_FIELDS) & set(RUN_ONLY_IMAGE_FIELDS)
    assert set(IMAGE_FIELDS) <= {f.name for f in fields(RunSettings)}


def test_image_job_carries_every_run_setting():
    kernel = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16
    fallback = np.full((3, 3), 1 / 9)
    chain = ChainSpec.from_config({"pre": ["clip"]})
    given = {"scale": 3.0, "config": config_from_dict({"train": {"max_iters": 7}}),
             "kernel": kernel, "fallback_kernel": fallback, "kernel_groups": ((0,), (2,)),
             "bands": (2, 0), "tile": 96,
             "halo": 11, "device": "cuda:1", "overwrite": True, "chain": chain,
             "max_pixels": 12345}
    assert set(given) == set(IMAGE_FIELDS)  # every field set away from its default
    defaults = ImageJob(input=Path("x"), output=Path(), scale=2.0)
    assert all(not np.array_equal(getattr(defaults, k), v) if isinstance(v, np.ndarray)
               else getattr(defaults, k) != v for k, v in given.items())
    job = RunSettings(out_dir=Path("run"), **given).image_job(Path("in.tif"))
    assert job.input == Path("in.tif") and job.writer_options == {}
    for key, value in given.items():
        got = getattr(job, key)
        assert (np.array_equal(got, value) if isinstance(value, np.ndarray) else got == value), key


def test_an_empty_chain_is_no_chain():
    settings = RunSettings(out_dir=Path("run"), scale=2.0, chain=ChainSpec.from_config({}))
    assert settings.image_job(Path("a.png")).chain is None
