"""The through-plane result goes to disk, not to RAM (issue 18: memory bounded by slabs).

:func:`pipeline.image.volume.upscale_through_plane` hands the engine a
:class:`~pipeline.image.volume.DiskVolume` (a ``numpy.memmap`` of a private temporary
file beside the output) as ``out=``: the output equals the engine's in-memory result,
the temporary folder is gone after success, after an error and after an interrupt in
the middle of the inference, and the pages of a written slab leave the process's
resident set (``/proc/self/smaps``).  The memory figures themselves:
``bench/through_plane_memory.py`` (BENCHMARKS.md).
"""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import pipeline.image.volume as volume_mod
import zssr.through_plane as engine
from pipeline.image.volume import DiskVolume, VolumeJob, upscale_through_plane
from zssr.config import config_from_dict

TINY = config_from_dict({"train": {"max_iters": 2, "crop_size": 16, "eval_windows": 1},
                         "net": {"depth": 2, "width": 4}})


def _nifti(path: Path) -> np.ndarray:
    data = (np.random.default_rng(3).random((20, 18, 4)) * 300).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 3.0, 1.0])), path)
    return data


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".volume-" in p.name)


def test_result_is_written_through_a_memmap_and_the_temporary_goes(tmp_path, monkeypatch):
    data = _nifti(tmp_path / "thick.nii")
    out = tmp_path / "thin.nii"
    real = volume_mod.super_resolve_through_plane
    seen: dict = {}

    def spy(volume, **kw):
        target = kw["out"]
        seen["memmap"] = isinstance(target, np.memmap)
        seen["file"] = Path(target.filename)
        seen["dir_mode"] = seen["file"].parent.stat().st_mode & 0o777
        return real(volume, **kw)

    monkeypatch.setattr(volume_mod, "super_resolve_through_plane", spy)
    upscale_through_plane(VolumeJob(input=tmp_path / "thick.nii", output=out, config=TINY,
                                    scale_z=2.0, slab=5))
    assert seen["memmap"]
    assert re.fullmatch(r"\.thin\.nii\.volume-[0-9a-f]{8}", seen["file"].parent.name)
    assert seen["file"].parent.parent == tmp_path and seen["dir_mode"] == 0o700
    assert _temps(tmp_path) == []  # removed on success
    vol = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))  # (z, y, x) as the reader gives
    expected, _ = real(vol, factor=2.0, profile=1.0, config=TINY, slab=5)
    got = np.asarray(nib.load(out).dataobj)
    np.testing.assert_array_equal(np.transpose(got, (2, 1, 0)), expected)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_no_temporary_and_no_output_after_a_failure_mid_inference(tmp_path, monkeypatch,
                                                                   error):
    _nifti(tmp_path / "thick.nii")
    real = engine.infer_slabs

    def one_slab_then_fail(*args, **kw):
        for k, item in enumerate(real(*args, **kw)):
            if k == 1:
                assert _temps(tmp_path)  # the first slab is on disk by now
                raise error("stopped mid-inference")
            yield item

    monkeypatch.setattr(engine, "infer_slabs", one_slab_then_fail)
    with pytest.raises(error, match="mid-inference"):
        upscale_through_plane(VolumeJob(input=tmp_path / "thick.nii",
                                        output=tmp_path / "thin.nii", config=TINY,
                                        scale_z=2.0, slab=4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thick.nii"]


def _mapped_rss_kib(path: Path) -> int:
    """The resident kB of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            inside = line.endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="Linux /proc needed")
def test_written_slabs_leave_the_resident_set(tmp_path, monkeypatch):
    path = tmp_path / "sr.raw"
    dv = DiskVolume(path, dtype=np.float32, mode="w+", shape=(64, 256, 256))  # 16 MiB
    plain = np.memmap(tmp_path / "plain.raw", dtype=np.float32, mode="w+", shape=dv.shape)
    release, mapped = DiskVolume.release, []

    def spy(self) -> None:  # what is mapped just before pages are given back
        mapped.append(_mapped_rss_kib(path))
        release(self)

    monkeypatch.setattr(DiskVolume, "release", spy)
    for y0 in range(0, 256, 32):
        block = np.full((64, 32, 256), y0, np.float32)
        dv[:, y0:y0 + 32, :] = block  # a slab: 32 kB in each of 64 frames
        plain[:, y0:y0 + 32, :] = block
    assert _mapped_rss_kib(tmp_path / "plain.raw") > 12 * 1024  # a plain memmap keeps it all
    assert _mapped_rss_kib(path) < 1024
    assert max(mapped) < 1536  # about one frame at a time, never the slab's 64 frames
    frame = dv.frame(63)
    assert type(frame) is np.ndarray and frame[40, 0] == 32 and _mapped_rss_kib(path) < 1024
    del dv, plain
