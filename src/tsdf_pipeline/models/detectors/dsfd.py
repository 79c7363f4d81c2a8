"""DSFD face detector, VGG16 variant, with the keys of yxlijun/DSFD.pytorch ``dsfd_vgg_0.880.pth``.

Own implementation of the architecture described in ``tests/fixtures/manifests/dsfd.json``: VGG16 trunk
(first shot, PAL1 sources), a top-down FPN with multiplicative lateral merges, a feature enhancement
module (FEM) per level and the second-shot (PAL2) heads used for detection.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tsdf_pipeline.models.detectors.anchor import AnchorDetector, HeadOutputs
from tsdf_pipeline.models.detectors.priors import flatten_head
from tsdf_pipeline.models.detectors.vgg import (
    CONV3_3_END,
    CONV4_3_END,
    CONV5_3_END,
    L2Norm,
    run_layers,
    vgg16_trunk,
)

SOURCE_CHANNELS = (256, 512, 512, 1024, 512, 256)


def _dilated(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, padding=3, dilation=3)


class FeatureEnhance(nn.Module):
    """FEM: three branches of 1, 2 and 3 dilated (3) 3x3 convs, concatenated, ReLU. ``[N,C,H,W]`` -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        third = channels // 3
        rest = channels - 2 * third
        self.branch1 = _dilated(channels, third)
        self.branch2 = nn.Sequential(_dilated(channels, third), nn.ReLU(inplace=True), _dilated(third, third))
        self.branch3 = nn.Sequential(
            _dilated(channels, rest), nn.ReLU(inplace=True),
            _dilated(rest, rest), nn.ReLU(inplace=True),
            _dilated(rest, rest),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(torch.cat([self.branch1(x), self.branch2(x), self.branch3(x)], dim=1))


def _upsample_mul(top: Tensor, lateral: Tensor) -> Tensor:
    """Bilinear (``align_corners=True``) upsampling of ``top`` to ``lateral``'s size, times ``lateral``."""
    return F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=True) * lateral


class DSFD(AnchorDetector):
    """DSFD-VGG on ``[N,3,H,W]`` RGB in ``[-1,1]``.

    Network input as S3FD: R,G,B minus (123,117,104) by default (how yxlijun trained it);
    ``release_compat=True`` feeds B,G,R minus (104,117,123) like the TSDF release.
    Detection uses the PAL2 heads (priors 16..512 at strides 4..128; 5460 at 256x256); the PAL1 heads
    ``loc_pal1`` / ``conf_pal1`` exist only so that the official checkpoint loads strictly.
    ``features``: the first three PAL1 sources, L2Norm(conv3_3 / conv4_3 / conv5_3), ``[N,256,H/4,W/4]``,
    ``[N,512,H/8,W/8]``, ``[N,512,H/16,W/16]``.
    """

    name = "dsfd"
    steps = (4, 8, 16, 32, 64, 128)
    min_sizes = ((16,), (32,), (64,), (128,), (256,), (512,))

    def __init__(self, release_compat: bool = False) -> None:
        super().__init__()
        self.release_compat = release_compat
        self.bgr_input = release_compat
        self.vgg = vgg16_trunk(conv6_dilation=3)
        self.L2Normof1 = L2Norm(256, 10)
        self.L2Normof2 = L2Norm(512, 8)
        self.L2Normof3 = L2Norm(512, 5)
        self.extras = nn.ModuleList([
            nn.Conv2d(1024, 256, 1),
            nn.Conv2d(256, 512, 3, stride=2, padding=1),
            nn.Conv2d(512, 128, 1),
            nn.Conv2d(128, 256, 3, stride=2, padding=1),
        ])
        topdown = [(256, 256), (256, 512), (512, 1024), (1024, 512), (512, 512), (512, 256)]
        self.fpn_topdown = nn.ModuleList([nn.Conv2d(i, o, 1) for i, o in topdown])
        self.fpn_latlayer = nn.ModuleList([nn.Conv2d(c, c, 1) for c in (512, 1024, 512, 512, 256)])
        self.fpn_fem = nn.ModuleList([FeatureEnhance(c) for c in SOURCE_CHANNELS])
        self.L2Normef1 = L2Norm(256, 10)
        self.L2Normef2 = L2Norm(512, 8)
        self.L2Normef3 = L2Norm(512, 5)
        self.loc_pal1 = nn.ModuleList([nn.Conv2d(c, 4, 3, padding=1) for c in SOURCE_CHANNELS])
        self.conf_pal1 = nn.ModuleList([nn.Conv2d(c, 2, 3, padding=1) for c in SOURCE_CHANNELS])
        self.loc_pal2 = nn.ModuleList([nn.Conv2d(c, 4, 3, padding=1) for c in SOURCE_CHANNELS])
        self.conf_pal2 = nn.ModuleList([nn.Conv2d(c, 2, 3, padding=1) for c in SOURCE_CHANNELS])
        self.eval()

    def _vgg_levels(self, net_input: Tensor) -> tuple[list[Tensor], Tensor]:
        """ReLU(conv3_3), ReLU(conv4_3), ReLU(conv5_3) (un-normalised) and the trunk state after conv5_3."""
        of1 = run_layers(self.vgg, net_input, 0, CONV3_3_END)
        of2 = run_layers(self.vgg, of1, CONV3_3_END, CONV4_3_END)
        of3 = run_layers(self.vgg, of2, CONV4_3_END, CONV5_3_END)
        return [of1, of2, of3], of3

    def _pal1_features(self, levels: list[Tensor]) -> list[Tensor]:
        return [self.L2Normof1(levels[0]), self.L2Normof2(levels[1]), self.L2Normof3(levels[2])]

    def heads(self, net_input: Tensor) -> HeadOutputs:
        (of1, of2, of3), x = self._vgg_levels(net_input)
        features = self._pal1_features([of1, of2, of3])
        of4 = run_layers(self.vgg, x, CONV5_3_END, len(self.vgg))
        of5 = F.relu(self.extras[1](F.relu(self.extras[0](of4))))
        of6 = F.relu(self.extras[3](F.relu(self.extras[2](of5))))

        top = self.fpn_topdown
        lat = self.fpn_latlayer
        conv7 = F.relu(top[0](of6))
        conv6 = F.relu(_upsample_mul(F.relu(top[1](conv7)), lat[0](of5)))
        fc7 = F.relu(_upsample_mul(F.relu(top[2](conv6)), lat[1](of4)))
        conv5 = F.relu(_upsample_mul(F.relu(top[3](fc7)), lat[2](of3)))
        conv4 = F.relu(_upsample_mul(F.relu(top[4](conv5)), lat[3](of2)))
        conv3 = F.relu(_upsample_mul(F.relu(top[5](conv4)), lat[4](of1)))

        fem = self.fpn_fem
        pal2 = [
            self.L2Normef1(fem[0](conv3)), self.L2Normef2(fem[1](conv4)), self.L2Normef3(fem[2](conv5)),
            fem[3](fc7), fem[4](conv6), fem[5](conv7),
        ]
        locs = [head(s) for head, s in zip(self.loc_pal2, pal2, strict=True)]
        confs = [head(s) for head, s in zip(self.conf_pal2, pal2, strict=True)]
        return HeadOutputs(
            loc=torch.cat([flatten_head(t, 4) for t in locs], dim=1),
            logits=torch.cat([flatten_head(t, 2) for t in confs], dim=1),
            feature_sizes=[(s.shape[-2], s.shape[-1]) for s in pal2],
            features=features,
        )

    def features(self, x: Tensor) -> list[Tensor]:
        return self._pal1_features(self._vgg_levels(self.preprocess(x))[0])
