"""The versioned Kedro dataset of the attacker's photo files (one folder per branch, a manifest)."""

from __future__ import annotations

import json

import pytest
import torch
from kedro.io import DatasetError
from kedro.io.core import Version
from PIL import Image

from tsdf_pipeline.data.attacker import protect
from tsdf_pipeline.datasets import PhotoFolderDataset


def _branch(n: int, shift: float, **options) -> dict:
    images = torch.linspace(-0.9, 0.9, n * 3 * 8 * 8).view(n, 3, 8, 8)
    photos, mask = protect(images, torch.full((1, 3, 8, 8), shift), 0.5, seed=0)
    return {"images": photos, "ids": [f"{i:06d}.jpg" for i in range(n)], "protected": mask,
            "format": "png", "jpeg_quality": None, **options}


def test_versions_round_trip_the_files_and_their_manifest(tmp_path):
    path = str(tmp_path / "attacker_photos")
    v1, v2 = "2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z"
    first = {"clean": _branch(4, 0.0), "tsdf": _branch(4, 0.05)}
    PhotoFolderDataset(filepath=path, version=Version(None, v1)).save(first)
    PhotoFolderDataset(filepath=path, version=Version(None, v2)).save(
        {"clean": _branch(2, 0.0, format="jpeg", jpeg_quality=75)})
    folder = tmp_path / "attacker_photos" / v1 / "attacker_photos"
    assert sorted(p.name for p in (folder / "tsdf").iterdir()) == [f"{i:06d}.png" for i in range(4)]
    assert json.loads((folder / "manifest.json").read_text())["branches"]["tsdf"]["ids"] == first["tsdf"]["ids"]

    pinned = PhotoFolderDataset(filepath=path, version=Version(v1, None)).load()
    for branch in ("clean", "tsdf"):  # PNG of quantised photos: lossless, in order, with their flags
        assert torch.equal(pinned[branch]["images"], first[branch]["images"])
        assert pinned[branch]["ids"] == first[branch]["ids"]
        assert torch.equal(pinned[branch]["protected"], first[branch]["protected"])
    latest = PhotoFolderDataset(filepath=path, version=Version(None, None)).load()
    assert list(latest) == ["clean"] and latest["clean"]["jpeg_quality"] == 75
    assert Image.open(latest["clean"]["paths"][0]).format == "JPEG"
    assert not list(tmp_path.rglob(".*tmp-*"))


def test_a_failed_save_leaves_no_version_and_bad_input_is_named(tmp_path):
    path = str(tmp_path / "photos")
    version = "2026-01-01T00.00.00.000Z"
    with pytest.raises(DatasetError, match="jpeg_quality"):  # the second branch fails: nothing of the first stays
        PhotoFolderDataset(filepath=path, version=Version(None, version)).save(
            {"clean": _branch(2, 0.0), "tsdf": _branch(2, 0.05, format="jpeg")})
    assert not list((tmp_path / "photos").iterdir())  # no version folder, no temporary one
    with pytest.raises(DatasetError, match="branch 'clean' needs .* one protected flag per image"):
        PhotoFolderDataset(filepath=path).save({"clean": {**_branch(2, 0.0), "protected": torch.ones(3).bool()}})

    dataset = PhotoFolderDataset(filepath=path, version=Version(None, version))
    dataset.save({"clean": _branch(2, 0.0)})
    folder = tmp_path / "photos" / version / "photos"
    manifest = json.loads((folder / "manifest.json").read_text())
    loader = PhotoFolderDataset(filepath=path, version=Version(version, None))
    (folder / "clean" / "000001.png").unlink()
    with pytest.raises(DatasetError, match="000001.png: photo file not found"):
        loader.load()
    manifest["branches"]["clean"]["ids"] = ["000000.jpg"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=r"manifest.json: branch 'clean' needs .* lengths \[1, 2\]"):
        loader.load()
    (folder / "manifest.json").write_text("[]")
    with pytest.raises(DatasetError, match="manifest.json: expected JSON with a 'branches' mapping"):
        loader.load()
    (folder / "manifest.json").unlink()
    assert not loader.exists()
    with pytest.raises(DatasetError, match="manifest.json: not found"):
        loader.load()
