"""The geometric self-ensemble, checked with a network that is not symmetric.

A zero-residual (or near-zero) network makes six of the eight dihedral members
identical, so a wrongly undone 90-degree member, a switched-off ensemble or a
mean in place of the median all pass a test that only compares outputs.  Here
the network is ``x + conv(x)`` with a fixed one-sided 3x3 kernel that no
rotation or flip maps onto itself, so every member differs.  The expected
members are computed in the test with numpy's ``rot90`` and ``flip``, bicubic
upsampling (``zssr.resize.imresize``), the network and clipping; the expected
aggregate is ``numpy.median`` of those members.

Each defect has a test that plants it with ``monkeypatch`` and shows that the
check sees it; the plain tests show that the engine passes the same checks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DATA
from PIL import Image
from torch import nn

import zssr.inference
from zssr.config import InferConfig
from zssr.inference import (
    _run_member_group,
    back_project,
    dihedral,
    ensemble_members,
    predict,
    undo_dihedral,
)
from zssr.resize import imresize
from zssr.train import Degradation

TOL = 1e-5  # float32 round-off between the engine's and the test's order of operations
# right neighbour +1, lower neighbour +0.5, centre -1.5 (zero sum): a kernel whose eight
# dihedral images are all different, so are the eight members
KERNEL = torch.tensor([[0.0, 0.0, 0.0], [0.0, -1.5, 1.0], [0.0, 0.5, 0.0]])


class OneSidedNet(nn.Module):
    """``x + conv(x)`` per channel with :data:`KERNEL`; counts the images it sees."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            for c in range(channels):
                self.conv.weight[c, c] = KERNEL
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        return x + self.conv(x)


@pytest.fixture(scope="module")
def lr() -> torch.Tensor:
    """``(3, 18, 26)`` float32 in [0, 1]: a non-square crop of a real image."""
    rgb = np.asarray(Image.open(DATA / "engine" / "butterfly_64.png"), np.float32) / 255
    return torch.from_numpy(rgb[20:38, 10:36].transpose(2, 0, 1).copy())


def transform_np(a: np.ndarray, k: int) -> np.ndarray:
    """The k-th dihedral transform on the last two axes: rot90^k, then a left-right flip."""
    y = np.rot90(a, k % 4, axes=(-2, -1))
    return np.ascontiguousarray(y[..., ::-1] if k >= 4 else y)


def inverse_np(a: np.ndarray, k: int) -> np.ndarray:
    y = a[..., ::-1] if k >= 4 else a
    return np.ascontiguousarray(np.rot90(y, -(k % 4), axes=(-2, -1)))


def expected_member(net: nn.Module, lr: torch.Tensor, k: int,
                    scale: tuple[float, float]) -> np.ndarray:
    """Member ``k`` in its own (transformed) frame: upsample, network, clip to [0, 1]."""
    x = torch.from_numpy(transform_np(lr.numpy(), k))
    sc = scale if k % 2 == 0 else scale[::-1]
    up = imresize(x, scale=sc, kernel="cubic")
    with torch.no_grad():
        return np.clip(net(up[None])[0].numpy(), 0.0, 1.0)


def member_errors(lr: torch.Tensor, scale: tuple[float, float] = (2.0, 2.0)) -> list[float]:
    """Per member k: max |T_k(engine member k) - net on T_k(lr)|, in the transformed frame."""
    net = OneSidedNet(lr.shape[0]).eval()
    out_hw = (round(lr.shape[1] * scale[0]), round(lr.shape[2] * scale[1]))
    lo, hi = torch.zeros(3, 1, 1), torch.ones(3, 1, 1)
    errors = []
    for k in range(8):
        with torch.no_grad():
            [member] = _run_member_group(net, lr, [k], Degradation(scale), out_hw, lo, hi,
                                         batch=False)
        assert member.shape[-2:] == out_hw  # undone: back in the image's orientation
        errors.append(float(np.abs(transform_np(member.numpy(), k)
                                   - expected_member(net, lr, k, scale)).max()))
    return errors


def aggregate_error(lr: torch.Tensor, *, scale: tuple[float, float], members: list[int],
                    bp: int) -> tuple[float, int]:
    """``predict`` against numpy's median of the expected members (``members``), and the
    number of images the network saw."""
    net = OneSidedNet(lr.shape[0]).eval()
    deg = Degradation(scale)
    lo, hi = torch.zeros(3, 1, 1), torch.ones(3, 1, 1)
    stack = []
    for k in members:
        m = torch.from_numpy(inverse_np(expected_member(net, lr, k, scale), k))
        stack.append(back_project(m, lr, deg, bp, lo, hi).numpy())
    median = torch.from_numpy(np.median(np.stack(stack), axis=0).astype(np.float32))
    want = back_project(median, lr, deg, bp, lo, hi).numpy()
    net.images = 0
    got = predict(net, lr, scale=scale, infer=InferConfig(back_projection_iters=bp)).numpy()
    return float(np.abs(got - want).max()), net.images


def test_the_test_network_makes_eight_different_members(lr):
    net = OneSidedNet(3).eval()
    members = [inverse_np(expected_member(net, lr, k, (2.0, 2.0)), k) for k in range(8)]
    gaps = [np.abs(a - b).max() for i, a in enumerate(members) for b in members[i + 1:]]
    assert min(gaps) > 0.05, min(gaps)  # a defect that swaps or drops a member shows
    stack = np.stack(members)
    assert np.abs(np.median(stack, 0) - stack.mean(0)).max() > 0.05  # mean != median here
    for k in range(8):  # the test's own inverse is one
        assert np.array_equal(inverse_np(transform_np(lr.numpy(), k), k), lr.numpy())


def test_each_member_undone_equals_the_net_on_the_transformed_input(lr):
    assert max(member_errors(lr)) <= TOL
    for k in range(8):  # the engine's transforms are numpy's
        assert np.array_equal(dihedral(lr, k).numpy(), transform_np(lr.numpy(), k))
        assert np.array_equal(undo_dihedral(dihedral(lr, k), k).numpy(), lr.numpy())


def test_wrong_90_degree_undo_is_caught(lr, monkeypatch):
    def rotates_the_wrong_way(x: torch.Tensor, k: int) -> torch.Tensor:
        x = torch.flip(x, dims=(-1,)) if k >= 4 else x
        return torch.rot90(x, k % 4, dims=(-2, -1))  # +k instead of -k

    monkeypatch.setattr(zssr.inference, "undo_dihedral", rotates_the_wrong_way)
    errors = member_errors(lr)
    assert [e > 0.05 for e in errors] == [k % 2 == 1 for k in range(8)], errors


@pytest.mark.parametrize("bp", [0, 2])
def test_aggregate_is_the_numpy_median_of_the_eight_members(lr, bp):
    error, images = aggregate_error(lr, scale=(2.0, 2.0), members=list(range(8)), bp=bp)
    assert images == 8
    assert error <= TOL


def test_mean_for_median_is_caught(lr, monkeypatch):
    monkeypatch.setattr(zssr.inference, "median", lambda stack: stack.mean(dim=0))
    error, _ = aggregate_error(lr, scale=(2.0, 2.0), members=list(range(8)), bp=0)
    assert error > 0.01


def test_ensemble_off_is_caught(lr, monkeypatch):
    monkeypatch.setattr(zssr.inference, "ensemble_members", lambda ensemble, scale: [0])
    error, images = aggregate_error(lr, scale=(2.0, 2.0), members=list(range(8)), bp=0)
    assert images == 1 and error > 0.01


def test_ensemble_false_runs_exactly_one_member(lr):
    net = OneSidedNet(3).eval()
    got = predict(net, lr, scale=2, infer=InferConfig(ensemble=False, back_projection_iters=0))
    assert net.images == 1
    assert np.abs(got.numpy() - expected_member(net, lr, 0, (2.0, 2.0))).max() <= TOL


def test_anisotropic_scale_uses_the_four_axis_preserving_members(lr):
    assert ensemble_members(True, (2.0, 3.0)) == [0, 2, 4, 6]
    error, images = aggregate_error(lr, scale=(2.0, 3.0), members=[0, 2, 4, 6], bp=0)
    assert images == 4
    assert error <= TOL
