"""Input diversity (DI) of TSDF / FOUND as a fixed-shape gather.

The release's ``DI(x)`` does, with probability ``p`` and one draw per call (shared by the whole batch):
nearest-resize the ``S x S`` image to ``r x r`` with ``r ~ U{low..high}``, zero-pad it to ``pad x pad``
(``top ~ U{0..pad-r-1}``, ``left`` likewise, the rest at the bottom / right), and nearest-resize back to
``S x S``; otherwise it returns the image unchanged. At 256 px: ``low=256, high=289, pad=290``.

Nearest resizes and zero padding only move pixels, so the composite is separable:
``out[..., i, j] = x[..., rows[i], cols[j]] * row_valid[i] * col_valid[j]``. :func:`sample_diversity` draws the
index tables on the CPU (they are exactly what ``F.interpolate(mode="nearest")`` and ``F.pad`` would pick) and
:func:`apply_diversity` applies them with two ``index_select`` calls of fixed output shape: no host round trip,
no shape change (friendly to ``torch.compile`` and CUDA graphs), and the same gradient as the release's ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

RELEASE_SIZE = 256
RELEASE_LOW = 256
RELEASE_HIGH = 289
RELEASE_PAD = 290


@dataclass(frozen=True)
class DiversityRange:
    """Resize range ``low..high`` (inclusive) and padded size ``pad`` for square images of side ``size``."""

    size: int
    low: int
    high: int
    pad: int

    def __post_init__(self) -> None:
        if not (1 <= self.low <= self.high < self.pad):
            raise ValueError(
                f"input diversity: expected 1 <= low <= high < pad, got low={self.low}, high={self.high}, "
                f"pad={self.pad}"
            )


def diversity_range(size: int, low: int | None = None, high: int | None = None,
                    pad: int | None = None) -> DiversityRange:
    """The release's 256/289/290 range scaled to ``size`` (explicit values override each bound).

    ``pad = round(290·S/256)``, ``high = min(round(289·S/256), pad-1)``, ``low = S``; at S=256 this is exactly
    256/289/290, at S=128 it is 128/144/145, at S=32 it is 32/35/36.
    """
    pad = round(RELEASE_PAD * size / RELEASE_SIZE) if pad is None else pad
    high = min(round(RELEASE_HIGH * size / RELEASE_SIZE), pad - 1) if high is None else high
    low = size if low is None else low
    return DiversityRange(size=size, low=low, high=high, pad=pad)


@lru_cache(maxsize=4096)
def _axis_table(size: int, r: int, offset: int, pad: int) -> tuple[Tensor, Tensor]:
    """Source index (long) and validity (float in {0,1}) ``[size]`` of each output position along one axis,
    computed with torch's own ops. Cached and shared: read them, never write into them."""
    src = torch.arange(size, dtype=torch.float64).view(1, 1, size)
    resized = F.interpolate(src, size=r, mode="nearest")                        # [1,1,r]
    padded = F.pad(resized + 1.0, (offset, pad - r - offset), value=0.0)       # 0 marks padding
    back = F.interpolate(padded, size=size, mode="nearest").view(size)          # [size]
    return (back - 1.0).clamp_min(0.0).long(), (back > 0.0).float()


@dataclass
class DiversityDraw:
    """Index tables of ``count`` DI draws for side ``S``.

    ``index``: ``[count, 2, S]`` long (row table, column table); ``valid``: ``[count, 2, S]`` float in {0,1}.
    """

    index: Tensor
    valid: Tensor

    def to(self, device: torch.device | str) -> DiversityDraw:
        return DiversityDraw(self.index.to(device, non_blocking=True), self.valid.to(device, non_blocking=True))


def sample_diversity(count: int, rng: DiversityRange, prob: float, generator: torch.Generator) -> DiversityDraw:
    """Draw ``count`` DI transforms on the CPU (like the release: size, offsets, then the coin)."""
    size = rng.size
    index = torch.arange(size).repeat(count, 2, 1)   # the identity where the coin says no
    valid = torch.ones(count, 2, size)
    for k in range(count):
        r = int(torch.randint(rng.low, rng.high + 1, (1,), generator=generator))
        rem = rng.pad - r
        top = int(torch.randint(0, rem, (1,), generator=generator))
        left = int(torch.randint(0, rem, (1,), generator=generator))
        if float(torch.rand((), generator=generator)) < prob:
            for axis, offset in enumerate((top, left)):
                index[k, axis], valid[k, axis] = _axis_table(size, r, offset, rng.pad)
    return DiversityDraw(index, valid)


def apply_diversity(x: Tensor, index: Tensor, valid: Tensor) -> Tensor:
    """Apply one DI draw to ``x`` ``[N,C,S,S]``; ``index``/``valid`` are ``[2,S]`` (one entry of a draw)."""
    out = x.index_select(-2, index[0]).index_select(-1, index[1])
    mask = (valid[0].unsqueeze(1) * valid[1].unsqueeze(0)).to(x.dtype)
    return out * mask


def diversity_reference(x: Tensor, r: int, top: int, left: int, pad: int) -> Tensor:
    """The release's DI with a fixed draw (nearest resize, zero pad, nearest resize back), ``[N,C,S,S]``."""
    size = x.shape[-1]
    rem = pad - r
    padded = F.pad(F.interpolate(x, size=(r, r)), (left, rem - left, top, rem - top), mode="constant", value=0.0)
    return F.interpolate(padded, size=(size, size))
