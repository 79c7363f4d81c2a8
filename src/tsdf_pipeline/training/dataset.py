"""In-memory face dataset and the seeded, resumable batch sampler the trainers draw from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms import ColorJitter


class TensorFaceDataset:
    """Face images with their 40 CelebA attributes, held as tensors.

    ``images``: ``[N,3,H,W]`` float in [-1,1]; ``attrs40``: ``[N,40]`` in {0,1} (columns in the order of
    ``tsdf_pipeline.data.attributes.CELEBA_ATTRS``), stored as float32.
    """

    def __init__(self, images: Tensor, attrs40: Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N,3,H,W], got {list(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"images must be a float tensor in [-1,1], got dtype {images.dtype}")
        if attrs40.dim() != 2 or attrs40.shape != (images.shape[0], 40):
            raise ValueError(f"attrs40 must be [N,40] with N={images.shape[0]} images, got {list(attrs40.shape)}")
        if images.shape[0] == 0:
            raise ValueError("the dataset is empty: images has N=0")
        if not torch.isfinite(images).all() or images.min() < -1 or images.max() > 1:
            raise ValueError("images must be finite and in [-1,1]")
        if not ((attrs40 == 0) | (attrs40 == 1)).all():
            raise ValueError("attrs40 must hold only 0 and 1 (convert ±1 CelebA labels with (a+1)//2)")
        self.images = images.float()
        self.attrs40 = attrs40.float()

    def __len__(self) -> int:
        return self.images.shape[0]

    def fingerprint(self) -> list[float]:
        """``[N, H, W, sum(images), sum(attrs40)]``: tells whether a resumed run sees the same data."""
        return [float(d) for d in self.images.shape[0:1] + self.images.shape[2:]] + [
            float(self.images.double().sum()), float(self.attrs40.double().sum())]

    @property
    def image_size(self) -> tuple[int, int]:
        return self.images.shape[2], self.images.shape[3]

    def batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """``(images [B,3,H,W], attrs40 [B,40])`` of the rows ``indices`` (int64 ``[B]``)."""
        return self.images.index_select(0, indices), self.attrs40.index_select(0, indices)


def random_horizontal_flip(images: Tensor, p: float = 0.5) -> Tensor:
    """Mirror each image of ``[N,C,H,W]`` left-right with probability ``p`` (torchvision ``RandomHorizontalFlip``
    applied per sample, as in the StarGAN / AttentionGAN training loaders).

    The ``N`` coin flips come from the global (CPU) torch RNG, so they are part of a trainer's reproducible,
    checkpointed RNG stream and identical on CPU and CUDA.
    """
    flip = (torch.rand(images.shape[0]) < p).to(images.device)
    return torch.where(flip.view(-1, *([1] * (images.dim() - 1))), images.flip(-1), images)


def random_color_jitter(images: Tensor, strength: float) -> Tensor:
    """torchvision ``ColorJitter(strength, strength, strength, strength)`` with its own draw per image of
    ``[N,3,H,W]`` in [-1,1] (HiSD's training loader, upstream ``core/utils.py``); returns float in [-1,1].

    Factors and the order of the four adjustments come from the global CPU torch RNG, like the flips; strength 0
    returns ``images`` unchanged and draws nothing.
    """
    if strength == 0:
        return images
    jitter = ColorJitter(strength, strength, strength, strength)
    return torch.stack([jitter((img.float() + 1) / 2) for img in images]) * 2 - 1


class BatchSampler:
    """Seeded draws of index batches from named pools, reshuffled every pass and resumable exactly.

    Each pool (a 1-D int64 tensor of dataset rows) is visited in a random order drawn from one private
    ``torch.Generator``; only full batches are served (the remainder of a pass is dropped, as with
    ``DataLoader(shuffle=True, drop_last=True)``). :meth:`state_dict` holds the generator state, the current
    order and position of every pool.
    """

    def __init__(self, pools: Mapping[str, Tensor], batch_size: int, seed: int) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        small = {name: int(idx.numel()) for name, idx in pools.items() if idx.numel() < batch_size}
        if small:
            raise ValueError(f"batch_size {batch_size} is larger than these sampling pools (name: images): {small}")
        self.pools = {name: idx.to(torch.int64) for name, idx in pools.items()}
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self._order: dict[str, Tensor] = {}
        self._pos: dict[str, int] = {}

    def next(self, pool: str) -> Tensor:
        """The next ``[batch_size]`` dataset rows of ``pool``."""
        order = self._order.get(pool)
        pos = self._pos.get(pool, 0)
        if order is None or pos + self.batch_size > order.numel():
            idx = self.pools[pool]
            order = idx[torch.randperm(idx.numel(), generator=self.generator)]
            pos = 0
            self._order[pool] = order
        self._pos[pool] = pos + self.batch_size
        return order[pos:pos + self.batch_size]

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "order": {k: v.clone() for k, v in self._order.items()},
            "pos": dict(self._pos),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = sorted(set(state["order"]) - set(self.pools))
        if unknown:
            raise ValueError(f"sampler state has pools {unknown} that this dataset/config does not define")
        self.generator.set_state(state["generator"])
        self._order = {k: v.clone() for k, v in state["order"].items()}
        self._pos = {k: int(v) for k, v in state["pos"].items()}
