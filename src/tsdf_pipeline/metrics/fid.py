"""FID (Heusel et al. 2017) with the Inception network of TensorFlow's reference, as ``pytorch-fid`` computes it.

Features: ``pytorch_fid.inception.InceptionV3(output_blocks=[3])``, i.e. the 2048-d final average pool of the
FID Inception (torchvision's Inception v3 with ``num_classes=1008``, no aux head, and the ``FIDInception{A,C,E}``
blocks: average pools that exclude padding, a max pool in the last block), on the input bilinearly resized to
299×299. Weights: the user's ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's release; nothing is
downloaded; docs/weights.md).

Distance: ``‖μ_a − μ_b‖² + tr(Σ_a) + tr(Σ_b) − 2·tr((Σ_a Σ_b)^½)`` with unbiased covariances (``np.cov``), in
float64; the trace of the matrix square root comes from a singular value decomposition (:func:`frechet_distance`),
with no complex parts to discard, unlike ``scipy.linalg.sqrtm`` of the product. It is a distance between two
*sets* of images: TSDF's ``evaluate_fid.py`` runs it on one-image folders, which is meaningless (TSDF_METHOD.md
§2.1), so it is reported here per method and victim over all evaluation samples.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.inception import Inception3, InceptionA, InceptionC, InceptionE

from tsdf_pipeline.metrics.backbone_weights import load_tensors

FEATURES = 2048
_SIZE = 299


def _avg_pool(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _FIDInceptionA(InceptionA):
    def forward(self, x: Tensor) -> Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool(x))], 1)


class _FIDInceptionC(InceptionC):
    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                     self.branch7x7dbl_5):
            d = conv(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool(x))], 1)


class _FIDInceptionE(InceptionE):
    def __init__(self, in_channels: int, pool: str) -> None:
        super().__init__(in_channels)
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = _avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pooled)], 1)


class FIDInception(nn.Module):
    """``forward(x [N,3,H,W] in [-1,1]) -> [N,2048]`` pool3 features of the FID Inception."""

    def __init__(self) -> None:
        super().__init__()
        net = Inception3(num_classes=1008, aux_logits=False, init_weights=False)
        net.Mixed_5b = _FIDInceptionA(192, pool_features=32)
        net.Mixed_5c = _FIDInceptionA(256, pool_features=64)
        net.Mixed_5d = _FIDInceptionA(288, pool_features=64)
        net.Mixed_6b = _FIDInceptionC(768, channels_7x7=128)
        net.Mixed_6c = _FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6d = _FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6e = _FIDInceptionC(768, channels_7x7=192)
        net.Mixed_7b = _FIDInceptionE(1280, pool="avg")
        net.Mixed_7c = _FIDInceptionE(2048, pool="max")
        self.net = net
        self.requires_grad_(False).eval()

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"FIDInception: expected [N,3,H,W] in [-1,1], got {tuple(x.shape)}")
        # pytorch-fid resizes the [0,1] image and then maps it to [-1,1]; both are affine per pixel, so resizing
        # the [-1,1] image directly is the same.
        n = self.net
        h = F.interpolate(x.float(), size=(_SIZE, _SIZE), mode="bilinear", align_corners=False)
        h = F.max_pool2d(n.Conv2d_2b_3x3(n.Conv2d_2a_3x3(n.Conv2d_1a_3x3(h))), kernel_size=3, stride=2)
        h = F.max_pool2d(n.Conv2d_4a_3x3(n.Conv2d_3b_1x1(h)), kernel_size=3, stride=2)
        for block in (n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b, n.Mixed_6c, n.Mixed_6d,
                      n.Mixed_6e, n.Mixed_7a, n.Mixed_7b, n.Mixed_7c):
            h = block(h)
        return h.mean(dim=(2, 3))


def load_fid_inception(path: str | Path) -> FIDInception:
    """The FID Inception with pytorch-fid's weights file ``path`` (read with ``weights_only=True``; exact keys
    and shapes, ``*.num_batches_tracked`` optional). Raises ``CheckpointError`` naming the file and keys."""
    model = FIDInception()
    own = {k: v.shape for k, v in model.net.state_dict().items() if not k.endswith("num_batches_tracked")}
    state = load_tensors(path, own, ignore_suffixes=("num_batches_tracked",))
    model.net.load_state_dict(state, strict=False)
    return model


def _cov_factor(x: Tensor) -> Tensor:
    """``F`` ``[D,k]`` with ``F Fᵀ = cov(x)`` (unbiased) for ``x`` ``[n,D]``: the centred data when
    ``n ≤ D`` (``k = n``), else the covariance's eigenvectors scaled by √λ (``k = D``)."""
    n, d = x.shape
    centred = x - x.mean(0)
    if n <= d:
        return centred.T / math.sqrt(n - 1)
    vals, vecs = torch.linalg.eigh(centred.T @ centred / (n - 1))
    return vecs * vals.clamp_min(0).sqrt()


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """FID between feature sets ``a`` ``[N,D]`` and ``b`` ``[M,D]`` (N, M ≥ 2), float64; ≥ 0, 0 for equal sets.

    With ``Σ_a = F_a F_aᵀ`` and ``Σ_b = F_b F_bᵀ``, the eigenvalues of ``Σ_a Σ_b`` are the squared singular
    values of ``F_aᵀ F_b``, so ``tr((Σ_a Σ_b)^½)`` is that matrix's nuclear norm: exact, and at most
    ``min(N, D) × min(M, D)`` (fast for the few thousand samples of an evaluation).
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1] or min(a.shape[0], b.shape[0]) < 2:
        raise ValueError(f"frechet_distance: expected [N,D] and [M,D] features with N, M >= 2, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.double(), b.double()
    fa, fb = _cov_factor(a), _cov_factor(b)
    trace_root = torch.linalg.svdvals(fa.T @ fb).sum()
    value = (a.mean(0) - b.mean(0)).pow(2).sum() + fa.pow(2).sum() + fb.pow(2).sum() - 2 * trace_root
    return max(float(value), 0.0)
