"""VGG16 trunk and L2Norm layer shared by S3FD and DSFD (yxlijun layouts: key ``vgg.<index>``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Indices into the trunk: the ReLU outputs of conv3_3, conv4_3, conv5_3 and the end (ReLU of conv7).
CONV3_3_END = 16
CONV4_3_END = 23
CONV5_3_END = 30


def vgg16_trunk(conv6_dilation: int) -> nn.ModuleList:
    """The 35-layer VGG16 trunk: conv1_1..conv5_3 (3x3, pad 1, ReLU), five max-pools (pool3 ``ceil_mode``),
    conv6 = 3x3 dilated ``conv6_dilation`` (padding equal), conv7 = 1x1; ReLU after every conv.

    Input ``[N,3,H,W]``; conv3_3 at stride 4, conv4_3 stride 8, conv5_3 stride 16, conv7 stride 32.
    """
    layers: list[nn.Module] = []
    in_ch = 3
    for block, (out_ch, n_convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]):
        for _ in range(n_convs):
            layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU(inplace=True)]
            in_ch = out_ch
        layers.append(nn.MaxPool2d(2, 2, ceil_mode=block == 2))
    layers += [
        nn.Conv2d(512, 1024, 3, padding=conv6_dilation, dilation=conv6_dilation), nn.ReLU(inplace=True),
        nn.Conv2d(1024, 1024, 1), nn.ReLU(inplace=True),
    ]
    return nn.ModuleList(layers)


def run_layers(layers: nn.ModuleList, x: Tensor, start: int, stop: int) -> Tensor:
    """Apply ``layers[start:stop]`` in order."""
    for layer in layers[start:stop]:
        x = layer(x)
    return x


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learned per-channel scale: ``weight * x / (||x||_2 + 1e-10)``.

    ``[N,C,H,W]`` -> ``[N,C,H,W]``; ``weight`` starts at ``scale`` (10 / 8 / 5 for conv3_3 / 4_3 / 5_3).
    """

    eps = 1e-10

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return self.weight.view(1, -1, 1, 1) * (x / norm)
