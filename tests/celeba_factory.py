"""Builds miniature CelebA folders (official layout) for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tsdf_pipeline.data.attributes import CELEBA_ATTRS


def make_celeba(root: Path, n: int = 12, *, partition: bool = True, seed: int = 0) -> tuple[Path, np.ndarray]:
    """Write ``n`` random 178x218 JPEGs, ``list_attr_celeba.txt`` and (optionally) the partition file.

    Returns ``(root, attrs [n,40] in {-1,1})``. Partition: first half train, then one valid, rest test.
    """
    rng = np.random.default_rng(seed)
    (root / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    attrs = rng.choice(np.array([-1, 1], dtype=np.int8), size=(n, 40))
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    for name in names:
        pixels = rng.integers(0, 256, size=(218, 178, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "img_align_celeba" / name, quality=90)
    lines = [str(n), " ".join(CELEBA_ATTRS)]
    lines += [name + " " + " ".join(f"{v:2d}" for v in row) for name, row in zip(names, attrs, strict=True)]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    if partition:
        codes = [0] * (n // 2) + [1] + [2] * (n - n // 2 - 1)
        (root / "list_eval_partition.txt").write_text("".join(f"{a} {c}\n" for a, c in zip(names, codes, strict=True)))
    return root, attrs
