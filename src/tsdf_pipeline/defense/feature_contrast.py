"""TSDF's feature-contrast enhancement and the ensemble feature maps it works on."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_EPS = 1e-7


def _batch_attention(x: Tensor) -> Tensor:
    """``softmax(x xᵀ / √D) x`` on ``[B,D]`` rows: mixes the batch samples (the release calls it channel attention)."""
    scores = x @ x.transpose(0, 1) / (math.sqrt(x.shape[1]) + _EPS)
    return torch.softmax(scores, dim=1) @ x


def enhance_feature_contrast(clean: Tensor, adv: Tensor, temperature: float = 0.1, alpha: float = 0.4) -> Tensor:
    """Enhanced adversarial map ``A_enh`` of TSDF's ``L_enh`` term, as in the release's ``train.py``.

    ``clean``, ``adv``: ``[B,H,W]`` channel-summed ensemble features (any real values). Statistics are taken
    along dim 1 (``H``) with the unbiased std; the attention mixes the flattened ``[B,H·W]`` maps across the
    batch. Returns ``[B,H,W]``, re-standardised to ``adv``'s per-column mean and std. Gradients flow through
    both inputs. Computed in fp32 (``exp(mean|e|/T)`` overflows easily in bf16).
    """
    if clean.dim() != 3 or clean.shape != adv.shape:
        raise ValueError(
            f"enhance_feature_contrast: expected two [B,H,W] maps of equal shape, got {tuple(clean.shape)} "
            f"and {tuple(adv.shape)}"
        )
    clean = clean.float()
    adv = adv.float()
    clean_mean, clean_std = clean.mean(1, keepdim=True), clean.std(1, keepdim=True)
    adv_mean, adv_std = adv.mean(1, keepdim=True), adv.std(1, keepdim=True)
    clean_n = (clean - clean_mean) / (clean_std + _EPS)
    adv_n = (adv - adv_mean) / (adv_std + _EPS)
    batch = clean.shape[0]
    clean_att = _batch_attention(clean_n.reshape(batch, -1)).view_as(clean_n)
    adv_att = _batch_attention(adv_n.reshape(batch, -1)).view_as(adv_n)

    diffs = (adv_n - clean_n, (adv_mean - clean_mean) / (clean_std + _EPS), adv_att - clean_att)
    enhancement = sum(torch.sigmoid(d.abs().mean(1, keepdim=True)) * d for d in diffs)
    scale = torch.exp(enhancement.abs().mean(1, keepdim=True) / temperature)
    enhanced = adv + alpha * scale * enhancement
    enh_mean, enh_std = enhanced.mean(1, keepdim=True), enhanced.std(1, keepdim=True)
    return (enhanced - enh_mean) * (adv_std / (enh_std + _EPS)) + adv_mean


def resize_feature(feat: Tensor, size: int) -> Tensor:
    """``[T,N,C,h,w]`` -> ``[T,N,C,size,size]`` by bilinear resizing (``align_corners=False``, as the release)."""
    t, n, c, h, w = feat.shape
    out = F.interpolate(feat.reshape(t * n, c, h, w), size=(size, size), mode="bilinear", align_corners=False)
    return out.view(t, n, c, size, size)


def summed_feature_map(feat: Tensor, size: int) -> Tensor:
    """Channel-summed, resized middle feature ``[T,N,C,h,w]`` -> ``[N,size,size]`` (mean over the T targets).

    Summing the channels before the bilinear resize equals the release's resize-then-sum (both are linear) at
    a fraction of the cost. With one training target per victim (``targets: train``) the mean over T is a no-op;
    with several targets it keeps each victim's share independent of its target count.
    """
    t, n, _, h, w = feat.shape
    summed = feat.float().sum(2).reshape(t * n, 1, h, w)
    out = F.interpolate(summed, size=(size, size), mode="bilinear", align_corners=False)
    return out.view(t, n, size, size).mean(0)
