"""The project's versioned Kedro dataset for torch objects."""

from __future__ import annotations

import pickle

import pytest
import torch
from kedro.io import DatasetError
from kedro.io.core import Version, generate_timestamp

from tsdf_pipeline.datasets import TorchDataset


class _Evil:
    """Stands for any object whose unpickling would run code."""


def test_versioned_save_load_and_pinned_version(tmp_path):
    path = str(tmp_path / "obj.pt")
    v1, v2 = "2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z"
    TorchDataset(filepath=path, version=Version(None, v1)).save({"w": torch.ones(1, 3, 4, 4), "ids": ["a"]})
    TorchDataset(filepath=path, version=Version(None, v2)).save({"w": torch.zeros(1, 3, 4, 4), "ids": ["b"]})
    latest = TorchDataset(filepath=path, version=Version(None, None)).load()
    assert latest["ids"] == ["b"] and latest["w"].sum() == 0
    pinned = TorchDataset(filepath=path, version=Version(v1, None)).load()
    assert pinned["ids"] == ["a"] and pinned["w"].sum() == 48
    assert (tmp_path / "obj.pt" / v1 / "obj.pt").is_file()
    assert not list(tmp_path.rglob("*.tmp"))


def test_refuses_files_that_need_unpickling(tmp_path):
    version = generate_timestamp()
    target = tmp_path / "x.pt" / version / "x.pt"
    target.parent.mkdir(parents=True)
    with target.open("wb") as f:
        pickle.dump({"payload": _Evil()}, f)  # a plain pickle of an arbitrary object
    with pytest.raises(DatasetError, match="weights-only torch file"):
        TorchDataset(filepath=str(tmp_path / "x.pt"), version=Version(None, None)).load()
