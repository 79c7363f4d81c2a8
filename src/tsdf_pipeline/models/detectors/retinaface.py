"""RetinaFace with a MobileNet-0.25 backbone, keys of biubug6/Pytorch_Retinaface ``mobilenet0.25_Final.pth``.

Own implementation of the architecture described in ``tests/fixtures/manifests/retinaface_mobilenet025.json``:
MobileNetV1 x0.25 body (three stages, strides 8/16/32), a 3-level FPN, an SSH context module per level and
1x1 class / box / landmark heads with two anchors per cell. BatchNorm runs on running statistics.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tsdf_pipeline.models.detectors.anchor import AnchorDetector, HeadOutputs
from tsdf_pipeline.models.detectors.priors import flatten_head

LEAKY = 0.1
FPN_CHANNELS = 64
ANCHORS_PER_CELL = 2


def _conv_bn(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, *, groups: int = 1,
             leaky: float | None = LEAKY) -> list[nn.Module]:
    """Conv (no bias) + BatchNorm (+ LeakyReLU unless ``leaky`` is None)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if leaky is not None:
        layers.append(nn.LeakyReLU(leaky, inplace=True))
    return layers


def _conv_dw(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 + BN + LReLU, then pointwise 1x1 + BN + LReLU."""
    return nn.Sequential(*_conv_bn(in_ch, in_ch, 3, stride, groups=in_ch), *_conv_bn(in_ch, out_ch, 1))


class MobileNetV1Body(nn.Module):
    """MobileNetV1 x0.25 stages: ``[N,3,H,W]`` -> ``[N,64,H/8,W/8]``, ``[N,128,H/16,W/16]``, ``[N,256,H/32,W/32]``."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            nn.Sequential(*_conv_bn(3, 8, 3, 2)),
            _conv_dw(8, 16, 1), _conv_dw(16, 32, 2), _conv_dw(32, 32, 1), _conv_dw(32, 64, 2), _conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(_conv_dw(64, 128, 2), *[_conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(_conv_dw(128, 256, 2), _conv_dw(256, 256, 1))

    def forward(self, x: Tensor) -> list[Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return [c1, c2, self.stage3(c2)]


class FeaturePyramid(nn.Module):
    """1x1 lateral convs to 64 channels, nearest-upsampled top-down sums, 3x3 merge convs (BN + LReLU 0.1)."""

    def __init__(self, in_channels: tuple[int, int, int], out_ch: int) -> None:
        super().__init__()
        self.output1 = nn.Sequential(*_conv_bn(in_channels[0], out_ch, 1))
        self.output2 = nn.Sequential(*_conv_bn(in_channels[1], out_ch, 1))
        self.output3 = nn.Sequential(*_conv_bn(in_channels[2], out_ch, 1))
        self.merge1 = nn.Sequential(*_conv_bn(out_ch, out_ch))
        self.merge2 = nn.Sequential(*_conv_bn(out_ch, out_ch))

    def forward(self, levels: list[Tensor]) -> list[Tensor]:
        p1, p2, p3 = self.output1(levels[0]), self.output2(levels[1]), self.output3(levels[2])
        p2 = self.merge2(p2 + F.interpolate(p3, size=p2.shape[-2:], mode="nearest"))
        p1 = self.merge1(p1 + F.interpolate(p2, size=p1.shape[-2:], mode="nearest"))
        return [p1, p2, p3]


class ContextModule(nn.Module):
    """SSH: a 3x3 branch (C/2) and stacked 3x3 branches of receptive field 5 and 7 (C/4 each), concat, ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half, quarter = channels // 2, channels // 4
        self.conv3X3 = nn.Sequential(*_conv_bn(channels, half, leaky=None))
        self.conv5X5_1 = nn.Sequential(*_conv_bn(channels, quarter))
        self.conv5X5_2 = nn.Sequential(*_conv_bn(quarter, quarter, leaky=None))
        self.conv7X7_2 = nn.Sequential(*_conv_bn(quarter, quarter))
        self.conv7x7_3 = nn.Sequential(*_conv_bn(quarter, quarter, leaky=None))

    def forward(self, x: Tensor) -> Tensor:
        mid = self.conv5X5_1(x)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(mid), self.conv7x7_3(self.conv7X7_2(mid))], dim=1))


class _Head1x1(nn.Module):
    """1x1 conv head (module name ``conv1x1`` as in the checkpoint)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1x1 = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1x1(x)


class RetinaFaceMobileNet(AnchorDetector):
    """RetinaFace-MobileNet0.25 on ``[N,3,H,W]`` RGB in ``[-1,1]``.

    Network input: B,G,R 0..255 minus (104,117,123), which is how the model was trained (OpenCV images).
    ``release_compat=True`` reproduces the TSDF release, which builds that input under ``no_grad``: then
    nothing computed by this detector carries gradient to ``x``.
    Priors: two per cell, sizes (16,32) / (64,128) / (256,512) at strides 8 / 16 / 32 (2688 at 256x256).
    ``features``: SSH1/2/3 outputs ``[N,64,H/8,W/8]``, ``[N,64,H/16,W/16]``, ``[N,64,H/32,W/32]``.
    ``forward`` extras: ``'landmarks'`` ``[N,P,10]`` raw landmark offsets.
    """

    name = "retinaface_mobilenet025"
    steps = (8, 16, 32)
    min_sizes = ((16, 32), (64, 128), (256, 512))
    bgr_input = True

    def __init__(self, release_compat: bool = False) -> None:
        super().__init__()
        self.release_compat = release_compat
        self.body = MobileNetV1Body()
        self.fpn = FeaturePyramid((64, 128, 256), FPN_CHANNELS)
        self.ssh1 = ContextModule(FPN_CHANNELS)
        self.ssh2 = ContextModule(FPN_CHANNELS)
        self.ssh3 = ContextModule(FPN_CHANNELS)
        a = ANCHORS_PER_CELL
        self.ClassHead = nn.ModuleList([_Head1x1(FPN_CHANNELS, a * 2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([_Head1x1(FPN_CHANNELS, a * 4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([_Head1x1(FPN_CHANNELS, a * 10) for _ in range(3)])
        self.eval()

    def preprocess(self, x: Tensor) -> Tensor:
        if self.release_compat:
            with torch.no_grad():
                return super().preprocess(x)
        return super().preprocess(x)

    def _ssh(self, net_input: Tensor) -> list[Tensor]:
        p1, p2, p3 = self.fpn(self.body(net_input))
        return [self.ssh1(p1), self.ssh2(p2), self.ssh3(p3)]

    def heads(self, net_input: Tensor) -> HeadOutputs:
        feats = self._ssh(net_input)
        loc = torch.cat([flatten_head(h(f), 4) for h, f in zip(self.BboxHead, feats, strict=True)], dim=1)
        logits = torch.cat([flatten_head(h(f), 2) for h, f in zip(self.ClassHead, feats, strict=True)], dim=1)
        landmarks = torch.cat(
            [flatten_head(h(f), 10) for h, f in zip(self.LandmarkHead, feats, strict=True)], dim=1
        )
        return HeadOutputs(
            loc=loc, logits=logits, feature_sizes=[(f.shape[-2], f.shape[-1]) for f in feats],
            features=feats, extras={"landmarks": landmarks},
        )

    def features(self, x: Tensor) -> list[Tensor]:
        return self._ssh(self.preprocess(x))
