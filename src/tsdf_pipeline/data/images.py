"""Decoding and CMUA/TSDF preprocessing of CelebA images into ``[N,3,H,W]`` tensors in [-1,1]."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torchvision import transforms as T
from tqdm.auto import tqdm

from tsdf_pipeline.data.celeba import CelebAFormatError


def celeba_transform(image_size: int = 256, crop_size: int | None = 170) -> T.Compose:
    """CMUA/TSDF preprocessing: ``CenterCrop(crop) → Resize(size) → [0,1] → Normalize(.5,.5)`` → [-1,1]."""
    steps: list = [T.CenterCrop(crop_size)] if crop_size else []
    steps += [T.Resize(image_size), T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]
    return T.Compose(steps)


def load_images(
    image_dir: str | Path,
    names: Sequence[str],
    transform: T.Compose,
    *,
    on_bad_image: str = "raise",
    progress: bool = True,
) -> tuple[torch.Tensor, list[int], list[dict[str, str]]]:
    """Decode ``names`` from ``image_dir`` one by one into a preallocated tensor.

    Returns ``(images [K,3,H,W] in [-1,1], kept positions into names [K], skipped [{id, reason}])``.
    ``on_bad_image="raise"`` stops at the first missing or undecodable file, naming it; ``"skip"`` records it.
    """
    if on_bad_image not in ("raise", "skip"):
        raise ValueError(f"on_bad_image must be 'raise' or 'skip', got {on_bad_image!r}")
    image_dir = Path(image_dir)
    out: torch.Tensor | None = None
    kept: list[int] = []
    skipped: list[dict[str, str]] = []
    for pos, name in enumerate(tqdm(names, desc="decode images", unit="img", disable=not progress)):
        path = image_dir / name
        try:
            with Image.open(path) as im:
                tensor = transform(im.convert("RGB"))
        except FileNotFoundError:
            reason = "listed in the attribute file but missing"
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            reason = f"cannot be decoded ({exc.__class__.__name__}: {exc})"
        else:
            if out is None:
                out = torch.empty((len(names), *tensor.shape), dtype=torch.float32)
            out[len(kept)] = tensor
            kept.append(pos)
            continue
        if on_bad_image == "raise":
            raise CelebAFormatError(f"{path}: image {reason} (set on_bad_image: skip to skip such images)")
        skipped.append({"id": name, "reason": reason})
    if out is None:
        raise CelebAFormatError(f"{image_dir}: none of the {len(names)} selected images could be read")
    return out[: len(kept)].clone(), kept, skipped
