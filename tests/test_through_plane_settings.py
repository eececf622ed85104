"""One rule for a config's ``through_plane`` section and what overrides it (issue 18).

``zssr upscale``/``zssr run`` flags and a ``zssr batch`` job's keys go through the same
:func:`pipeline.runs.config.through_plane_settings`; only the names in the errors and the
error class differ (:data:`pipeline.cli.through_plane.FLAGS`,
:data:`pipeline.runs.volumes.JOB_KEYS`).  A section reaching ``run_batch`` with in-plane
settings (a Python caller) is refused with a message that says how to turn it on.
"""

from __future__ import annotations

import pytest
from test_run_through_plane import _nifti

from pipeline.cli.through_plane import FLAGS
from pipeline.errors import UsageError
from pipeline.runs.config import ThroughPlaneConfig, resolve_run_config, through_plane_settings
from pipeline.runs.run import run_batch
from pipeline.runs.settings import RunSettings
from pipeline.runs.volumes import JOB_KEYS
from zssr.errors import ConfigError

SECTION = ThroughPlaneConfig(scale_z=3.0, slice_profile=1.5, slab=8)


def _settings(section, asked=False, scale_z=None, slice_spacing=None, slice_profile=None,
              names=FLAGS):
    return through_plane_settings(section, asked=asked, scale_z=scale_z,
                                  slice_spacing=slice_spacing, slice_profile=slice_profile,
                                  names=names)


@pytest.mark.parametrize("names", [FLAGS, JOB_KEYS])
def test_overrides_win_over_the_section_the_same_for_flags_and_keys(names) -> None:
    assert _settings(SECTION, names=names) == SECTION  # the section implies through-plane
    # a factor replaces the section's factor as a pair; the profile and slab stay
    assert _settings(SECTION, slice_spacing=1.25, names=names) == ThroughPlaneConfig(
        slice_spacing=1.25, slice_profile=1.5, slab=8)
    assert _settings(SECTION, slice_profile=0.5, names=names) == ThroughPlaneConfig(
        scale_z=3.0, slice_profile=0.5, slab=8)
    assert _settings(None, asked=True, scale_z=2.5, names=names) == ThroughPlaneConfig(
        scale_z=2.5)
    assert _settings(None, names=names) is None  # in-plane


@pytest.mark.parametrize("kwargs, flags, keys", [
    ({"slice_profile": 1.0}, "--scale-z, --slice-spacing and --slice-profile go with "
     "--through-plane (or a preset such as ct-thin)",
     "'slice_profile' goes with 'through_plane: true' (or a preset such as ct-thin)"),
    ({"scale_z": 2.0, "slice_profile": 1.0}, "--scale-z, --slice-spacing and "
     "--slice-profile go with --through-plane (or a preset such as ct-thin)",
     "'scale_z' goes with 'through_plane: true' (or a preset such as ct-thin)"),
    ({"asked": True}, "--through-plane takes one of --scale-z F and --slice-spacing MM "
     "(not --scale)", "a through-plane job takes one of 'scale_z' and 'slice_spacing'"),
    ({"asked": True, "scale_z": 2.0, "slice_spacing": 1.0}, "--through-plane takes one of "
     "--scale-z F and --slice-spacing MM (not --scale)", "a through-plane job takes one of "
     "'scale_z' and 'slice_spacing', not both"),
])
def test_errors_name_the_source_and_raise_its_class(kwargs, flags, keys) -> None:
    with pytest.raises(UsageError) as flag_error:
        _settings(None, names=FLAGS, **kwargs)
    assert str(flag_error.value) == flags
    with pytest.raises(ConfigError) as key_error:
        _settings(None, names=JOB_KEYS, **kwargs)
    assert str(key_error.value) == keys


def test_run_batch_refuses_a_section_with_in_plane_settings_and_says_how(tmp_path) -> None:
    """``zssr run`` and ``zssr batch`` turn a section into through-plane settings; a Python
    caller that gives ``run_batch`` the ct-thin preset's data but no
    ``RunSettings.through_plane`` is told how to turn it on, before anything is written."""
    _nifti(tmp_path / "v.nii", 4)
    rc = resolve_run_config(preset="ct-thin")
    settings = RunSettings(out_dir=tmp_path / "run", scale=2.0, config=rc.engine,
                           config_data=rc.data, scheduler="synchronous")
    with pytest.raises(ConfigError, match=r"got in-plane run settings \(RunSettings\."
                       r"through_plane is None\); to run through-plane, set RunSettings\("
                       r"through_plane=ThroughPlaneConfig\(scale_z=F\)\) as zssr run "
                       r"--through-plane --scale-z F and a batch job's 'scale_z: F'") as exc:
        run_batch([tmp_path / "v.nii"], settings, quiet=True)
    assert "does not run through-plane" not in str(exc.value)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "run").exists()
