"""Preprocessing steps: parameters, forward/inverse exactness, user steps, the listing."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from io_adapters.detect import open_reader
from io_adapters.errors import InvalidDataError
from pipeline.cli.main import main
from pipeline.steps import available_steps, describe_steps, step_class, step_from_config
from zssr.config import ConfigError

DATA = Path(__file__).resolve().parent / "data"
LANDSAT = DATA / "io" / "geotiff" / "landsat_64x80.tif"
CT = DATA / "dicom" / "CT_small.dcm"
PNG = DATA / "io" / "plain" / "bridge_40x48.png"


def _read(path: Path):
    with open_reader(path) as r:
        return r.read(), r.read_masks(), r.meta


def _roundtrip(entry, path: Path):
    step = step_from_config(entry)
    a, m, meta = _read(path)
    step = step.fit([(a, m, 0)], meta)
    b, bm, out_meta = step.apply(a, m, meta)
    back, _ = step.inverse(b, bm, out_meta, source=meta)
    return a, b, back, out_meta, step, meta


def test_reflectance_sentinel2_offset_and_exact_inverse():
    a, b, back, out_meta, step, meta = _roundtrip(
        {"reflectance": {"scale": 0.0001, "offset": -0.1}}, LANDSAT)
    assert b.dtype == np.float32 and out_meta.dtype == np.float32
    # processing baseline >= 04.00: reflectance = (DN - 1000) / 10000
    np.testing.assert_allclose(b, (a.astype(np.float64) - 1000) / 10000, atol=1e-6)
    assert back.dtype == a.dtype and np.array_equal(back, a)
    assert out_meta.nodata == pytest.approx(-0.1)
    assert step.inverse_meta(out_meta, source=meta).dtype == meta.dtype


def test_reflectance_from_metadata_needs_band_scales():
    step = step_from_config({"reflectance": {"from_metadata": True}})
    a, m, meta = _read(LANDSAT)
    out, _, _ = step.apply(a, m, meta)  # the file declares scale 1, offset 0 per band
    assert np.array_equal(out, a.astype(np.float32))
    _, _, png_meta = _read(PNG)
    with pytest.raises(InvalidDataError, match="no per-band scale/offset"):
        step.out_meta(png_meta)


def test_normalize_methods_exact_inverse():
    for method in ("dtype", "percentile", "minmax"):
        a, b, back, out_meta, _, _ = _roundtrip({"normalize": {"method": method}}, LANDSAT)
        assert b.dtype == np.float32 and np.array_equal(back, a), method
    a, b, *_ = _roundtrip({"normalize": {"method": "minmax"}}, PNG)
    assert b.min() == 0.0 and b.max() == 1.0


def test_modality_lut_to_hu_and_back():
    a, b, back, out_meta, _, meta = _roundtrip("modality_lut", CT)
    assert b.min() == -896.0 and b.max() == 1167.0  # RescaleIntercept -1024
    assert out_meta.medical.rescale_intercept == 0.0 and out_meta.dtype == np.float32
    assert np.array_equal(back, a) and back.dtype == np.int16
    _, _, png_meta = _read(PNG)
    with pytest.raises(InvalidDataError, match="needs a DICOM input"):
        step_from_config("modality_lut").out_meta(png_meta)


def test_invert_monochrome1_exact_and_noop_for_monochrome2():
    a, m, meta = _read(CT)
    step = step_from_config("invert_monochrome1")
    same, _, same_meta = step.apply(a, m, meta)
    assert np.array_equal(same, a) and same_meta is meta
    mono1 = replace(meta, medical=replace(meta.medical, photometric="MONOCHROME1"))
    flipped, fm, fmeta = step.apply(a, m, mono1)
    assert fmeta.medical.photometric == "MONOCHROME2"
    assert np.array_equal(flipped.astype(np.int64), -1 - a.astype(np.int64))  # int16 range
    back, _ = step.inverse(flipped, fm, fmeta, source=mono1)
    assert np.array_equal(back, a)
    assert step.inverse_meta(fmeta, source=mono1).medical.photometric == "MONOCHROME1"
    hu = step_from_config("modality_lut").apply(a, m, mono1)
    with pytest.raises(InvalidDataError, match="before modality_lut"):
        step.apply(hu[0], hu[1], hu[2])


def test_select_bands_nodata_and_clip_steps():
    a, m, meta = _read(LANDSAT)
    sel, sm, smeta = step_from_config({"select_bands": {"bands": [3, 1]}}).apply(a, m, meta)
    assert np.array_equal(sel, a[[2, 0]]) and smeta.bands == 2
    assert smeta.band_names == (meta.band_names[2], meta.band_names[0])
    with pytest.raises(InvalidDataError, match="has 4 band"):
        step_from_config({"select_bands": {"bands": [5]}}).apply(a, m, meta)
    masked, mm, mmeta = step_from_config({"mask_nodata": {"value": 12491}}).apply(a, m, meta)
    assert not mm[0][a[0] == 12491].any() and mmeta.nodata == 12491
    filled, fm, fmeta = step_from_config(
        {"fill_nodata": {"value": 7, "mark_valid": True}}).apply(a, m, meta)
    assert (filled[~m] == 7).all() and fm.all() and fmeta.nodata is None
    clipped, _, _ = step_from_config({"clip": {"min": 13000.6, "max": 40000}}).apply(a, m, meta)
    assert clipped.dtype == a.dtype and clipped.min() == 13001 and clipped.max() == 40000


def test_clip_to_input_fitted_range():
    a, m, meta = _read(LANDSAT)
    step = step_from_config("clip_to_input").fit([(a, m, 0)], meta)
    wild = a.astype(np.int64) * 2
    out, _, _ = step.apply(np.clip(wild, 0, 65535).astype(a.dtype), m, meta)
    valid = a[0][m[0]]
    assert out[0].max() == valid.max()
    dtype_step = step_from_config({"clip_to_input": {"range": "dtype"}}).fit([(a, m, 0)], meta)
    assert dtype_step.apply(a, m, meta)[0].max() == a.max()
    with pytest.raises(RuntimeError, match="not fitted"):
        step_from_config("clip_to_input").apply(a, m, meta)


def test_denoise_radius_and_mask_aware_gaussian():
    g = step_from_config({"denoise": {"sigma": 1.0}})
    md = step_from_config({"denoise": {"method": "median", "size": 5}})
    assert (g.radius, md.radius, g.pointwise) == (4, 2, False)
    a, m, meta = _read(LANDSAT)
    out, om, _ = g.apply(a, m, meta)
    assert out.dtype == a.dtype and np.array_equal(om, m)
    assert np.array_equal(out[~m], a[~m])  # invalid pixels untouched, never mixed in
    assert out[m].min() >= a[m].min() and out[m].max() <= a[m].max()
    assert md.apply(a, m, meta)[0].dtype == a.dtype


@pytest.mark.parametrize("entry, match", [
    ({"clip": {"lo": 1}}, r"step 'clip': unknown parameter 'lo'; parameters: min, max"),
    ({"clip": {"min": 5, "max": 1}}, r"parameter 'max' = 1.0 is invalid; expected a number > min"),
    ({"clip": {"min": "a"}}, r"parameter 'min': expected a number, got 'a'"),
    ({"clip": {"min": float("inf")}}, r"parameter 'min': expected a finite number"),
    ({"denoise": {"method": "tv"}}, r"parameter 'method': invalid value 'tv'; allowed: gaussian, "
                                    r"median"),
    ({"denoise": {"size": 4}}, r"parameter 'size' = 4 is invalid; expected an odd integer"),
    ({"denoise": {"size": 2.5}}, r"parameter 'size': expected an integer"),
    ({"denoise": {"sigma": 0}}, r"parameter 'sigma' = 0.0 is invalid"),
    ({"fill_nodata": {"mark_valid": "yes"}}, r"parameter 'mark_valid': expected true or false"),
    ({"select_bands": {"bands": 3}}, r"parameter 'bands': expected a list"),
    ({"select_bands": {"bands": [0]}}, r"a non-empty list of band numbers >= 1"),
    ({"normalize": {"percentiles": [1]}}, r"parameter 'percentiles': expected 2 values"),
    ({"normalize": {"percentiles": [50, 10]}}, r"two numbers 0 <= lo < hi <= 100"),
    ({"reflectance": {"scale": 0}}, r"parameter 'scale' = 0.0 is invalid"),
    ({"clip": [1, 2]}, r"step 'clip': parameters must be a mapping"),
    ({"clip": {}, "denoise": {}}, r"expected a step name or a one-key mapping"),
    (3, r"expected a step name or a one-key mapping"),
])
def test_bad_parameters_name_step_key_and_allowed(entry, match):
    with pytest.raises(ConfigError, match=match):
        step_from_config(entry)


def test_unknown_step_lists_available_steps():
    with pytest.raises(ConfigError, match=r"unknown step 'clp'.*available steps: clip, "
                       r"clip_to_input, denoise.*package.module:function"):
        step_from_config("clp")
    with pytest.raises(ConfigError, match="did you mean modality_lut"):
        step_from_config({"modality_lup": {}})
    with pytest.raises(ConfigError, match="unknown step 'nope'"):
        step_class("nope")
    assert step_class("clip").name == "clip"
    assert {"reflectance", "modality_lut", "denoise"} <= set(available_steps())


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "filters.py").write_text(textwrap.dedent("""
        import numpy as np

        def offset(array, masks, meta, *, delta=0.0):
            return array.astype(np.float32) + delta

        def to_two_bands(array, masks, meta):
            return array[:2] * 2, masks[:2], meta

        def bad_tuple(array, masks, meta):
            return array, masks, meta, 1

        def bad_shape(array, masks, meta):
            return array[:, :1]

        NOT_CALLABLE = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ZSSR_ALLOW_USER_STEPS", "1")  # the user's opt-in (pipeline/steps/policy.py)
    return tmp_path


def test_user_step_by_dotted_path(user_package):
    a, m, meta = _read(LANDSAT)
    step = step_from_config({"userpkg.filters:offset": {"delta": 2.5, "radius": 1}})
    assert step.name == "userpkg.filters:offset" and step.radius == 1 and not step.pointwise
    step = step.fit([(a, m, 0)], meta)
    out, _, out_meta = step.apply(a, m, meta)
    assert out.dtype == np.float32 and out_meta.dtype == np.float32
    np.testing.assert_array_equal(out, a.astype(np.float32) + 2.5)
    assert step.to_config() == {"userpkg.filters:offset": {"delta": 2.5, "radius": 1}}
    two = step_from_config("userpkg.filters:to_two_bands").fit([(a, m, 0)], meta)
    assert two.out_meta(meta).bands == 2
    import pickle

    again = pickle.loads(pickle.dumps(step))
    assert again.apply(a, m, meta)[0].dtype == np.float32 and again.seen == step.seen


@pytest.mark.parametrize("entry, match", [
    ("userpkg.nothere:f", r"cannot import module 'userpkg.nothere'"),
    ("userpkg.filters:missing", r"module 'userpkg.filters' has no function 'missing'"),
    ("userpkg.filters:NOT_CALLABLE", r"has no function 'NOT_CALLABLE'"),
    ("userpkg/filters:offset", r"expected 'package.module:function'"),
    ({"userpkg.filters:offset": {"radius": -1}}, r"'radius' = -1; expected an integer >= 0"),
])
def test_user_step_errors(user_package, entry, match):
    with pytest.raises(ConfigError, match=match):
        step_from_config(entry)


def test_user_step_bad_results(user_package):
    a, m, meta = _read(LANDSAT)
    with pytest.raises(ConfigError, match="returned a tuple of 4"):
        step_from_config("userpkg.filters:bad_tuple").apply(a, m, meta)
    with pytest.raises(ConfigError, match=r"returned shape \(4, 1, 80\)"):
        step_from_config("userpkg.filters:bad_shape").apply(a, m, meta)


def test_entry_point_steps(user_package):
    dist = user_package / "userpkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: userpkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[zssr.steps]\nshift = userpkg.filters:offset\nbroken = userpkg.filters:NOT_CALLABLE\n"
        "myclip = pipeline.steps.builtin:Clip\n")
    assert {"shift", "myclip"} <= set(available_steps())
    step = step_from_config({"shift": {"delta": 1}})
    a, m, meta = _read(LANDSAT)
    assert step.apply(a, m, meta)[0][0, 0, 0] == a[0, 0, 0] + 1
    assert step_from_config({"myclip": {"max": 5}}).apply(a, m, meta)[0].max() == 5
    with pytest.raises(ConfigError, match="not a Step or function"):
        step_from_config("broken")
    assert any(r["name"] == "shift" and r["source"] == "zssr.steps" for r in describe_steps())


def test_zssr_steps_lists_steps_with_parameters(capsys):
    assert main(["steps"]) == 0
    out = capsys.readouterr().out
    assert "reflectance  [pointwise; exact inverse; built-in]" in out
    assert "offset: float = 0.0" in out and "denoise  [spatial" in out
    assert main(["steps", "--json"]) == 0
    import json

    records = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in records} >= {"select_bands", "clip_to_input"}
