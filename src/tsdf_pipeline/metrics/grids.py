"""Small image helpers for the evaluation figures: 8-bit conversion, difference maps, grids and box drawing.

Model-space images are ``[N,3,H,W]`` in ``[-1,1]``; display images are ``[0,1]`` floats or ``uint8``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, make_grid

from tsdf_pipeline.metrics.image_quality import denorm

GRID_PADDING = 2


def to_uint8(x: Tensor) -> Tensor:
    """``[..., 3, H, W]`` in [-1,1] -> ``uint8`` in [0,255], clamped, rounded half-up as ``quantize_8bit``."""
    return torch.floor((x.clamp(-1, 1) + 1) / 2 * 255 + 0.5).to(torch.uint8)


def amplified_difference(a: Tensor, b: Tensor, factor: float = 10.0) -> Tensor:
    """``|denorm(a) - denorm(b)| * factor`` clamped to [0,1]; ``a``, ``b`` in [-1,1], same shape as them."""
    if a.shape != b.shape:
        raise ValueError(f"amplified_difference: shapes differ, {tuple(a.shape)} and {tuple(b.shape)}")
    return ((denorm(a) - denorm(b)).abs() * factor).clamp(0, 1)


def image_rows(columns: Sequence[Tensor], padding: int = GRID_PADDING, pad_value: float = 1.0) -> Tensor:
    """Grid with one row per sample and one column per entry of ``columns``.

    Args:
        columns: tensors ``[n,3,H,W]`` in [0,1], all of the same shape; column ``j`` of row ``i`` is
            ``columns[j][i]``.
    Returns:
        ``[3, n*(H+p)+p, len(columns)*(W+p)+p]`` in [0,1] with ``p = padding``.
    """
    if not columns:
        raise ValueError("image_rows: expected at least one column")
    shape = columns[0].shape
    for j, col in enumerate(columns):
        if col.dim() != 4 or col.shape[1] != 3 or col.shape != shape:
            raise ValueError(
                f"image_rows: column {j} must be [n,3,H,W] like column 0 {tuple(shape)}, "
                f"got {tuple(col.shape)}"
            )
    tiles = torch.stack([c.detach().float().cpu() for c in columns], dim=1).flatten(0, 1)
    return make_grid(tiles, nrow=len(columns), padding=padding, pad_value=pad_value)


def draw_boxes(image: Tensor, boxes_and_colors: Sequence[tuple[Tensor, str]], width: int = 1) -> Tensor:
    """Draw box sets on one image; returns ``[3,H,W]`` in [0,1].

    Args:
        image: ``[3,H,W]`` in [-1,1].
        boxes_and_colors: ``(boxes [K,4] xyxy in pixels, colour name)`` pairs, drawn in order; boxes are
            clipped to the image first (detectors may return boxes that leave it).
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"draw_boxes: image must be [3,H,W] in [-1,1], got {tuple(image.shape)}")
    canvas = to_uint8(image.detach().cpu())
    h, w = canvas.shape[-2:]
    for boxes, color in boxes_and_colors:
        if boxes.numel() == 0:
            continue
        b = boxes.detach().float().cpu().clone()
        b[:, 0::2] = b[:, 0::2].clamp(0, w - 1)
        b[:, 1::2] = b[:, 1::2].clamp(0, h - 1)
        canvas = draw_bounding_boxes(canvas, b, colors=color, width=width)
    return canvas.float() / 255
