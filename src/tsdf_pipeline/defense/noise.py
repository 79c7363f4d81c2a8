"""Uniform-noise control: a random perturbation of the same L∞ budget as the defenses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tsdf_pipeline.defense.state import make_generator


@dataclass
class NoiseConfig:
    """``per_image``: one draw per image ``[N,3,H,W]`` (the release's ``random_noise`` mode) or one universal
    draw ``[1,3,H,W]``."""

    epsilon: float = 0.05
    seed: int = 0
    per_image: bool = False


def uniform_noise(shape: Sequence[int], epsilon: float, seed: int) -> Tensor:
    """``U(-ε, ε)`` noise of ``shape`` (CPU fp32), reproducible from ``seed``."""
    gen = make_generator(seed, "uniform-noise")
    return (torch.rand(tuple(shape), generator=gen) * 2.0 - 1.0) * epsilon
