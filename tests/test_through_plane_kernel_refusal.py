"""An in-plane kernel setting with through-plane SR is refused in one line, never ignored.

Through-plane SR degrades by the slice profile; ``--kernel estimate``, a config
``kernel: estimate`` (the ``blind`` preset) or ``kernel_groups`` would be silently
dropped there, so they are refused, in ``zssr upscale`` and ``zssr run``, before any work.
"""

from __future__ import annotations

import pytest
from test_run_through_plane import _nifti

from pipeline.cli.main import main


@pytest.mark.parametrize("argv, flag", [
    (["--kernel", "estimate"], "--kernel"),
    (["--set", "kernel=estimate"], "config 'kernel'"),
    (["--preset", "blind", "--through-plane"], "config 'kernel'"),
    (["--set", "kernel=estimate", "--set", "kernel_groups=[[1]]"], "config 'kernel_groups'"),
])
@pytest.mark.parametrize("command", ["upscale", "run"])
def test_in_plane_kernel_settings_refused(tmp_path, capsys, argv, flag, command) -> None:
    _nifti(tmp_path / "v.nii", 4)
    preset = [] if "--preset" in argv else ["--preset", "mr-thin"]
    where = [str(tmp_path / "o.nii")] if command == "upscale" else ["--out", str(tmp_path / "r")]
    assert main([command, str(tmp_path / "v.nii"), *where, *preset, "--scale-z", "2",
                 *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{flag}" in err and "not used by --through-plane" in err, err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "o.nii").exists() and not (tmp_path / "r").exists()
