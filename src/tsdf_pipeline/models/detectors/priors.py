"""SSD-style priors (anchors), box decoding and the 0..255 mean-subtracted input of the anchor detectors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

VARIANCES = (0.1, 0.2)
# Caffe/VGG per-channel means in B, G, R order (0..255 scale).
MEAN_BGR = (104.0, 117.0, 123.0)


def mean_subtracted_input(x: Tensor, bgr: bool) -> Tensor:
    """``[N,3,H,W]`` RGB in ``[-1,1]`` -> 0..255 minus the per-channel mean, differentiable.

    ``bgr=True``: channels B, G, R minus (104, 117, 123); ``bgr=False``: channels R, G, B minus (123, 117, 104).
    No std scaling.
    """
    img255 = (x + 1.0) * 127.5
    if bgr:
        img255 = img255[:, [2, 1, 0]]
        mean = MEAN_BGR
    else:
        mean = MEAN_BGR[::-1]
    return img255 - torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)


def ssd_priors(image_size: tuple[int, int], feature_sizes: Sequence[tuple[int, int]], steps: Sequence[int],
               min_sizes: Sequence[Sequence[int]], device: torch.device | None = None) -> Tensor:
    """Square priors ``[P,4]`` as ``(cx, cy, w, h)`` normalised by the image width/height.

    For level ``k`` with map ``(h_k, w_k)``: cells in row-major order, and in each cell one prior per entry of
    ``min_sizes[k]``, centred at ``((j+0.5)*steps[k]/W, (i+0.5)*steps[k]/H)`` with size
    ``(s/W, s/H)``. This is the NHWC flattening order of the detection heads.
    """
    height, width = image_size
    levels = []
    for (fh, fw), step, sizes in zip(feature_sizes, steps, min_sizes, strict=True):
        cy, cx = torch.meshgrid(
            (torch.arange(fh, dtype=torch.float32, device=device) + 0.5) * step / height,
            (torch.arange(fw, dtype=torch.float32, device=device) + 0.5) * step / width,
            indexing="ij",
        )
        per_size = [
            torch.stack([cx, cy, torch.full_like(cx, s / width), torch.full_like(cy, s / height)], dim=-1)
            for s in sizes
        ]
        levels.append(torch.stack(per_size, dim=2).reshape(-1, 4))
    return torch.cat(levels, dim=0)


def decode_boxes(loc: Tensor, priors: Tensor, variances: tuple[float, float] = VARIANCES) -> Tensor:
    """SSD box decoding: ``loc`` ``[N,P,4]`` offsets + ``priors`` ``[P,4]`` (cx,cy,w,h) -> ``[N,P,4]`` xyxy.

    Output is in the priors' (normalised) units; differentiable in ``loc``.
    """
    centre = priors[:, :2] + loc[..., :2] * variances[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[..., 2:] * variances[1])
    top_left = centre - size / 2
    return torch.cat([top_left, top_left + size], dim=-1)


def flatten_head(t: Tensor, channels_per_prior: int) -> Tensor:
    """A head map ``[N, A*C, h, w]`` -> ``[N, h*w*A, C]`` (NHWC flattening, as the official heads)."""
    n = t.shape[0]
    return t.permute(0, 2, 3, 1).reshape(n, -1, channels_per_prior)
