"""Image subsets (optimisation / evaluation / training): images, ids, all 40 attributes, per-model label subsets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from tsdf_pipeline.data.attributes import CELEBA_ATTRS, attr_indices
from tsdf_pipeline.data.celeba import IMAGE_DIR, CelebAIndex
from tsdf_pipeline.data.images import celeba_transform, load_images


def build_subset(
    index: CelebAIndex,
    rows: np.ndarray,
    *,
    image_size: int,
    crop_size: int | None,
    label_sets: Mapping[str, Sequence[str]],
    on_bad_image: str = "raise",
    progress: bool = True,
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Decode ``rows`` of ``index`` and attach their labels; every image keeps its own row's labels.

    Returns ``(subset, skipped)`` where ``subset`` holds ``images`` [N,3,S,S] in [-1,1], ``image_ids`` [N],
    ``attrs`` [N,40] float in {0,1} (CelebA column order, ``attr_names``), and for each label set name
    ``labels[name]`` [N,len(set)] in {0,1} with ``label_names[name]``.
    """
    names = [index.names[r] for r in rows]
    images, kept, skipped = load_images(
        index.root / IMAGE_DIR, names, celeba_transform(image_size, crop_size),
        on_bad_image=on_bad_image, progress=progress,
    )
    kept_rows = rows[np.asarray(kept, dtype=np.int64)]
    attrs01 = torch.from_numpy((index.attrs[kept_rows] > 0).astype(np.float32))
    labels = {name: attrs01[:, attr_indices(list(attrs))].clone() for name, attrs in label_sets.items()}
    subset = {
        "images": images,
        "image_ids": [index.names[r] for r in kept_rows],
        "attrs": attrs01,
        "attr_names": list(CELEBA_ATTRS),
        "labels": labels,
        "label_names": {name: list(attrs) for name, attrs in label_sets.items()},
    }
    return subset, skipped
