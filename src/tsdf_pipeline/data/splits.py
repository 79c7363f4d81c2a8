"""Train / test rows of a CelebA index: the official partition file, else the CMUA row convention."""

from __future__ import annotations

import logging

import numpy as np

from tsdf_pipeline.data.celeba import CelebAFormatError, CelebAIndex

log = logging.getLogger(__name__)

# CMUA / TSDF split by row of list_attr_celeba.txt when no partition file is used.
CMUA_TRAIN_END = 182_000
CMUA_TEST_START = 182_637
PARTITION_CODES = {"train": 0, "valid": 1, "test": 2}


def split_rows(index: CelebAIndex, split: str) -> np.ndarray:
    """Row indices (file order) of ``split`` in ``{"train", "valid", "test"}``."""
    if split not in PARTITION_CODES:
        raise ValueError(f"split must be one of {sorted(PARTITION_CODES)}, got {split!r}")
    n = len(index)
    if index.partition is not None:
        rows = np.flatnonzero(index.partition == PARTITION_CODES[split])
    elif split == "train":
        rows = np.arange(min(n, CMUA_TRAIN_END))
    elif split == "valid":
        rows = np.arange(min(n, CMUA_TRAIN_END), min(n, CMUA_TEST_START))
    else:
        rows = np.arange(min(n, CMUA_TEST_START), n)
    if rows.size == 0:
        rule = "the partition file" if index.partition is not None else (
            f"the CMUA row convention (train rows [:{CMUA_TRAIN_END}], test rows [{CMUA_TEST_START}:])")
        raise CelebAFormatError(f"{index.root}: split {split!r} is empty under {rule}; {n} images listed")
    return rows


def take_first(rows: np.ndarray, count: int | None, what: str) -> np.ndarray:
    """The first ``count`` rows (all if ``None``); warns with both counts when fewer exist."""
    if count is None:
        return rows
    if count <= 0:
        raise ValueError(f"{what}: count must be positive, got {count}")
    if rows.size < count:
        log.warning("%s: asked for %d images, the data holds %d; using %d", what, count, rows.size, rows.size)
    return rows[:count]
