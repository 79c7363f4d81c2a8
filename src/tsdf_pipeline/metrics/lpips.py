"""LPIPS v0.1 with the AlexNet trunk (Zhang et al. 2018; the ``lpips`` package's default ``LPIPS(net="alex")``).

``d(a, b) = Σ_l mean_hw( w_l · (f̂_l(a) − f̂_l(b))² )`` where ``f_l`` are AlexNet's five ReLU outputs on the
scaled input ``(x − shift) / scale``, ``f̂`` is ``f`` divided by its channel-wise L2 norm (+1e-10) and ``w_l`` the
learnt 1×1 linear layers (no bias). Inputs ``[N,3,H,W]`` in [-1,1]; lower = more similar; 0 for equal images.

Weights are the user's files (nothing is downloaded): the trunk in torchvision's AlexNet format
(``alexnet-owt-7be5be79.pth``: ``features.{0,3,6,8,10}.{weight,bias}``; its ``classifier.*`` entries are ignored)
and the linear layers as shipped inside the ``lpips`` package (``lpips/weights/v0.1/alex.pth``:
``lin{0..4}.model.1.weight``). See docs/weights.md.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import alexnet

from tsdf_pipeline.metrics.backbone_weights import load_tensors

# lpips.ScalingLayer: ImageNet statistics mapped to [-1,1] inputs.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
# Indices into torchvision's ``alexnet().features`` after which LPIPS taps a ReLU output.
_TAPS = (1, 4, 7, 9, 11)
CHANNELS = (64, 192, 384, 256, 256)


class LPIPS(nn.Module):
    """LPIPS distance ``forward(a, b) -> [N]`` for ``a, b`` ``[N,3,H,W]`` in [-1,1] (H, W ≥ 31, AlexNet's
    smallest input)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = alexnet(weights=None).features[: _TAPS[-1] + 1]
        for module in self.features:
            if isinstance(module, nn.ReLU):
                module.inplace = False
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def _taps(self, x: Tensor) -> list[Tensor]:
        out = []
        h = (x - self.shift) / self.scale
        for i, module in enumerate(self.features):
            h = module(h)
            if i in _TAPS:
                out.append(h / (h.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 3 or min(a.shape[2:]) < 31:
            raise ValueError(f"LPIPS: expected two [N,3,H,W] tensors of one shape with H, W >= 31, got "
                             f"{tuple(a.shape)} and {tuple(b.shape)}")
        n = a.shape[0]
        taps = self._taps(torch.cat([a, b]).float())
        return sum(lin((f[:n] - f[n:]) ** 2).mean(dim=(1, 2, 3)) for lin, f in zip(self.lins, taps, strict=True))


def load_lpips(backbone: str | Path, linear: str | Path) -> LPIPS:
    """LPIPS with the trunk from ``backbone`` (torchvision AlexNet state dict) and the linear layers from
    ``linear`` (the ``lpips`` package's ``v0.1/alex.pth``), both loaded with ``weights_only=True``.

    Raises ``CheckpointError`` naming the file and the keys that are missing, unexpected or mis-shaped.
    """
    model = LPIPS()
    trunk = {f"features.{k}": v for k, v in model.features.state_dict().items()}
    got = load_tensors(backbone, expected={k: v.shape for k, v in trunk.items()}, ignore_prefixes=("classifier.",))
    model.features.load_state_dict({k.removeprefix("features."): v for k, v in got.items()})
    lins = {f"lin{i}.model.1.weight": lin.weight for i, lin in enumerate(model.lins)}
    got = load_tensors(linear, expected={k: v.shape for k, v in lins.items()})
    for i, lin in enumerate(model.lins):
        lin.weight.copy_(got[f"lin{i}.model.1.weight"])
    return model
