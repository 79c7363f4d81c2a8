"""GAN trainers (core layer: torch/numpy/pillow/tqdm only): victim training and attacker fine-tuning.

``train_gan(arch, dataset, config, out_dir)`` trains StarGAN, AttentionGAN, AttGAN or HiSD with its upstream
objective; see :mod:`tsdf_pipeline.training.engine` for the output layout and resume behaviour.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tsdf_pipeline.training.attentiongan import AttentionGANTrainer
from tsdf_pipeline.training.attgan import AttGANTrainer
from tsdf_pipeline.training.base import ArchTrainer
from tsdf_pipeline.training.config import (
    CONFIG_CLASSES,
    AttentionGANConfig,
    AttGANConfig,
    HiSDConfig,
    StarGANConfig,
    TrainConfig,
    make_config,
)
from tsdf_pipeline.training.dataset import BatchSampler, TensorFaceDataset
from tsdf_pipeline.training.engine import NonFiniteLossError, StepCallback, TrainResult, train
from tsdf_pipeline.training.hisd import HiSDTrainer
from tsdf_pipeline.training.stargan import StarGANTrainer

TRAINERS: dict[str, type[ArchTrainer]] = {
    "stargan": StarGANTrainer,
    "attentiongan": AttentionGANTrainer,
    "attgan": AttGANTrainer,
    "hisd": HiSDTrainer,
}


def train_gan(
    arch: str,
    dataset: TensorFaceDataset,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    init_checkpoint: str | Path | None = None,
    init_discriminator: str | Path | None = None,
    callback: StepCallback | None = None,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Train (or fine-tune from ``init_checkpoint``, an official-format generator checkpoint, plus optionally
    ``init_discriminator``) the ``arch`` GAN on ``dataset`` (images ``[N,3,S,S]`` in [-1,1], ``S`` =
    ``config.image_size``). ``config`` must be the arch's config class (see :func:`make_config`).

    ``callback(step, losses, samples_path)`` receives the latest value of every loss term at each
    ``log_every``-th step and after every sample grid (``samples_path`` is then the PNG, else None).
    ``device`` overrides ``config.device``. Raises :class:`NonFiniteLossError` on a NaN/Inf loss.
    """
    if arch not in TRAINERS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(TRAINERS)}")
    expected = CONFIG_CLASSES[arch]
    if type(config) is not expected:
        raise TypeError(f"train_gan({arch!r}) needs a {expected.__name__}, got {type(config).__name__}")
    return train(TRAINERS[arch], dataset, config, out_dir, init_checkpoint=init_checkpoint,
                 init_discriminator=init_discriminator, callback=callback, device=device)


__all__ = [
    "TRAINERS",
    "AttGANConfig",
    "AttentionGANConfig",
    "BatchSampler",
    "HiSDConfig",
    "NonFiniteLossError",
    "StarGANConfig",
    "StepCallback",
    "TensorFaceDataset",
    "TrainConfig",
    "TrainResult",
    "make_config",
    "train_gan",
]
