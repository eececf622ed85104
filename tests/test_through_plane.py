"""Through-plane SR engine (zssr/through_plane.py): the slice-profile and cubic operators
against independent formulas, the slice grid, the averaging of the two planes and the
slab independence, and bad volumes.

Operators are checked against closed forms (a Gaussian's weights from scipy.stats, the
exactness of Keys' cubic on quadratics); the averaging against the two plane results
computed separately on whole planes with a seeded, untrained network.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DATA
from scipy.stats import norm as gaussian

from zssr.config import config_from_dict
from zssr.model import build_model
from zssr.through_plane import (
    ThroughPlaneError,
    cubic_matrix,
    degrade_rows,
    infer_slabs,
    output_slices,
    plane_sr,
    profile_matrix,
    slice_axis,
    super_resolve_through_plane,
    upsample_rows,
)

TINY = config_from_dict({"train": {"max_iters": 3, "crop_size": 16, "eval_windows": 1},
                         "net": {"depth": 3, "width": 4},
                         "infer": {"back_projection_iters": 2}})


def test_profile_samples_a_gaussian_around_every_fth_row() -> None:
    n_hr, f, fwhm = 40, 2.5, 3.0
    w = profile_matrix(n_hr, f, fwhm, 16).numpy()
    sigma = fwhm / (2 * np.sqrt(2 * np.log(2)))
    for i in (4, 7, 10):  # away from the ends: no mirrored weights
        k = np.arange(n_hr)
        g = gaussian.pdf(k, loc=i * f, scale=sigma)
        np.testing.assert_allclose(w[i], g / g.sum(), atol=1e-6)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
    x = torch.arange(40, dtype=torch.float32)[:, None].repeat(1, 3)  # a ramp along rows
    lr = degrade_rows(x, 4.0, 4.0)
    assert lr.shape == (10, 3)  # rows 0, 4, ..., 36
    np.testing.assert_allclose(lr[2:8, 0].numpy(), 4.0 * np.arange(2, 8), atol=1e-4)


def test_cubic_is_exact_on_quadratics_at_the_new_positions() -> None:
    f = 2.5
    q = lambda t: 0.3 * t**2 - 2.0 * t + 5.0  # noqa: E731 - in HR rows
    lr = torch.tensor([q(i * f) for i in range(12)], dtype=torch.float64)[:, None]
    up = upsample_rows(lr.float(), f)
    assert up.shape[0] == output_slices(12, f) == 28  # 0 .. 27.5 -> rows 0..27
    j = np.arange(6, 22)  # interior rows: all four taps inside
    np.testing.assert_allclose(up[j, 0].numpy(), q(j), rtol=1e-5)
    u = cubic_matrix(12, f, 28).numpy()
    np.testing.assert_allclose(u[[0, 5, 10, 15, 20, 25]], np.eye(12)[[0, 2, 4, 6, 8, 10]],
                               atol=1e-6)  # rows on an LR sample copy it


def test_slice_grid_and_axis() -> None:
    assert output_slices(48, 4) == 189 and output_slices(76, 2.5) == 188
    assert slice_axis((1.0, 0.8, 4.0)) == 2 and slice_axis((5, 0.5, 0.5)) == 0
    with pytest.raises(ThroughPlaneError, match="no single axis"):
        slice_axis((3.0, 3.0, 1.0))
    with pytest.raises(ThroughPlaneError, match="positive"):
        slice_axis((0.0, 1.0, 1.0))


def test_result_is_the_mean_of_both_planes_whatever_the_slab() -> None:
    rng = np.random.default_rng(1)
    work = rng.random((6, 21, 19)).astype(np.float32)
    model = build_model(1, TINY.net, seed=0)
    lo, hi = torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    kw = {"factor": 2.5, "fwhm": 2.5, "cfg": TINY, "lo": lo, "hi": hi}
    n = output_slices(6, 2.5)
    lr = torch.from_numpy(work)
    xz = plane_sr(model, lr.permute(1, 0, 2), n_out=n, **kw).permute(1, 0, 2)  # (n, y, x)
    yz = plane_sr(model, lr.permute(2, 0, 1), n_out=n, **kw).permute(1, 2, 0)
    expect = ((xz + yz) / 2).numpy()
    assert not np.allclose(xz.numpy(), yz.numpy(), atol=1e-3)  # the planes do differ
    for slab in (64, 5):  # one slab, and slabs whose y-z windows are cut inside the volume
        got = np.zeros_like(expect)
        for y0, y1, block in infer_slabs(model, work, slab=slab, **kw):
            got[:, y0:y1] = block
        np.testing.assert_allclose(got, expect, atol=1e-5)


def test_super_resolve_keeps_shape_dtype_and_is_reproducible() -> None:
    rng = np.random.default_rng(2)
    vol = (rng.random((4, 16, 18)) * 1000).astype(np.uint16)
    sr, hist = super_resolve_through_plane(vol, factor=2, config=TINY, seed=0)
    assert sr.shape == (7, 16, 18) and sr.dtype == np.uint16 and hist.iterations == 3
    out = np.zeros((7, 16, 18), np.uint16)
    again, _ = super_resolve_through_plane(vol, factor=2, config=TINY, seed=0, out=out)
    assert again is out and np.array_equal(out, sr)  # seeded: reproducible


@pytest.mark.parametrize(("shape", "factor", "match"), [
    ((1, 16, 16), 2.0, "1 slice"), ((4, 16, 16), 1.0, "factor > 1"),
    ((4, 16, 16), float("nan"), "factor > 1"), ((4, 4, 16), 2.0, "at least 8 x 8")])
def test_bad_volumes_are_refused(shape, factor, match) -> None:
    with pytest.raises(ThroughPlaneError, match=match):
        super_resolve_through_plane(np.zeros(shape, np.float32), factor=factor, config=TINY)


# ------------------------------------------------------------------ zssr upscale --through-plane

def _nifti(path, data, zooms=(0.9, 0.8, 3.0)):
    import nibabel as nib

    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = [-4.0, 6.0, 20.0]
    affine[0, 0] = -zooms[0]  # a radiological i axis: its sign must survive
    img = nib.Nifti1Image(data, affine)
    img.header.set_sform(affine, code=1)
    img.header.set_qform(affine, code=1)
    nib.save(img, path)
    return affine


def test_cli_through_plane_nifti(tmp_path) -> None:
    import nibabel as nib

    from pipeline.cli.main import main

    data = (np.random.default_rng(4).random((18, 16, 4)) * 200).astype(np.uint8)
    affine = _nifti(tmp_path / "thick.nii.gz", data)
    out = tmp_path / "thin.nii.gz"
    tiny = ["--set", "train.max_iters=3", "--set", "train.crop_size=16", "--set",
            "net.depth=2", "--set", "net.width=4", "--set", "train.eval_windows=1"]
    assert main(["upscale", str(tmp_path / "thick.nii.gz"), str(out), "--through-plane",
                 "--slice-spacing", "1.2", "-q", *tiny]) == 0  # 3 mm / 1.2 mm = x2.5
    img = nib.load(out)
    assert img.shape == (18, 16, 8) and img.get_data_dtype() == np.uint8  # 0, 1.2, .. 8.4 mm
    for ijk in [(0, 0, 0), (17, 15, 7), (3, 9, 5)]:  # new slice k at old k / 2.5
        old = affine @ np.array([ijk[0], ijk[1], ijk[2] / 2.5, 1.0])
        np.testing.assert_allclose(img.affine @ np.array([*ijk, 1.0]), old, atol=1e-5)
    np.testing.assert_allclose(img.header.get_sform(), img.header.get_qform(), atol=1e-6)


@pytest.mark.parametrize(("shape", "zooms", "args", "message"), [
    ((18, 16, 1), (0.9, 0.8, 3.0), ["--scale-z", "2"], "has 1 slice"),
    ((18, 16, 4), (0.9, 0.8, 0.5), ["--scale-z", "2"], "not the thickest axis"),
    ((18, 16, 4), (0.9, 0.8, 3.0), ["--slice-spacing", "4"], "factor > 1"),
    ((18, 16, 4), (0.9, 0.8, 3.0), ["--scale-z", "2", "--scale", "2"], "not --scale"),
    ((18, 16, 4), (0.9, 0.8, 3.0), ["--scale-z", "2", "--kernel-sigma", "1"], "not used by"),
])
def test_cli_through_plane_bad_input_is_one_line(tmp_path, capsys, shape, zooms, args,
                                                 message) -> None:
    from pipeline.cli.main import main

    src = tmp_path / "v.nii"
    _nifti(src, np.zeros(shape, np.uint8), zooms)
    rc = main(["upscale", str(src), str(tmp_path / "o.nii"), "--through-plane", *args])
    err = capsys.readouterr().err.strip()
    assert rc in (2, 6) and message in err and len(err.splitlines()) == 1
    assert "--scale" in args or "--kernel-sigma" in args or str(src) in err
    assert not (tmp_path / "o.nii").exists()


def test_cli_through_plane_dicom_series_to_nifti(tmp_path) -> None:
    """The 3-slice CT series of tests/data (5 mm apart) x2.5 -> NIfTI: the affine maps each
    new voxel to the DICOM position computed from the source headers (LPS -> RAS)."""
    import nibabel as nib
    import pydicom

    from pipeline.cli.main import main

    series = DATA / "dicom" / "series"
    heads = sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in series.iterdir()),
                   key=lambda d: float(d.ImagePositionPatient[2]))
    out = tmp_path / "thin.nii"
    assert main(["upscale", str(series), str(out), "--through-plane", "--scale-z", "2.5", "-q",
                 "--set", "train.max_iters=2", "--set", "train.crop_size=16", "--set",
                 "net.depth=2", "--set", "net.width=4", "--set", "train.eval_windows=1"]) == 0
    img = nib.load(out)
    assert img.shape == (128, 128, 6)
    p0, p1 = (np.array(h.ImagePositionPatient, float) for h in heads[:2])
    row, col = np.array(heads[0].ImageOrientationPatient, float).reshape(2, 3)
    dr, dc = (float(v) for v in heads[0].PixelSpacing)
    for i, j, k in [(0, 0, 0), (127, 5, 5), (40, 99, 3)]:
        lps = p0 + i * dc * row + j * dr * col + k / 2.5 * (p1 - p0)
        np.testing.assert_allclose((img.affine @ [i, j, k, 1])[:3], lps * [-1, -1, 1],
                                   atol=1e-4)


@pytest.mark.parametrize(("spacing", "positions", "thickness", "message"), [
    ((0.8, 0.8), [(0, 0, 0), (0, 0, 0), (0, 0, 0)], 3.0, "share a position"),
    ((0.8, 0.8), [(0, 0, 0), (0, 0, 3), (0, 0, 9)], 3.0, "not evenly spaced"),
    ((0.8, 0.8), [], 0.0, "no slice spacing"),
    ((0.8, 0.8), [], None, "no slice spacing"),
    (None, [], 3.0, "no pixel spacing"),
    ((0.0, 0.8), [], 3.0, "no pixel spacing"),
])
def test_volume_geometry_refuses_missing_or_bad_spacing(tmp_path, spacing, positions,
                                                       thickness, message) -> None:
    from io_adapters.base import MedicalInfo, Metadata
    from io_adapters.errors import InvalidDataError
    from pipeline.image.volume import volume_geometry

    med = MedicalInfo(modality="CT", photometric="MONOCHROME2", pixel_spacing=spacing,
                      slice_thickness=thickness, orientation=None,
                      positions=tuple(map(tuple, positions)))
    meta = Metadata(path=tmp_path / "ct", format="dicom", bands=1, rows=16, cols=16,
                    dtype=np.dtype("int16"), frames=3, medical=med)
    with pytest.raises(InvalidDataError, match=f"ct: .*{message}"):
        volume_geometry(meta)
