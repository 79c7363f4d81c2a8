"""AttentionGAN-v1 multi-domain generator (Ha0Tang/AttentionGAN ``AttentionGAN-v1-multi/model.py`` layout).

Same backbone and state-dict names as StarGAN G; the last conv has 4 output channels (1 attention logit +
3 content channels) and no Tanh.  Same InstanceNorm rule as StarGAN: always per-instance statistics.
"""

from __future__ import annotations

import torch
from torch import nn

from tsdf_pipeline.models.stargan import run_with_feature, stargan_trunk, tile_condition

GeneratorOutput = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class AttentionGANGenerator(nn.Module):
    """AttentionGAN G: x ``[N,3,H,W]`` in [-1,1], c ``[N,c_dim]`` -> ``(result, attention, content)``.

    ``attention = sigmoid(out[:, :1])`` repeated to ``[N,3,H,W]`` in (0,1); ``content = out[:, 1:]``
    ``[N,3,H,W]`` (unbounded, no tanh); ``result = content * attention + x * (1 - attention)``.
    """

    def __init__(self, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6) -> None:
        super().__init__()
        self.conv_dim, self.c_dim, self.repeat_num = conv_dim, c_dim, repeat_num
        self.main = nn.Sequential(*stargan_trunk(conv_dim, c_dim, repeat_num, out_channels=4))

    @staticmethod
    def _compose(x: torch.Tensor, out: torch.Tensor) -> GeneratorOutput:
        attention = torch.sigmoid(out[:, :1]).repeat(1, 3, 1, 1)
        content = out[:, 1:]
        return content * attention + x * (1 - attention), attention, content

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> GeneratorOutput:
        return self._compose(x, self.main(tile_condition(x, c)))

    def forward_with_feature(self, x: torch.Tensor, c: torch.Tensor) -> tuple[GeneratorOutput, torch.Tensor]:
        """``((result, attention, content), feat)`` with feat = ``main[8]`` output ``[N,4*conv_dim,H/4,W/4]``."""
        out, feat = run_with_feature(self.main, tile_condition(x, c))
        return self._compose(x, out), feat
