"""What every architecture's trainer provides to the shared loop in :mod:`tsdf_pipeline.training.engine`."""

from __future__ import annotations

import abc
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tsdf_pipeline.data.attributes import attr_indices
from tsdf_pipeline.models import load_discriminator, load_generator, save_generator
from tsdf_pipeline.models.checkpoints import atomic_save
from tsdf_pipeline.training.config import TrainConfig
from tsdf_pipeline.training.dataset import BatchSampler, TensorFaceDataset

# Wrapper key of the discriminator in each architecture's official checkpoint (None: raw state dict).
DISCRIMINATOR_WRAPPER: dict[str, str | None] = {"stargan": None, "attgan": "D", "hisd": "dis"}


class ArchTrainer(abc.ABC):
    """Models, optimisers and the per-iteration objective of one GAN architecture.

    Subclasses build ``self.generator`` / ``self.discriminator`` (and optional EMA copy) in ``__init__``
    and implement :meth:`train_step`, :meth:`set_step_lr` and :meth:`sample_grid`. Global RNG use inside
    :meth:`train_step` is part of the reproducible stream; :meth:`sample_grid` must not touch the global RNG.
    """

    arch: ClassVar[str]
    # Architecture whose discriminator class/loader this trainer uses (AttentionGAN reuses StarGAN's D).
    discriminator_arch: ClassVar[str]

    def __init__(self, config: TrainConfig, dataset: TensorFaceDataset, device: torch.device) -> None:
        self.config = config
        self.dataset = dataset
        self.device = device
        self.use_amp = device.type == "cuda"
        self.generator: nn.Module
        self.discriminator: nn.Module
        self.generator_ema: nn.Module | None = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    # ----------------------------------------------------------------------------------------- setup
    @abc.abstractmethod
    def generator_config(self) -> dict[str, Any]:
        """Keyword arguments of ``build_generator``/``load_generator`` for this run's generator."""

    @abc.abstractmethod
    def discriminator_config(self) -> dict[str, Any]:
        """Keyword arguments of ``build_discriminator``/``load_discriminator`` for this run's discriminator."""

    def modules(self) -> dict[str, nn.Module]:
        """Every module whose state is checkpointed, by name."""
        mods = {"G": self.generator, "D": self.discriminator}
        if self.generator_ema is not None:
            mods["G_ema"] = self.generator_ema
        return mods

    def sampling_pools(self) -> dict[str, Tensor]:
        """Dataset rows to draw batches from, by pool name (default: one pool with every image)."""
        return {"all": torch.arange(len(self.dataset))}

    def to_device(self) -> None:
        """Move the modules to the device; channels-last layout on CUDA."""
        fmt = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        for module in self.modules().values():
            module.to(device=self.device, memory_format=fmt)

    def load_init(self, generator_path: str | os.PathLike, discriminator_path: str | os.PathLike | None) -> None:
        """Start from official-format checkpoints (fine-tuning): G (and its EMA copy) and optionally D."""
        loaded = load_generator(self.arch, generator_path, **self.generator_config())
        self.generator.load_state_dict(loaded.state_dict())
        if self.generator_ema is not None:
            self.generator_ema.load_state_dict(loaded.state_dict())
        if discriminator_path is not None:
            dis = load_discriminator(self.discriminator_arch, discriminator_path, **self.discriminator_config())
            self.discriminator.load_state_dict(dis.state_dict())

    def save_generator(self, path: Path) -> None:
        """The generator in the official checkpoint wrapper (HiSD: ``{'gen', 'gen_test'}``)."""
        save_generator(self.arch, self.generator, path)

    def save_discriminator(self, path: Path) -> None:
        """The discriminator in the official wrapper (:data:`DISCRIMINATOR_WRAPPER`), written atomically."""
        sd = self.discriminator.state_dict()
        key = DISCRIMINATOR_WRAPPER[self.discriminator_arch]
        atomic_save(sd if key is None else {key: sd}, path)

    # ------------------------------------------------------------------------------------ training
    @abc.abstractmethod
    def set_step_lr(self, step: int) -> None:
        """Set the optimisers' learning rates for (1-based) iteration ``step``."""

    @abc.abstractmethod
    def train_step(self, step: int, sampler: BatchSampler, update_generator: bool = True) -> dict[str, Tensor]:
        """Run iteration ``step`` (1-based); return its detached 0-dim loss terms by name (``"D/..."``, ``"G/..."``).

        ``update_generator`` False (D warm-up): only D is updated; G, its optimiser state and EMA copy stay as
        they are, and only ``"D/..."`` terms are returned.
        """

    @abc.abstractmethod
    def sample_grid(self, images: Tensor, attrs40: Tensor) -> Tensor:
        """Edits of the fixed ``images [n,3,H,W]`` in [-1,1] as one grid ``[3, rows*H, cols*W]`` in [-1,1]."""

    # ------------------------------------------------------------------------------------- helpers
    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA; nothing on CPU."""
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_amp)

    def to_input(self, x: Tensor) -> Tensor:
        """Move a batch to the device (channels-last for 4-D tensors on CUDA)."""
        x = x.to(self.device, non_blocking=True)
        if x.dim() == 4 and self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def draw(self, sampler: BatchSampler, pool: str = "all") -> tuple[Tensor, Tensor]:
        """Next batch ``(images [B,3,H,W], attrs40 [B,40])`` of ``pool`` on the device."""
        return self.draw_rows(sampler.next(pool))

    def draw_rows(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Dataset ``rows`` as ``(images [B,3,H,W], attrs40 [B,40])`` on the device."""
        images, attrs40 = self.dataset.batch(rows)
        return self.to_input(images), self.to_input(attrs40)

    @staticmethod
    def columns(names: tuple[str, ...] | list[str]) -> Tensor:
        """CelebA column indices of ``names`` as an int64 tensor."""
        return torch.tensor(attr_indices(list(names)), dtype=torch.int64)


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Temporarily switch ``module`` to eval mode (restores the previous mode)."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)




def grid_rows(columns: list[Tensor]) -> Tensor:
    """Columns ``[n,3,H,W]`` each (one per edit) -> grid ``[3, n*H, len(columns)*W]``, values clamped to [-1,1]."""
    row_strip = torch.cat([c.float().clamp(-1, 1) for c in columns], dim=3)  # [n,3,H,cols*W]
    return torch.cat(list(row_strip), dim=1)
