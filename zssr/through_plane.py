"""Through-plane zero-shot SR of a thick-slice volume (SMORE; Zhao et al., IEEE TMI 2021).

A volume ``(z, y, x)`` whose slices are ``f`` times further apart than its pixels
is made of in-plane images that are sharp in both directions.  Degrading them along
*one* in-plane axis by the slice profile and keeping every ``f``-th row makes pairs
that look like the through-plane planes (x-z, y-z) of the volume; the ZSSR network
(:mod:`zssr.model`), trained on those pairs with the official fathers
(:class:`~zssr.sampling.FatherSampler`: crops, dihedral and affine augmentation) and
learning-rate policy (:class:`~zssr.train.LearningRatePolicy`), is then applied to
every x-z and every y-z plane along z, and the two results are averaged.

Geometry: slices are *samples* at their positions.  LR slice ``i`` sits at HR row
``i * f`` (the first new slice on the first old one, spacing ``dz / f``), which
``f = 2.5`` needs as much as ``f = 4``.  The degradation (:func:`profile_matrix`) is
the slice profile, a Gaussian of FWHM ``profile * f`` HR rows (``profile`` = slice
thickness / slice spacing, 1 by default), centred on each LR position (mirror at the
ends); the upsampling (:func:`cubic_matrix`) is Keys' cubic (a = -0.5) along rows at
``j / f``.  Both are small dense matrices applied along one axis.  This is why the
engine's :func:`~zssr.train.train` and :func:`~zssr.inference.predict` are not used
as they are: their resampling (:func:`~zssr.resize.imresize`) puts LR pixel ``i`` at
HR ``(i + .5) f - .5``, half an HR pixel between two slices for even ``f``.

Memory: the LR volume (working units, float32) and the output (``out=``: any array,
a ``numpy.memmap`` included) are held; the rest is one slab of ``slab`` planes at a
time.

>>> import numpy as np
>>> from zssr.config import config_from_dict
>>> vol = np.random.default_rng(0).random((5, 24, 20)).astype(np.float32)
>>> cfg = config_from_dict({"train": {"max_iters": 2, "crop_size": 16},
...                         "net": {"depth": 2, "width": 4}})
>>> sr, hist = super_resolve_through_plane(vol, factor=2.5, config=cfg)
>>> sr.shape, sr.dtype, output_slices(5, 2.5)
((11, 24, 20), dtype('float32'), 11)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from .config import ZSSRConfig
from .errors import ZSSRError
from .inference import forward_blocked, median
from .model import build_model
from .normalize import Normalizer
from .sampling import FatherSampler, Window, mirror_window, rescale_window
from .train import LearningRatePolicy, masked_l1

__all__ = ["ThroughPlaneError", "ThroughPlaneHistory", "slice_axis", "output_slices",
           "profile_matrix", "cubic_matrix", "degrade_rows", "upsample_rows", "plane_sr",
           "infer_slabs", "super_resolve_through_plane"]

log = logging.getLogger(__name__)

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


class ThroughPlaneError(ZSSRError, ValueError):
    """A volume that cannot be super-resolved through-plane (one slice, bad spacing)."""

    kind = "data"


@dataclass
class ThroughPlaneHistory:
    iterations: int = 0
    losses: list[float] = field(default_factory=list)
    reconstruction_errors: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    infer_seconds: float = 0.0
    factor: float = 1.0
    axis: int = 0


def slice_axis(spacing: tuple[float, float, float]) -> int:
    """The axis with the largest spacing (the slices' normal), refusing ties and bad values."""
    sp = [float(s) for s in spacing]
    if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ThroughPlaneError(f"spacing {tuple(spacing)}: expected three positive numbers (mm)")
    axis = int(np.argmax(sp))
    if sum(s == sp[axis] for s in sp) > 1:
        raise ThroughPlaneError(f"spacing {tuple(sp)}: no single axis has the largest spacing; "
                                "give the slice axis and the factor")
    return axis


def output_slices(n: int, factor: float) -> int:
    """New slices from ``n`` old ones at ``factor``: from the first to the last old slice."""
    return int(math.floor((n - 1) * float(factor) + 1e-9)) + 1


def _mirror(idx: np.ndarray, n: int) -> np.ndarray:
    """Whole-sample symmetric indices (c b | a b c d | c b) for sample positions."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    m = np.mod(idx, period)
    return np.where(m < n, m, period - m)


@lru_cache(maxsize=64)
def profile_matrix(n_hr: int, factor: float, fwhm: float, n_lr: int) -> torch.Tensor:
    """``(n_lr, n_hr)``: LR sample ``i`` = the Gaussian (FWHM ``fwhm`` HR rows) average of
    the HR rows around row ``i * factor`` (mirrored at the ends)."""
    sigma = max(fwhm * FWHM_TO_SIGMA, 1e-3)
    reach = int(math.ceil(4 * sigma)) + 1
    w = np.zeros((n_lr, n_hr))
    for i in range(n_lr):
        c = i * factor
        ks = np.arange(math.floor(c) - reach, math.ceil(c) + reach + 1)
        g = np.exp(-0.5 * ((ks - c) / sigma) ** 2)
        np.add.at(w[i], _mirror(ks, n_hr), g / g.sum())
    return torch.from_numpy(w.astype(np.float32))


def _keys(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    return np.where(t <= 1, 1.5 * t**3 - 2.5 * t**2 + 1,
                    np.where(t < 2, -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2, 0.0))


@lru_cache(maxsize=64)
def cubic_matrix(n_lr: int, factor: float, n_hr: int) -> torch.Tensor:
    """``(n_hr, n_lr)``: Keys cubic interpolation of LR samples (at ``i * factor``) at HR
    rows ``j`` (mirrored at the ends)."""
    u = np.zeros((n_hr, n_lr))
    for j in range(n_hr):
        t = j / factor
        ks = np.arange(math.floor(t) - 1, math.floor(t) + 3)
        np.add.at(u[j], _mirror(ks, n_lr), _keys(ks - t))
    return torch.from_numpy(u.astype(np.float32))


def degrade_rows(x: torch.Tensor, factor: float, fwhm: float) -> torch.Tensor:
    """``(..., H, W)`` -> ``(..., output_lr, W)``: the slice profile, every ``factor`` rows."""
    n_hr = x.shape[-2]
    n_lr = int(math.floor((n_hr - 1) / factor + 1e-9)) + 1
    return torch.matmul(profile_matrix(n_hr, float(factor), float(fwhm), n_lr).to(x), x)


def upsample_rows(x: torch.Tensor, factor: float, n_hr: int | None = None) -> torch.Tensor:
    """``(..., h, W)`` -> ``(..., n_hr, W)`` by cubic interpolation along rows."""
    n_lr = x.shape[-2]
    n_hr = output_slices(n_lr, factor) if n_hr is None else n_hr
    return torch.matmul(cubic_matrix(n_lr, float(factor), int(n_hr)).to(x), x)


class _SliceSource:
    """Crop source over the volume's in-plane slices (``(Z, Y, X)`` working units): each
    call serves one slice, drawn from those holding foreground (above ``threshold``)."""

    def __init__(self, volume: np.ndarray, threshold: float, rng: np.random.Generator) -> None:
        self.volume = volume
        fg = (volume > threshold).mean(axis=(1, 2))
        keep = np.flatnonzero(fg >= 0.1 * fg.max()) if fg.max() > 0 else np.arange(len(volume))
        self.slices = keep
        self.rng = rng
        self.channels = 1
        self.shape = (volume.shape[1], volume.shape[2])

    def __call__(self, window: Window, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        img = self.volume[int(self.rng.choice(self.slices))]
        r, c = mirror_window(window, self.shape)
        pix = img[r[:, None], c[None, :]][None]
        return rescale_window(pix, np.ones(pix.shape[1:], bool), window, scale)


def _pair(father: torch.Tensor, factor: float, fwhm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, target): the father degraded along rows and cubic-upsampled, and the father
    cut to the rows the LR samples span."""
    son = degrade_rows(father, factor, fwhm)
    n = output_slices(son.shape[-2], factor)
    return upsample_rows(son, factor, n), father[..., :n, :]


def _train(model: torch.nn.Module, volume: np.ndarray, *, factor: float, fwhm: float,
           cfg: ZSSRConfig, clip: tuple[torch.Tensor, torch.Tensor], seed: int,
           history: ThroughPlaneHistory) -> None:
    """SMORE training: fathers from the in-plane slices, sons degraded along rows."""
    tc = cfg.train
    device = next(model.parameters()).device
    rng = np.random.default_rng(seed)
    lo, hi = (t.to(device).view(-1, 1, 1) for t in clip)
    threshold = float(lo.flatten()[0] + 0.05 * (hi.flatten()[0] - lo.flatten()[0]))
    source = _SliceSource(volume, threshold, rng)
    sampler = FatherSampler(source, tc, rng=rng, clip_range=(lo.flatten(), hi.flatten()),
                            device=device)
    test = [sampler.sample().pixels for _ in range(tc.eval_windows)]
    policy = LearningRatePolicy(tc)
    opt = torch.optim.Adam(model.parameters(), lr=policy.lr)
    t0 = time.perf_counter()
    model.train()
    it = -1
    for it in range(tc.max_iters):
        father = sampler.sample()
        for _ in range(10):  # background-aware: fathers mostly of foreground
            if (father.pixels > threshold).float().mean() >= 0.3:
                break
            father = sampler.sample()
        x, target = _pair(father.pixels, factor, fwhm)
        out = model(x[None].contiguous(memory_format=torch.channels_last))[0]
        loss = masked_l1(out, target, torch.ones_like(target[0], dtype=torch.bool))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.losses.append(loss.item())
        if not math.isfinite(history.losses[-1]):
            raise ThroughPlaneError(f"training diverged at iteration {it} (loss "
                                    f"{history.losses[-1]}); lower train.learning_rate")
        if it % tc.run_test_every == 0:
            model.eval()
            with torch.no_grad():
                err = float(np.mean([torch.mean((torch.clamp(model(x[None])[0], lo, hi) - y)
                                                ** 2).item() for x, y in
                                     (_pair(f, factor, fwhm) for f in test)]))
            model.train()
            policy.record(it, err)
            history.reconstruction_errors.append(err)
        if policy.step(it):
            for group in opt.param_groups:
                group["lr"] = policy.lr
        if policy.finished or (tc.max_seconds and time.perf_counter() - t0 > tc.max_seconds):
            break
    model.eval()
    history.iterations = it + 1
    history.train_seconds = time.perf_counter() - t0


@torch.inference_mode()
def plane_sr(model: torch.nn.Module, planes: torch.Tensor, *, factor: float, fwhm: float,
               n_out: int, cfg: ZSSRConfig, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``(B, z, w)`` LR planes (slices along rows) -> ``(B, n_out, w)``: cubic up, the net
    (members: as is and mirrored along w; mirrored along z too when the new grid is
    symmetric), median, back-projection through the slice profile."""
    x = planes[:, None]  # (B, 1, z, w)
    z = x.shape[-2]
    symmetric = abs((z - 1) * factor - (n_out - 1)) < 1e-6
    flips = [()]
    if cfg.infer.ensemble:
        flips += [(-1,)] + ([(-2,), (-2, -1)] if symmetric else [])
    members = []
    for dims in flips:
        xi = torch.flip(x, dims) if dims else x
        up = upsample_rows(xi, factor, n_out)
        y = torch.clamp(forward_blocked(model, up.contiguous(), cfg.infer.precision), lo, hi)
        members.append(torch.flip(y, dims) if dims else y)
    sr = median(torch.stack(members))
    for _ in range(cfg.infer.back_projection_iters):
        err = x - torch.matmul(profile_matrix(n_out, float(factor), float(fwhm), z), sr)
        sr = torch.clamp(sr + upsample_rows(err, factor, n_out), lo, hi)
    return sr[:, 0]


def super_resolve_through_plane(
        volume: np.ndarray, *, factor: float, profile: float = 1.0,
        config: ZSSRConfig | None = None, seed: int | None = None,
        device: str | torch.device = "cpu", slab: int = 64,
        out: np.ndarray | None = None,
        value_range: tuple[float, float] | None = None,
        ) -> tuple[np.ndarray, ThroughPlaneHistory]:
    """Super-resolve ``volume`` ``(z, y, x)`` along z (axis 0) by ``factor``.

    Returns ``(sr, history)``: ``sr`` ``(output_slices(z, factor), y, x)`` in the
    input's dtype (rounded and clipped for integers) and units; new slice ``j`` lies at
    old slice ``j / factor``.  ``profile``: slice thickness / slice spacing (the
    Gaussian slice profile's FWHM in LR slices).  ``out``: where to put the result (e.g.
    a ``numpy.memmap`` of that shape and dtype).  Put the slice axis first with
    :func:`slice_axis` and ``numpy.moveaxis``.
    """
    cfg = config or ZSSRConfig()
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ThroughPlaneError(f"expected a (z, y, x) volume, got shape {vol.shape}")
    if vol.shape[0] < 2:
        raise ThroughPlaneError(f"a volume of {vol.shape[0]} slice(s) cannot be super-resolved "
                                "through-plane; it needs at least 2 slices")
    if not (math.isfinite(factor) and factor > 1) or not (math.isfinite(profile) and profile > 0):
        raise ThroughPlaneError(f"factor {factor} and profile {profile}: expected a factor > 1 "
                                "and a profile > 0")
    if min(vol.shape[1:]) < 8:
        raise ThroughPlaneError(f"in-plane size {vol.shape[1:]}: at least 8 x 8 pixels needed")
    seed = cfg.seed if seed is None else seed
    device = torch.device(device)
    fwhm = float(profile) * float(factor)
    z, ny, nx = vol.shape
    n_out = output_slices(z, factor)
    norm = Normalizer.fit(vol.reshape(1, z, ny * nx), policy=cfg.norm.policy,
                          percentiles=cfg.norm.percentiles, value_range=value_range)
    work = norm.forward(vol.reshape(1, z, ny * nx)).reshape(z, ny, nx).astype(np.float32)
    clip = tuple(torch.from_numpy(np.asarray(v, np.float32).reshape(1)) for v in norm.clip_range)
    lo, hi = (c.to(device).view(1, 1, 1, 1) for c in clip)
    history = ThroughPlaneHistory(factor=float(factor))
    model = build_model(1, cfg.net, seed=seed, device=device)
    _train(model, work, factor=float(factor), fwhm=fwhm, cfg=cfg, clip=clip, seed=seed,
           history=history)
    t0 = time.perf_counter()
    if out is None:
        out = np.empty((n_out, ny, nx), dtype=vol.dtype)
    elif out.shape != (n_out, ny, nx):
        raise ValueError(f"out has shape {out.shape}, expected {(n_out, ny, nx)}")
    for y0, y1, block in infer_slabs(model, work, factor=factor, fwhm=fwhm, cfg=cfg, lo=lo,
                                     hi=hi, slab=slab, device=device):
        out[:, y0:y1, :] = norm.inverse(block.reshape(1, n_out, -1)).reshape(block.shape)
    history.infer_seconds = time.perf_counter() - t0
    return out, history


def infer_slabs(model: torch.nn.Module, work: np.ndarray, *, factor: float, fwhm: float,
                cfg: ZSSRConfig, lo: torch.Tensor, hi: torch.Tensor, slab: int = 64,
                device: str | torch.device = "cpu") -> Iterator[tuple[int, int, np.ndarray]]:
    """``(y0, y1, block)`` for slabs of rows ``y0..y1`` of the result of ``work``
    ``(z, y, x)`` (working units): ``block`` ``(n_out, y1 - y0, x)`` is the mean of the
    x-z planes' and the y-z planes' results there."""
    device = torch.device(device)
    lr = torch.from_numpy(np.ascontiguousarray(work, dtype=np.float32))
    ny, nx = lr.shape[1:]
    n_out = output_slices(lr.shape[0], factor)
    step = max(1, int(slab))
    for y0 in range(0, ny, step):  # one slab of output rows y0..y1 at a time
        y1 = min(ny, y0 + step)
        xz = plane_sr(model, lr[:, y0:y1, :].permute(1, 0, 2).to(device), factor=factor,
                        fwhm=fwhm, n_out=n_out, cfg=cfg, lo=lo, hi=hi)  # (b, n_out, x)
        acc = xz.permute(1, 0, 2).cpu().numpy().copy()  # (n_out, b, x)
        for x0 in range(0, nx, step):  # y-z planes, cut to the slab's rows
            x1 = min(nx, x0 + step)
            yz = _yz_rows(model, lr, x0, x1, y0, y1, factor=factor, fwhm=fwhm, n_out=n_out,
                          cfg=cfg, lo=lo, hi=hi, device=device)
            acc[:, :, x0:x1] = (acc[:, :, x0:x1] + yz) / 2
        yield y0, y1, acc


def _yz_rows(model: torch.nn.Module, lr: torch.Tensor, x0: int, x1: int, y0: int, y1: int, *,
             device: torch.device, **kw) -> np.ndarray:
    """``(n_out, y1 - y0, x1 - x0)``: the y-z planes of columns ``x0..x1``, rows ``y0..y1``.

    Along y only the network reaches across pixels (resampling and back-projection act
    along z), so a window grown by its receptive radius gives exactly the whole plane's
    rows: the slab's values do not depend on the slab size.
    """
    r = model.cfg.receptive_radius
    ya, yb = max(0, y0 - r), min(lr.shape[1], y1 + r)
    planes = lr[:, ya:yb, x0:x1].permute(2, 0, 1).to(device)  # (b, z, y)
    yz = plane_sr(model, planes, **kw)[:, :, y0 - ya:y1 - ya]  # (b, n_out, y)
    return yz.permute(1, 2, 0).cpu().numpy()
