"""NIfTI in and out (io_adapters/nifti.py): slices as frames, windowed boundless reads,
content detection, the affine of an in-plane and a through-plane result, atomic writes,
and ``zssr upscale in.nii.gz out.nii.gz`` end to end.

Fixtures are small seeded volumes written here with nibabel, with an oblique, axis-
permuted affine (so a swapped i/j or a flipped sign cannot hide); expected affines are
computed independently from voxel-centre positions, not with the adapter's formula.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from rasterio.windows import Window

from io_adapters.detect import open_reader, open_writer, scale_metadata, sniff
from io_adapters.errors import CorruptFileError, UnsupportedFormatError, WriteError
from io_adapters.nifti import NiftiReader, NiftiWriter, scale_nifti_slices
from pipeline.cli.main import main

# rows of a frame run along j, columns along i; i is anterior-ish, j is left-ish, oblique
ROT = np.array([[0.0, -1.0, 0.0], [0.8, 0.0, -0.6], [0.6, 0.0, 0.8]])  # orthonormal columns
ZOOMS = np.array([0.9, 0.8, 3.0])
AFFINE = np.eye(4)
AFFINE[:3, :3] = ROT * ZOOMS
AFFINE[:3, 3] = [10.0, -5.0, 7.0]


def _volume(shape=(13, 11, 4), dtype=np.int16, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-500, 1500, shape).astype(dtype)


def _save(path: Path, data: np.ndarray, affine=AFFINE, slope=None, inter=None) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.header.set_sform(affine, code=2)
    img.header.set_qform(affine, code=1)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    nib.save(img, path)
    return path


def _centre(affine: np.ndarray, ijk) -> np.ndarray:
    return (affine @ np.array([*ijk, 1.0]))[:3]


@pytest.mark.parametrize("name", ["vol.nii", "vol.nii.gz"])
def test_reader_serves_slices_as_frames_with_boundless_windows(tmp_path: Path, name) -> None:
    data = _volume()
    path = _save(tmp_path / name, data)
    with open_reader(path) as r:
        assert isinstance(r, NiftiReader) and r.meta.format == "nifti"
        assert (r.meta.frames, r.meta.rows, r.meta.cols, r.meta.bands) == (4, 11, 13, 1)
        assert r.meta.dtype == np.int16
        for k in range(4):
            np.testing.assert_array_equal(r.read(frame=k)[0], data[:, :, k].T)
        win = Window(-2, 3, 6, 10)  # 2 columns before the volume, rows 3..12 (11 rows)
        got = r.read(win, frame=2)
        expect = np.zeros((1, 10, 6), np.int16)
        expect[0, :8, 2:] = data[0:4, 3:11, 2].T
        np.testing.assert_array_equal(got, expect)
        masks = r.read_masks(win, frame=2)
        assert masks.shape == (1, 10, 6)
        assert masks[0, :8, 2:].all() and not masks[0, 8:].any() and not masks[0, :, :2].any()
        with pytest.raises(ValueError, match="frame 4 out of range"):
            r.read(frame=4)


def test_reader_keeps_stored_values_and_geometry(tmp_path: Path) -> None:
    data = _volume(shape=(6, 5, 3, 2))  # a 4-D volume: two bands
    path = _save(tmp_path / "v.nii", data, slope=2.0, inter=-10.0)
    r = NiftiReader(path)
    assert r.meta.bands == 2 and r.meta.frames == 3
    np.testing.assert_array_equal(r.read(frame=1), data[:, :, 1, :].transpose(2, 1, 0))
    med = r.meta.medical
    assert (med.rescale_slope, med.rescale_intercept) == (2.0, -10.0)
    assert med.pixel_spacing == pytest.approx((0.8, 0.9)) and med.slice_thickness == pytest.approx(3)
    # DICOM view (LPS): the position of slice k is voxel (0, 0, k) with x and y negated
    lps = np.array([-1.0, -1.0, 1.0])
    for k in range(3):
        assert med.positions[k] == pytest.approx(tuple(_centre(AFFINE, (0, 0, k)) * lps), abs=1e-5)
    assert med.orientation == pytest.approx(tuple((ROT[:, 0] * lps).tolist()
                                                  + (ROT[:, 1] * lps).tolist()), abs=1e-6)
    assert NiftiReader(path, bands=[1]).read(frame=2)[0].tolist() == data[:, :, 2, 1].T.tolist()


def test_detected_by_content_not_name(tmp_path: Path) -> None:
    plain = _save(tmp_path / "a.nii", _volume())
    disguised = tmp_path / "scan.bin"
    with open(plain, "rb") as src, gzip.open(disguised, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert sniff(plain) == "nifti" and sniff(disguised) == "nifti"
    other = tmp_path / "not.nii.gz"
    with gzip.open(other, "wb") as fh:
        fh.write(b"\x00" * 400)
    with pytest.raises(UnsupportedFormatError, match="NIfTI"):
        sniff(other)
    broken = tmp_path / "cut.nii"
    broken.write_bytes(plain.read_bytes()[:348 + 4 + 50])
    with pytest.raises(CorruptFileError, match="cut.nii"):
        NiftiReader(broken).read(frame=0)


def _fill(writer: NiftiWriter, meta, fn) -> None:
    for k in range(meta.frames):
        writer.write(fn(k), Window(0, 0, meta.cols, meta.rows), frame=k)


def test_in_plane_affine_matches_independent_voxel_centres(tmp_path: Path) -> None:
    """New voxel (n, m, k) of a x(2, 3) result (rows x2 along j, cols x3 along i) lies at
    the old continuous index ((n + .5)/3 - .5, (m + .5)/2 - .5, k)."""
    path = _save(tmp_path / "in.nii.gz", _volume())
    meta = scale_metadata(NiftiReader(path).meta, (2, 3))
    assert (meta.rows, meta.cols, meta.frames) == (22, 39, 4)
    out = tmp_path / "out.nii.gz"
    with open_writer(out, meta) as w:
        _fill(w, meta, lambda k: np.full((1, 22, 39), k, np.int16))
    img = nib.load(out)
    assert img.shape == (39, 22, 4)
    for n, m, k in [(0, 0, 0), (38, 21, 3), (5, 17, 2)]:
        old_index = ((n + 0.5) / 3 - 0.5, (m + 0.5) / 2 - 0.5, k)
        np.testing.assert_allclose(_centre(img.affine, (n, m, k)), _centre(AFFINE, old_index),
                                   atol=1e-4)
    np.testing.assert_allclose(img.header.get_sform(), img.header.get_qform(), atol=1e-5)
    assert (int(img.header["sform_code"]), int(img.header["qform_code"])) == (2, 1)
    assert nib.aff2axcodes(img.affine) == nib.aff2axcodes(AFFINE)  # never flipped
    np.testing.assert_allclose(img.header.get_zooms(), (0.3, 0.4, 3.0), atol=1e-6)
    assert img.get_fdata()[:, :, 3].max() == 3  # frames land on their slices


def test_through_plane_affine_keeps_the_first_slice(tmp_path: Path) -> None:
    meta = scale_nifti_slices(NiftiReader(_save(tmp_path / "in.nii", _volume())).meta, 2.5, 9)
    assert meta.frames == 9
    out = tmp_path / "z.nii"
    with NiftiWriter(out, meta) as w:
        _fill(w, meta, lambda k: np.zeros((1, 11, 13), np.int16))
    img = nib.load(out)
    for k in (0, 4, 8):  # new slice k at old slice k / 2.5
        np.testing.assert_allclose(_centre(img.affine, (3, 2, k)),
                                   _centre(AFFINE, (3, 2, k / 2.5)), atol=1e-5)
    assert meta.medical.slice_thickness == pytest.approx(1.2)


def test_writer_is_atomic_and_keeps_rescale(tmp_path: Path) -> None:
    src = NiftiReader(_save(tmp_path / "in.nii", _volume(), slope=0.5, inter=3.0))
    out = tmp_path / "o.nii.gz"
    w = NiftiWriter(out, src.meta)
    _fill(w, src.meta, lambda k: src.read(frame=k))
    assert not out.exists()
    w.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii"]
    with NiftiWriter(out, src.meta) as w:
        _fill(w, src.meta, lambda k: src.read(frame=k))
    img = nib.load(out)
    np.testing.assert_array_equal(np.asarray(img.dataobj.get_unscaled()), _volume())
    assert (img.dataobj.slope, img.dataobj.inter) == (0.5, 3.0)
    with pytest.raises(WriteError, match="already exists"):
        NiftiWriter(out, src.meta)
    NiftiWriter(out, src.meta, overwrite=True).abort()  # ours: may be replaced
    with pytest.raises(WriteError, match=r"\.nii or \.nii\.gz"):
        NiftiWriter(tmp_path / "o.gz", src.meta)


def test_zssr_upscale_nifti_end_to_end(tmp_path: Path) -> None:
    data = _volume(shape=(14, 12, 2), dtype=np.uint8, seed=3)
    src = _save(tmp_path / "in.nii.gz", data)
    out = tmp_path / "out.nii.gz"
    rc = main(["upscale", str(src), str(out), "--scale", "2", "-q", "--seed", "0",
               "--set", "train.max_iters=4", "--set", "net.depth=2", "--set", "net.width=4",
               "--set", "infer.ensemble=false", "--set", "infer.back_projection_iters=0"])
    assert rc == 0
    img = nib.load(out)
    assert img.shape == (28, 24, 2) and img.get_data_dtype() == np.uint8
    expect = AFFINE.copy()  # voxel (n, m, k) -> old index ((n + .5)/2 - .5, (m + .5)/2 - .5, k)
    expect[:3, :2] /= 2
    expect[:3, 3] = _centre(AFFINE, (-0.25, -0.25, 0))
    np.testing.assert_allclose(img.affine, expect, atol=1e-5)
