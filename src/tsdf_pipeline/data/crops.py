"""Face-crop geometry of the attacker's data preparation: margin, squaring, border replication, resize.

Boxes and windows are ``(x1, y1, x2, y2)`` in pixels of the photo, with pixel ``i`` covering ``[i, i+1)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def crop_windows(boxes: Tensor, margin: float, square: bool = True) -> Tensor:
    """Whole-pixel crop windows ``[K,4]`` (float64) around detected face ``boxes [K,4]``.

    Each box grows around its centre by ``margin`` times its width on the left and on the right (its height
    on the top and bottom), so the sides become ``w * (1 + 2 * margin)`` and ``h * (1 + 2 * margin)``; with
    ``square`` both sides become the larger one. Sides are rounded to whole pixels (at least 1) and the window
    starts at ``floor(centre - side / 2 + 0.5)``. Windows may reach past the photo; ``cut_and_resize``
    replicates the border pixels there.
    """
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes: expected shape [K,4] (x1,y1,x2,y2), got {tuple(boxes.shape)}")
    if margin < 0:
        raise ValueError(f"margin: expected a non-negative fraction of the box size, got {margin}")
    b = boxes.detach().to(torch.float64)
    centre_x, centre_y = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    side_x = (b[:, 2] - b[:, 0]) * (1 + 2 * margin)
    side_y = (b[:, 3] - b[:, 1]) * (1 + 2 * margin)
    if square:
        side_x = side_y = torch.maximum(side_x, side_y)
    side_x = torch.floor(side_x + 0.5).clamp_min(1)
    side_y = torch.floor(side_y + 0.5).clamp_min(1)
    x1 = torch.floor(centre_x - side_x / 2 + 0.5)
    y1 = torch.floor(centre_y - side_y / 2 + 0.5)
    return torch.stack([x1, y1, x1 + side_x, y1 + side_y], dim=1)


def cut_and_resize(image: Tensor, window: Tensor, out_size: int) -> Tensor:
    """Cut ``window [4]`` (whole pixels, from ``crop_windows``) out of ``image [3,H,W]`` and resize it.

    Window pixels outside the photo repeat the nearest border pixel (edge replication, so no artificial black
    or grey band enters the training crops). The cut is resized to ``out_size x out_size`` with antialiased
    bilinear interpolation (a non-square window is stretched). Returns ``[3,out_size,out_size]``, same range
    and dtype as ``image``.
    """
    if image.dim() != 3:
        raise ValueError(f"image: expected shape [3,H,W], got {tuple(image.shape)}")
    x1, y1, x2, y2 = (int(v) for v in window.tolist())
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"window: expected x2 > x1 and y2 > y1, got {(x1, y1, x2, y2)}")
    height, width = image.shape[-2:]
    rows = torch.arange(y1, y2, device=image.device).clamp(0, height - 1)
    cols = torch.arange(x1, x2, device=image.device).clamp(0, width - 1)
    patch = image.index_select(1, rows).index_select(2, cols)
    return F.interpolate(
        patch[None], size=(out_size, out_size), mode="bilinear", align_corners=False, antialias=True
    )[0]
