"""Training recipes: a victim's config from a parameter block (``common`` + per-arch keys) and one call to train.

Shared by the ``victim_training`` / ``attacker_retraining`` Kedro stages and ``scripts/train_demo_victims.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tsdf_pipeline.training import TensorFaceDataset, TrainResult, make_config, train_gan
from tsdf_pipeline.training.config import TrainConfig
from tsdf_pipeline.training.engine import StepCallback


def recipe_config(arch: str, params: Mapping[str, Any], **overrides: Any) -> TrainConfig:
    """``make_config(arch, **params["common"], **params[arch], **overrides)``; unknown keys are named in the error.

    A ``null`` value means the upstream default (so ``conf/celeba`` can undo a demo-size key of ``conf/base``).
    """
    if arch not in params:
        raise KeyError(f"no training recipe for {arch!r}: add a '{arch}' block next to 'common'")
    merged = {**dict(params.get("common") or {}), **dict(params[arch] or {}), **overrides}
    return make_config(arch, **{k: v for k, v in merged.items() if v is not None})


def train_recipe(arch: str, params: Mapping[str, Any], images: torch.Tensor, attrs40: torch.Tensor,
                 work_dir: str | Path, *, device: str | None = None, callback: StepCallback | None = None,
                 init_checkpoint: str | Path | None = None, **overrides: Any) -> TrainResult:
    """Train ``arch`` on ``images`` ``[N,3,S,S]`` in [-1,1] with labels ``attrs40`` ``[N,40]`` in {0,1}.

    Resumes from ``work_dir`` when it holds a run of the same recipe and data; ``init_checkpoint`` (official
    format) makes it a fine-tuning run.
    """
    config = recipe_config(arch, params, **overrides)
    if images.shape[-1] != config.image_size:
        raise ValueError(f"{arch}: the recipe trains at {config.image_size} px but the images are "
                         f"{images.shape[-1]} px; set data_ingestion.image_size to {config.image_size}")
    return train_gan(arch, TensorFaceDataset(images, attrs40), config, work_dir, device=device, callback=callback,
                     init_checkpoint=init_checkpoint)
