"""One estimated kernel per band group (``kernel_groups``, issue 16.2), and the presets
that estimate instead of assuming (issue 16.3).

The HR image is a real Landsat 8 B2-B5 stack (tests/data/io/geotiff/landsat_192x192.tif,
every pixel valid); here its bands 1-2 are degraded with KA and bands 3-4 with KB, two
anisotropic Gaussians of crossed orientation (by ZSSR's numeric-kernel resize, as in
tests/test_kernel_estimation.py, whose independent centred-kernel error ``_err`` measures
the estimates).  Measured: each group's estimate is 0.27 / 0.12 from its own kernel and
0.61 / 0.40 from the other group's; KA and KB are 0.43 apart.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import DATA
from test_kernel_estimation import KERNEL_TOL, _aniso, _err
from test_kernel_pipeline import CFG, TINY, _pixels

from io_adapters.detect import open_reader
from pipeline.cli.main import main
from pipeline.image.kernel_estimate import estimate_file_kernel
from zssr.kernels import prepare_kernel
from zssr.resize import imresize

KA = _aniso((3.2, 0.8), math.radians(15))  # bands 1, 2
KB = _aniso((0.9, 2.6), math.radians(-30))  # bands 3, 4
GROUPS = ["--set", "kernel_groups=[[1,2],[3,4]]"]


def _degrade(hr: np.ndarray, k: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(hr.astype(np.float64))
    lr = imresize(x, scale=0.5, kernel=prepare_kernel(k, 2.0).double()).numpy()
    return np.clip(np.round(lr), 1, 65535).astype(np.uint16)  # 0 is the stack's nodata


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Path:
    """The Landsat stack, bands 1-2 degraded by KA and 3-4 by KB: 96 x 96 x 4 uint16."""
    with rasterio.open(DATA / "io" / "geotiff" / "landsat_192x192.tif") as ds:
        hr, profile = ds.read(), ds.profile
    lr = np.concatenate([_degrade(hr[:2], KA), _degrade(hr[2:], KB)])
    path = tmp_path_factory.mktemp("groups") / "landsat_lr.tif"
    profile.update(width=lr.shape[2], height=lr.shape[1],
                   transform=profile["transform"] * profile["transform"].scale(2, 2))
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(lr)
    return path


def test_each_group_gets_its_own_kernel(stack):
    with open_reader(stack) as reader:
        a, b = (estimate_file_kernel(reader, scale=2, config=CFG, where="x", bands=g)
                for g in ([0, 1], [2, 3]))
    assert a.used == b.used == "estimated"
    assert _err(a.kernel, KA) < KERNEL_TOL and _err(b.kernel, KB) < KERNEL_TOL
    assert _err(a.kernel, KA) < _err(a.kernel, KB) - 0.2
    assert _err(b.kernel, KB) < _err(b.kernel, KA) - 0.2


def test_nodata_of_one_group_stays_out_of_the_others_estimate(stack, tmp_path):
    with rasterio.open(stack) as ds:
        lr, profile = ds.read(), ds.profile
    lr[2:, :8, :8] = 0  # nodata in bands 3-4 only: in one of the four 64 x 64 windows
    path = tmp_path / "hole.tif"
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(lr)
    with open_reader(path) as reader:
        a, b = (estimate_file_kernel(reader, scale=2, config=CFG, where="x", bands=g)
                for g in ([0, 1], [2, 3]))
    assert (a.info["windows"], b.info["windows"]) == (4, 3)


def test_grouped_upscale_equals_stacked_group_runs(stack, tmp_path, capsys):
    out = tmp_path / "grouped.tif"
    assert main(["upscale", str(stack), str(out), "--scale", "2", "--kernel", "estimate",
                 *GROUPS, *TINY[:-1]]) == 0
    line = capsys.readouterr().out
    assert "kernel bands 1,2: estimated Gaussian" in line
    assert "; bands 3,4: estimated Gaussian" in line
    parts = []
    for bands in ("1,2", "3,4"):
        part = tmp_path / f"bands{bands[0]}.tif"
        assert main(["upscale", str(stack), str(part), "--scale", "2", "--kernel", "estimate",
                     "--bands", bands, *TINY]) == 0
        parts.append(_pixels(part))
    grouped = _pixels(out)
    np.testing.assert_array_equal(grouped, np.concatenate(parts))
    with rasterio.open(out) as ds:  # one output, at the fixture's own 600 m (the LR is 1200 m)
        assert ds.count == 4 and ds.res == pytest.approx((600.08, 600.85), abs=0.01)


@pytest.mark.parametrize("args, match", [
    (GROUPS, "one kernel per band group is estimated; add --kernel estimate"),
    (["--kernel", "estimate", "--set", "kernel_groups=[[1,2],[3]]"], "band 4 is in no group"),
    (["--kernel", "estimate", "--bands", "1,2,3", *GROUPS],
     r"band 4 is not among the bands read \(1, 2, 3\)"),
    (["--kernel", "estimate", "--set", "kernel_groups=[[1,2],[2,3]]"], "band 2 twice"),
    (["--kernel", "estimate", "--set", "kernel_groups=[[1],[]]"], "an empty group"),
])
def test_bad_groups_fail_in_one_line_before_any_work(stack, tmp_path, capsys, args, match):
    out = tmp_path / "o.tif"
    code = main(["upscale", str(stack), str(out), "--scale", "2", *args, *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code not in (0, 10) and len(err) == 1 and "kernel_groups" in err[0]
    assert re.search(match, err[0])
    assert not out.exists()


@pytest.mark.parametrize("preset, path", [
    ("landsat", None),  # the stack above: its Gaussian becomes the fallback
    ("ct", DATA / "dicom" / "CT_small.dcm"),  # a chain to Hounsfield units, bicubic fallback
])
def test_presets_estimate_with_set_kernel_estimate(stack, tmp_path, capsys, preset, path):
    src = path or stack
    suffix = ".tif" if path is None else ".dcm"
    a, b = tmp_path / f"set{suffix}", tmp_path / f"flag{suffix}"
    assert main(["upscale", str(src), str(a), "--scale", "2", "--preset", preset,
                 "--set", "kernel=estimate", *TINY[:-1]]) == 0
    assert f"{a}: kernel estimated" in capsys.readouterr().out
    assert main(["upscale", str(src), str(b), "--scale", "2", "--preset", preset,
                 "--kernel", "estimate", *TINY]) == 0
    np.testing.assert_array_equal(_pixels(a), _pixels(b))
