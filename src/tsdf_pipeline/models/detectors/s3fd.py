"""S3FD face detector (VGG16, six prediction levels) with the keys of yxlijun/S3FD.pytorch ``sfd_face.pth``.

Own implementation of the architecture described in ``tests/fixtures/manifests/s3fd.json``.
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


class S3FD(AnchorDetector):
    """S3FD on ``[N,3,H,W]`` RGB in ``[-1,1]``.

    Network input: 0..255 minus the mean. The released weights were trained on R,G,B order with
    (R-123, G-117, B-104) (yxlijun ``to_chw_bgr`` then mean then reorder): that is the default.
    ``release_compat=True`` feeds B,G,R minus (104,117,123) as the TSDF release does.

    Priors: one square prior per cell, sizes 16..512 at strides 4..128 (5460 priors at 256x256).
    The conv3_3 classifier has 4 channels (3 background + 1 face); the background logit is their max
    ("max-out"). ``features``: L2Norm(conv3_3) ``[N,256,H/4,W/4]``, L2Norm(conv4_3) ``[N,512,H/8,W/8]``,
    L2Norm(conv5_3) ``[N,512,H/16,W/16]``. ``forward`` extras: ``'conv3_3_conf'`` (see ``conv3_3_conf``).
    ``detect`` ranks only the ``top_k`` best candidates before NMS, as the official S3FD code.
    """

    name = "s3fd"
    steps = (4, 8, 16, 32, 64, 128)
    min_sizes = ((16,), (32,), (64,), (128,), (256,), (512,))
    pre_nms_top_k = None

    def __init__(self, release_compat: bool = False) -> None:
        super().__init__()
        self.release_compat = release_compat
        self.bgr_input = release_compat
        self.vgg = vgg16_trunk(conv6_dilation=6)
        self.extras = nn.ModuleList([
            nn.Conv2d(1024, 256, 1),
            nn.Conv2d(256, 512, 3, stride=2, padding=1),
            nn.Conv2d(512, 128, 1),
            nn.Conv2d(128, 256, 3, stride=2, padding=1),
        ])
        self.L2Norm3_3 = L2Norm(256, 10)
        self.L2Norm4_3 = L2Norm(512, 8)
        self.L2Norm5_3 = L2Norm(512, 5)
        self.loc = nn.ModuleList([nn.Conv2d(c, 4, 3, padding=1) for c in SOURCE_CHANNELS])
        self.conf = nn.ModuleList(
            [nn.Conv2d(c, 4 if i == 0 else 2, 3, padding=1) for i, c in enumerate(SOURCE_CHANNELS)]
        )
        self.eval()

    def _vgg_sources(self, net_input: Tensor) -> tuple[list[Tensor], Tensor]:
        """The three L2-normalised VGG sources and the trunk output after conv5_3's ReLU."""
        x = run_layers(self.vgg, net_input, 0, CONV3_3_END)
        s3 = self.L2Norm3_3(x)
        x = run_layers(self.vgg, x, CONV3_3_END, CONV4_3_END)
        s4 = self.L2Norm4_3(x)
        x = run_layers(self.vgg, x, CONV4_3_END, CONV5_3_END)
        s5 = self.L2Norm5_3(x)
        return [s3, s4, s5], x

    def sources(self, net_input: Tensor) -> list[Tensor]:
        """All six source maps (strides 4..128) for a preprocessed input."""
        sources, x = self._vgg_sources(net_input)
        x = run_layers(self.vgg, x, CONV5_3_END, len(self.vgg))
        sources.append(x)
        x = F.relu(self.extras[1](F.relu(self.extras[0](x))))
        sources.append(x)
        x = F.relu(self.extras[3](F.relu(self.extras[2](x))))
        sources.append(x)
        return sources

    def heads(self, net_input: Tensor) -> HeadOutputs:
        sources = self.sources(net_input)
        conv3_3_conf = self.conf[0](sources[0])
        first = torch.cat([conv3_3_conf[:, 0:3].amax(dim=1, keepdim=True), conv3_3_conf[:, 3:]], dim=1)
        confs = [first] + [head(s) for head, s in zip(self.conf[1:], sources[1:], strict=True)]
        locs = [head(s) for head, s in zip(self.loc, sources, strict=True)]
        return HeadOutputs(
            loc=torch.cat([flatten_head(t, 4) for t in locs], dim=1),
            logits=torch.cat([flatten_head(t, 2) for t in confs], dim=1),
            feature_sizes=[(s.shape[-2], s.shape[-1]) for s in sources],
            features=sources[:3],
            extras={"conv3_3_conf": conv3_3_conf},
        )

    def features(self, x: Tensor) -> list[Tensor]:
        return self._vgg_sources(self.preprocess(x))[0]

    def conv3_3_conf(self, x: Tensor) -> Tensor:
        """Raw conv3_3 classifier ``[N,4,H/4,W/4]`` before the max-out: channels 0-2 background, 3 face.

        The S3FD small-anchor (16 px) term of TSDF stage 2 reads it. Differentiable.
        """
        net_input = self.preprocess(x)
        return self.conf[0](self.L2Norm3_3(run_layers(self.vgg, net_input, 0, CONV3_3_END)))
