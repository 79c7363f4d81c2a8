"""StarGAN generator and discriminator (yunjey/stargan ``model.py`` layout and state-dict names).

The official CelebA checkpoint (``200000-G.ckpt``) was trained under PyTorch 0.3, whose InstanceNorm always
normalised with per-instance statistics, and the official solver never calls ``.eval()``.  The norm layers
here keep ``track_running_stats=True`` so the checkpoint keys match, but always use input statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tsdf_pipeline.models.layout import is_channels_last

# Index of the last down-sampling ReLU in ``main``: its output is the encoder feature TSDF attacks.
FEATURE_INDEX = 8


class InputStatsInstanceNorm2d(nn.InstanceNorm2d):
    """``InstanceNorm2d(affine=True, track_running_stats=True)`` that always uses per-instance statistics.

    The running buffers exist only for state-dict compatibility; they are neither read nor updated, so the
    output is the same in ``train()`` and ``eval()``.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, affine=True, track_running_stats=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_channels_last(x):
            return channels_last_instance_norm(x, self.weight, self.bias, self.eps)
        return F.instance_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


def channels_last_instance_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                                eps: float) -> torch.Tensor:
    """Affine instance norm of ``x [N,C,H,W]`` (biased variance, as ``F.instance_norm``) in ``x``'s layout.

    ``F.instance_norm`` reshapes its input to ``[1,N·C,H,W]``, which copies a channels-last tensor and returns
    a contiguous one (and the next channels-last convolution copies it back). Here: one statistics pass, then
    ``x·scale + shift`` with per-channel ``scale = weight/sqrt(var+eps)``, ``shift = bias - mean·scale`` (formed in
    fp32, applied in ``x``'s dtype: bf16 in, bf16 out under autocast, like ``F.instance_norm``).
    """
    var, mean = torch.var_mean(x, dim=(2, 3), correction=0, keepdim=True)
    scale = weight.view(1, -1, 1, 1) * torch.rsqrt(var.float() + eps)
    shift = bias.view(1, -1, 1, 1) - mean.float() * scale
    return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))


class ResidualBlock(nn.Module):
    """``x + main(x)`` with ``main`` = conv3x3, IN, ReLU, conv3x3, IN (channel count kept)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, bias=False),
            InputStatsInstanceNorm2d(dim),
            nn.ReLU(),
            nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, bias=False),
            InputStatsInstanceNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.main(x)


def stargan_trunk(conv_dim: int, c_dim: int, repeat_num: int, out_channels: int) -> list[nn.Module]:
    """Layers of the StarGAN ``main`` Sequential up to and including the last 7x7 conv (no output activation).

    Index layout (``main.<i>`` in the state dict): 0-2 stem conv7/IN/ReLU, 3-8 two stride-2 downsamplings,
    ``9 .. 8+repeat_num`` residual blocks, then two stride-2 ConvTranspose upsamplings, then the conv7 head.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(3 + c_dim, conv_dim, kernel_size=7, stride=1, padding=3, bias=False),
        InputStatsInstanceNorm2d(conv_dim),
        nn.ReLU(),
    ]
    dim = conv_dim
    for _ in range(2):
        layers += [
            nn.Conv2d(dim, dim * 2, kernel_size=4, stride=2, padding=1, bias=False),
            InputStatsInstanceNorm2d(dim * 2),
            nn.ReLU(),
        ]
        dim *= 2
    layers += [ResidualBlock(dim) for _ in range(repeat_num)]
    for _ in range(2):
        layers += [
            nn.ConvTranspose2d(dim, dim // 2, kernel_size=4, stride=2, padding=1, bias=False),
            InputStatsInstanceNorm2d(dim // 2),
            nn.ReLU(),
        ]
        dim //= 2
    layers.append(nn.Conv2d(dim, out_channels, kernel_size=7, stride=1, padding=3, bias=False))
    return layers


def tile_condition(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``cat([x, c tiled to HxW], 1)``: x ``[N,3,H,W]``, c ``[N,C]`` -> ``[N,3+C,H,W]``."""
    if c.dim() != 2 or c.shape[0] != x.shape[0]:
        raise ValueError(f"condition must be [N,C] with N={x.shape[0]}, got {list(c.shape)}")
    c_map = c.to(x.dtype).view(c.shape[0], c.shape[1], 1, 1).expand(-1, -1, x.shape[2], x.shape[3])
    return torch.cat([x, c_map], dim=1)


def run_with_feature(main: nn.Sequential, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``main`` on ``h``; also return the output of ``main[FEATURE_INDEX]``."""
    feat = main[: FEATURE_INDEX + 1](h)
    return main[FEATURE_INDEX + 1:](feat), feat


class StarGANGenerator(nn.Module):
    """StarGAN G: ``forward(x, c)`` maps x ``[N,3,H,W]`` in [-1,1] and c ``[N,c_dim]`` to ``[N,3,H,W]`` in [-1,1].

    H and W must be multiples of 4.  Default = official CelebA config (conv_dim 64, c_dim 5, 6 res-blocks).
    """

    def __init__(self, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6) -> None:
        super().__init__()
        self.conv_dim, self.c_dim, self.repeat_num = conv_dim, c_dim, repeat_num
        self.main = nn.Sequential(*stargan_trunk(conv_dim, c_dim, repeat_num, out_channels=3), nn.Tanh())

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.main(tile_condition(x, c))

    def forward_with_feature(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, feat)``: y as ``forward``; feat = ``main[8]`` output ``[N,4*conv_dim,H/4,W/4]`` (>= 0)."""
        return run_with_feature(self.main, tile_condition(x, c))


class StarGANDiscriminator(nn.Module):
    """StarGAN PatchGAN D: x ``[N,3,S,S]`` in [-1,1] -> ``(out_src [N,1,S/2^r,S/2^r], out_cls [N,c_dim])``.

    ``repeat_num`` (r) stride-2 conv4 + LeakyReLU(0.01) layers with bias, channels doubling from ``conv_dim``.
    """

    def __init__(self, image_size: int = 256, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6) -> None:
        super().__init__()
        if image_size % 2**repeat_num:
            raise ValueError(f"image_size {image_size} must be a multiple of 2**repeat_num = {2**repeat_num}")
        self.image_size, self.conv_dim, self.c_dim, self.repeat_num = image_size, conv_dim, c_dim, repeat_num
        layers: list[nn.Module] = []
        dim_in, dim = 3, conv_dim
        for _ in range(repeat_num):
            layers += [nn.Conv2d(dim_in, dim, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.01)]
            dim_in, dim = dim, dim * 2
        self.main = nn.Sequential(*layers)
        self.conv1 = nn.Conv2d(dim_in, 1, kernel_size=3, stride=1, padding=1, bias=False)
        self.conv2 = nn.Conv2d(dim_in, c_dim, kernel_size=image_size // 2**repeat_num, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.main(x)
        return self.conv1(h), self.conv2(h).flatten(1)
