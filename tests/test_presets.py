"""Every preset end to end on tiny real data; pipeline sections of configs; CT in HU."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from configs import PRESETS_DIR, available_presets, resolve_config
from io_adapters.detect import open_reader
from io_adapters.dicom import to_real_units
from pipeline.cli.cmd_upscale import pipeline_options
from pipeline.cli.main import main
from pipeline.runs.config import PipelineConfig, pipeline_config_from_dict, resolve_run_config
from zssr.config import ConfigError

DATA = Path(__file__).resolve().parent / "data"
TINY = ["--set", "train.max_iters=5", "--set", "net.depth=3", "--set", "net.width=8",
        "--set", "infer.back_projection_iters=1", "-q"]
KERNEL = DATA / "kernels" / "BSD100_100_lr_rand_ker_c_X2_0.mat"

# preset -> (input, output suffix, scale, extra flags)
CASES = {
    "paper": (DATA / "io" / "plain" / "bridge_40x48.png", ".png", 2, []),
    "paper-gradual": (DATA / "io" / "plain" / "butterfly_48x64.png", ".png", 2, []),
    "fast": (DATA / "io" / "plain" / "butterfly_48x64.png", ".png", 2, []),
    "fast-gradual": (DATA / "io" / "plain" / "bridge_40x48.png", ".png", 2, []),
    "real": (DATA / "io" / "plain" / "butterfly16_48x64.png", ".png", 2, []),
    "kernel": (DATA / "io" / "plain" / "bridge_40x48.png", ".png", 2, ["--kernel", str(KERNEL)]),
    "gradual-x4": (DATA / "io" / "plain" / "bridge_40x48.png", ".png", 4, []),
    "sentinel2": (DATA / "io" / "geotiff" / "landsat_64x80.tif", ".tif", 2, ["--tile", "32"]),
    "landsat": (DATA / "io" / "geotiff" / "landsat_64x80.tif", ".tif", 2, []),
    "ct": (DATA / "dicom" / "CT_small.dcm", ".dcm", 2, []),
    "mr": (DATA / "dicom" / "MR_small.dcm", ".dcm", 2, ["--tile", "24"]),
    "scene": (DATA / "io" / "geotiff" / "landsat_64x80.tif", ".tif", 2, ["--tile", "32"]),
    "scene-fast": (DATA / "io" / "geotiff" / "landsat_64x80.tif", ".tif", 2, ["--tile", "32"]),
    # 48 x 64: too small to estimate from, so this runs the fallback (bicubic); the
    # estimate itself is tested in tests/test_kernel_pipeline.py
    "blind": (DATA / "io" / "plain" / "butterfly_48x64.png", ".png", 2, []),
    # through-plane (implied by the presets): the factor is --scale-z; None: a NIfTI volume
    # made in the test (MR-like: 4 slices of 3 mm, 0.9 x 0.8 mm pixels)
    "ct-thin": (DATA / "dicom" / "series", ".nii", 2.5, []),
    "mr-thin": (None, ".nii.gz", 2, []),
}


def test_every_preset_has_an_end_to_end_case():
    assert set(available_presets()) == set(CASES)


def test_paper_gradual_runs_in_eval(tmp_path):
    import json
    import shutil
    hr = tmp_path / "hr"
    hr.mkdir()
    shutil.copy(DATA / "sr" / "head_HR.png", hr)
    report = tmp_path / "eval.json"
    assert main(["eval", "--hr", str(hr), "--scale", "2", "--method", "zssr",
                 "--preset", "paper-gradual", *TINY, "--json", str(report)]) == 0
    row = json.loads(report.read_text())["images"][0]
    assert row["iterations"] == 6 * 5  # six steps of train.max_iters=5
    assert 34.9 < row["psnr_y"] < 45  # beats bicubic (34.89 dB; measured 35.55 dB)


def _valid_mean(path: Path) -> tuple[float, tuple]:
    with open_reader(path) as r:
        a, m = r.read().astype(np.float64), r.read_masks()
        return float(a[m].mean()), (r.meta.dtype, r.meta.bands, r.meta.rows, r.meta.cols)


def _thin_end_to_end(preset: str, tmp_path: Path) -> None:
    """A through-plane preset: the volume's slices (scale - 1) per gap more, same units."""
    import nibabel as nib

    src, suffix, scale, extra = CASES[preset]
    if src is None:
        src = tmp_path / "mr.nii"
        vol = np.random.default_rng(3).gamma(2.0, 150.0, (20, 18, 4)).astype(np.int16)
        nib.save(nib.Nifti1Image(vol, np.diag([0.9, 0.8, 3.0, 1.0])), src)
    out = tmp_path / f"out{suffix}"
    assert main(["upscale", str(src), str(out), "--scale-z", str(scale), "--preset", preset,
                 *TINY, *extra]) == 0  # --through-plane implied by the preset
    with open_reader(src) as r:
        frames, meta = r.meta.frames, r.meta
        mean_in = float(np.mean([r.read(frame=k).astype(float).mean() for k in range(frames)]))
    img = nib.load(out)
    assert img.shape == (meta.cols, meta.rows, int((frames - 1) * scale) + 1)
    assert img.get_data_dtype() == meta.dtype
    mean_out = float(img.dataobj.get_unscaled().astype(float).mean())  # stored values
    assert abs(mean_out - mean_in) < 0.1 * abs(mean_in), (mean_in, mean_out)


def test_thin_presets_carry_the_section_of_section_12():
    for name, policy in (("ct-thin", "minmax"), ("mr-thin", "percentile")):
        rc = resolve_run_config(preset=name)
        assert rc.pipeline.through_plane is not None and not rc.pipeline.chain.pre
        assert rc.pipeline.through_plane.slice_profile is None  # FWHM = SliceThickness
        assert rc.engine.norm.policy == policy and rc.engine.infer.ensemble is False
        assert rc.engine.train.max_iters == 800 and rc.engine.train.crop_size == 64  # fast


@pytest.mark.parametrize("preset", sorted(CASES))
def test_preset_end_to_end(preset, tmp_path):
    if preset.endswith("-thin"):
        return _thin_end_to_end(preset, tmp_path)
    src, suffix, scale, extra = CASES[preset]
    out = tmp_path / f"out{suffix}"
    assert main(["upscale", str(src), str(out), "--scale", str(scale), "--preset", preset,
                 *TINY, *extra]) == 0
    mean_in, (dtype, bands, rows, cols) = _valid_mean(src)
    mean_out, (dtype_o, bands_o, rows_o, cols_o) = _valid_mean(out)
    # outputs come back in the input's units and dtype, at the scaled size
    assert (dtype_o, bands_o, rows_o, cols_o) == (dtype, bands, rows * scale, cols * scale)
    assert abs(mean_out - mean_in) < 0.1 * abs(mean_in), (mean_in, mean_out)


def test_ct_preset_output_is_within_input_hu_range(tmp_path):
    src = DATA / "dicom" / "CT_small.dcm"
    out = tmp_path / "ct_x2.dcm"
    assert main(["upscale", str(src), str(out), "--scale", "2", "--preset", "ct", *TINY]) == 0
    with open_reader(src) as r:
        hu_in = to_real_units(r.read(), r.meta)
    with open_reader(out) as r:
        assert r.meta.dtype == np.int16 and r.meta.medical.rescale_intercept == -1024
        hu_out = to_real_units(r.read(), r.meta)
    assert hu_out.shape == (1, 256, 256)
    assert hu_in.min() <= hu_out.min() and hu_out.max() <= hu_in.max()
    assert hu_out.std() > 100  # an image, not a constant


def test_presets_carry_typed_pipeline_sections():
    rc = resolve_run_config(preset="sentinel2")
    assert rc.pipeline.tile == 512 and rc.pipeline.kernel_sigma == 1.0
    assert [s.name for s in rc.pipeline.chain.pre] == ["mask_nodata", "reflectance"]
    assert rc.engine.norm.policy == "percentile"
    assert resolve_run_config(preset="gradual-x4").engine.scale_steps == (2.0, 4.0)
    cfg, data = resolve_config(preset="ct")  # the engine's view ignores pipeline sections
    assert "chain" in data and cfg.train.max_iters == 3000
    rc = resolve_run_config(preset="ct", overrides=["tile=64", "bands=[1]", "chain.post=[]"])
    assert rc.pipeline.tile == 64 and rc.pipeline.band_indexes == (0,)
    assert not rc.pipeline.chain.post and rc.pipeline.chain.pre


@pytest.mark.parametrize("name", ["gradual-x4", "sentinel2", "landsat", "ct", "mr",
                                  "fast-gradual", "blind", "scene", "scene-fast", "ct-thin",
                                  "mr-thin"])
def test_new_presets_comment_every_value(name):
    for line in (PRESETS_DIR / f"{name}.yaml").read_text().splitlines():
        body = line.split("#")[0].strip()
        if body and not body.endswith(":"):  # a value (not a section header)
            assert "#" in line, f"{name}.yaml: no comment on {line!r}"


@pytest.mark.parametrize("data, match", [
    ({"tiles": 3}, r"unknown pipeline config key 'tiles'; allowed: chain, tile, bands"),
    ({"tile": 4}, r"config key 'tile': invalid value 4; expected an integer in \[8, 8192\]"),
    ({"tile": 12.5}, r"config key 'tile': expected an integer, got 12.5"),
    ({"bands": 2}, r"config key 'bands': expected a list, got 2"),
    ({"bands": []}, r"config key 'bands': invalid value \[\]; expected a list of 1-based"),
    ({"bands": [0]}, r"config key 'bands': invalid value 0"),
    ({"kernel_sigma": 0}, r"config key 'kernel_sigma': invalid value 0; expected a number"),
    ({"kernel_sigma": "x"}, r"config key 'kernel_sigma': expected a number, got 'x'"),
    ({"chain": {"pre": ["nope"]}}, r"unknown step 'nope'"),
    ({"kernel": "guess"}, r"config key 'kernel': invalid value 'guess'; allowed: estimate"),
])
def test_pipeline_config_errors(data, match):
    with pytest.raises(ConfigError, match=match):
        pipeline_config_from_dict(data)


def test_unknown_top_level_key_lists_engine_and_pipeline_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'chian'; allowed keys: net, "
                       r"train, .*chain, tile, bands, kernel_sigma"):
        resolve_config(overrides=["chian.pre=[]"])


def _args(**kw) -> argparse.Namespace:
    base = {"tile": None, "bands": None, "kernel": None, "kernel_sigma": None}
    return argparse.Namespace(**{**base, **kw})


def test_command_line_flags_win_over_the_preset():
    pc = PipelineConfig(tile=512, bands=(2, 3), kernel_sigma=1.0)
    opts = pipeline_options(_args(), pc)
    assert opts["tile"] == 512 and opts["bands"] == (1, 2) and opts["kernel"].shape == (7, 7)
    opts = pipeline_options(_args(tile=64, bands="1", kernel=KERNEL), pc)
    assert opts["tile"] == 64 and opts["bands"] == (0,) and opts["kernel"].shape == (9, 9)
    assert pipeline_options(_args(), PipelineConfig())["tile"] == 256
    assert pipeline_options(_args(), PipelineConfig())["chain"] is None
    from pipeline.errors import UsageError

    with pytest.raises(UsageError, match="--tile 4: expected 8 <= tile <= 8192"):
        pipeline_options(_args(tile=4), pc)
