"""TSDF's feature-contrast enhancement and the ensemble feature maps it works on."""

from __future__ import annotations

import functools
import math

import torch
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


@functools.lru_cache(maxsize=64)
def _bilinear_weights(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``[n_out,n_in]`` interpolation matrix of a 1-D bilinear resize with ``align_corners=False``.

    The source coordinate and the two taps are ATen's (``area_pixel_compute_source_index``): ``(i+0.5)·n_in/n_out
    − 0.5``, clamped at 0, the right tap clamped to the last pixel.
    """
    weights = [[0.0] * n_in for _ in range(n_out)]
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        left = min(int(src), n_in - 1)
        lam = src - left
        weights[i][left] += 1.0 - lam
        weights[i][min(left + 1, n_in - 1)] += lam
    return torch.tensor(weights, dtype=dtype, device=device)


def bilinear_resize(x: Tensor, size: int) -> Tensor:
    """``[...,h,w]`` -> ``[...,size,size]``: ``F.interpolate(mode="bilinear", align_corners=False)`` up to rounding.

    Written as two matrix products (rows, then columns) in ``x``'s dtype, autocast off: the same numbers (the
    release resizes TSDF's features with ``F.interpolate``), 3x faster on the CPU, and a backward of two matrix
    products instead of ``upsample_bilinear2d_backward``.
    """
    h, w = x.shape[-2:]
    with torch.autocast(x.device.type, enabled=False):
        rows = _bilinear_weights(h, size, x.device, x.dtype)
        cols = _bilinear_weights(w, size, x.device, x.dtype)
        return rows @ x @ cols.transpose(0, 1)


def summed_feature_map(feat: Tensor, size: int) -> Tensor:
    """Channel-summed, resized middle feature ``[T,N,C,h,w]`` -> ``[N,size,size]`` (mean over the T targets).

    Summing the channels before the bilinear resize equals the release's resize-then-sum (both are linear) at
    a fraction of the cost. With one training target per victim (``targets: train``) the mean over T is a no-op;
    with several targets it keeps each victim's share independent of its target count.
    """
    return bilinear_resize(feat.float().sum(2), size).mean(0)
