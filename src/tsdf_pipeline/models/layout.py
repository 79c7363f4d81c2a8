"""Memory-layout test shared by the victims' layout-native ops (the CUDA path runs channels-last)."""

from __future__ import annotations

import torch
from torch import Tensor


def is_channels_last(x: Tensor) -> bool:
    """True when ``x [N,C,H,W]`` is stored channels-last and not also contiguous (e.g. not when H = W = 1)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
