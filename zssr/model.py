"""The ZSSR network: a small fully convolutional residual CNN.

Official architecture (Shocher et al., CVPR 2018): ``depth`` 3x3 convolutions
of ``width`` channels, ReLU between them, a linear last layer, no biases, and
weights drawn from N(0, init_variance / fan_in).  The input is the LR image
already upsampled (bicubic) to the output size; the network predicts the
residual, so ``output = input + body(input)``.

>>> import torch
>>> from zssr.config import NetConfig
>>> net = ZSSRNet(3, NetConfig(depth=4, width=8))
>>> net(torch.zeros(1, 3, 16, 16)).shape
torch.Size([1, 3, 16, 16])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import NetConfig

__all__ = ["ZSSRNet", "build_model", "count_flops", "state_fits"]


class ZSSRNet(nn.Module):
    def __init__(self, channels: int, cfg: NetConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or NetConfig()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels = channels
        self.cfg = cfg
        pad = cfg.kernel_size // 2
        widths = [channels] + [cfg.width] * (cfg.depth - 1) + [channels]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Conv2d(c_in, c_out, cfg.kernel_size, padding=pad, bias=False))
            if i < cfg.depth - 1:
                layers.append(nn.ReLU(inplace=True))
        self.body = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: N(0, init_variance / fan_in), fan_in = k * k * c_in."""
        for m in self.body:
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                nn.init.normal_(m.weight, 0.0, math.sqrt(self.cfg.init_variance / fan_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, C, H, W) bicubic-upsampled LR; returns (N, C, H, W)
        return x + self.body(x)


def build_model(channels: int, cfg: NetConfig, *, seed: int, device: torch.device | str = "cpu",
                state: dict[str, torch.Tensor] | None = None) -> ZSSRNet:
    """A seeded network on ``device`` (channels_last), optionally loaded from ``state``."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        net = ZSSRNet(channels, cfg)
    finally:
        torch.random.set_rng_state(gen_state)
    if state is not None:
        if not state_fits(net, state):
            raise ValueError(f"weights do not fit a {channels}-channel network of depth "
                             f"{cfg.depth} and width {cfg.width}")
        net.load_state_dict(state)
    return net.to(device=device, memory_format=torch.channels_last)


def state_fits(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    """True when ``state`` has exactly the network's parameter names and shapes."""
    own = net.state_dict()
    return own.keys() == state.keys() and all(own[k].shape == state[k].shape for k in own)


def count_flops(channels: int, cfg: NetConfig, pixels: int) -> int:
    """Forward FLOPs (2 per multiply-add) of the convolutions for ``pixels`` output pixels."""
    widths = [channels] + [cfg.width] * (cfg.depth - 1) + [channels]
    k2 = cfg.kernel_size ** 2
    macs = sum(a * b * k2 for a, b in zip(widths[:-1], widths[1:], strict=True))
    return 2 * macs * pixels
