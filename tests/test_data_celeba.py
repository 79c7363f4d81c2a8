"""CelebA reader, splits, preprocessing and every malformed-input case."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from tests.celeba_factory import make_celeba
from tsdf_pipeline.data.attributes import ATTGAN_ATTRS, STARGAN_ATTRS, attr_indices
from tsdf_pipeline.data.celeba import CelebAFormatError, read_index
from tsdf_pipeline.data.images import celeba_transform
from tsdf_pipeline.data.splits import split_rows, take_first
from tsdf_pipeline.data.subsets import build_subset
from tsdf_pipeline.pipelines.data_ingestion.nodes import attribute_table

LABELS = {"stargan": list(STARGAN_ATTRS), "attgan": list(ATTGAN_ATTRS)}


def _rewrite_line(path, lineno, new):
    lines = path.read_text().splitlines()
    lines[lineno - 1] = new
    path.write_text("\n".join(lines) + "\n")


def test_reads_index_and_labels_stay_aligned(tmp_path):
    root, attrs = make_celeba(tmp_path / "celeba", n=10)
    index = read_index(root)
    assert index.names[0] == "000001.jpg" and len(index) == 10
    np.testing.assert_array_equal(index.attrs, attrs)
    rows = split_rows(index, "test")
    subset, skipped = build_subset(index, rows, image_size=32, crop_size=170, label_sets=LABELS, progress=False)
    assert not skipped
    assert subset["images"].shape == (len(rows), 3, 32, 32)
    assert subset["images"].min() >= -1 and subset["images"].max() <= 1
    # every image keeps its own row's labels (the release shifts StarGAN labels by two rows: not replicated)
    for k, r in enumerate(rows):
        assert subset["image_ids"][k] == index.names[r]
        want = torch.from_numpy((attrs[r] > 0).astype(np.float32))
        torch.testing.assert_close(subset["attrs"][k], want)
        torch.testing.assert_close(subset["labels"]["stargan"][k], want[attr_indices(list(STARGAN_ATTRS))])
        torch.testing.assert_close(subset["labels"]["attgan"][k], want[attr_indices(list(ATTGAN_ATTRS))])


def test_transform_matches_cmua_composition(tmp_path):
    root, _ = make_celeba(tmp_path / "c", n=2)
    with Image.open(root / "img_align_celeba" / "000001.jpg") as im:
        x = celeba_transform(256, 170)(im.convert("RGB"))
        # CenterCrop(170) -> Resize(256) -> [-1,1], computed independently with PIL
        w, h = im.size
        left, top = int(round((w - 170) / 2.0)), int(round((h - 170) / 2.0))
        ref = im.convert("RGB").crop((left, top, left + 170, top + 170)).resize((256, 256), Image.BILINEAR)
    ref_t = torch.from_numpy(np.asarray(ref, dtype=np.float32) / 255.0).permute(2, 0, 1) * 2 - 1
    assert x.shape == (3, 256, 256)
    assert (x - ref_t).abs().max() < 2 / 255 + 1e-6


def test_cmua_split_convention_without_partition_file(tmp_path):
    root, _ = make_celeba(tmp_path / "c", n=6, partition=False)
    index = read_index(root)
    assert index.partition is None
    np.testing.assert_array_equal(split_rows(index, "train"), np.arange(6))
    with pytest.raises(CelebAFormatError, match=r"CMUA row convention.*182637"):
        split_rows(index, "test")


def test_take_first_warns_with_both_counts(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        rows = take_first(np.arange(5), 8, "evaluation subset")
    assert rows.size == 5
    assert "asked for 8 images, the data holds 5" in caplog.text


def test_attribute_table_has_all_40_attributes(tmp_path):
    root, attrs = make_celeba(tmp_path / "c", n=4)
    table = attribute_table(read_index(root))
    assert list(table.columns[:2]) == ["image_id", "partition"] and table.shape == (4, 42)
    np.testing.assert_array_equal(table.iloc[:, 2:].to_numpy(), attrs)


@pytest.mark.parametrize("missing", ["root", "img_align_celeba", "list_attr_celeba.txt"])
def test_missing_layout_names_path_and_expected_layout(tmp_path, missing):
    root, _ = make_celeba(tmp_path / "c", n=2)
    target = {"root": tmp_path / "nowhere", "img_align_celeba": root / "img_align_celeba",
              "list_attr_celeba.txt": root / "list_attr_celeba.txt"}[missing]
    if missing == "img_align_celeba":
        for f in target.iterdir():
            f.unlink()
        target.rmdir()
    elif missing == "list_attr_celeba.txt":
        target.unlink()
    with pytest.raises(CelebAFormatError) as err:
        read_index(target if missing == "root" else root)
    assert str(target) in str(err.value) and "expected the official CelebA layout" in str(err.value)


@pytest.mark.parametrize(
    ("lineno", "content", "message"),
    [
        (1, "ten", r"list_attr_celeba.txt:1: expected the image count"),
        (1, "7", r":1: header says 7 images but the file lists 4"),
        (2, "Smiling Young", r":2: expected the 40 CelebA attribute names"),
        (4, "000002.jpg " + " ".join(["1"] * 39), r":4: expected an image name and 40 values, got 40 columns"),
        (5, "000003.jpg " + " ".join(["1"] * 39 + ["0"]), r":5: attribute Young of 000003.jpg is 0"),
        (3, "000001.jpg " + " ".join(["x"] * 40), r":3: attribute values must be 1 or -1"),
    ],
)
def test_malformed_attribute_file_names_file_and_line(tmp_path, lineno, content, message):
    root, _ = make_celeba(tmp_path / "c", n=4)
    _rewrite_line(root / "list_attr_celeba.txt", lineno, content)
    with pytest.raises(CelebAFormatError, match=message):
        read_index(root)


def test_partition_file_misaligned_is_an_error(tmp_path):
    root, _ = make_celeba(tmp_path / "c", n=4)
    _rewrite_line(root / "list_eval_partition.txt", 2, "000003.jpg 0")
    with pytest.raises(CelebAFormatError, match=r"list_eval_partition.txt:2: image 000003.jpg does not match row 2"):
        read_index(root)
    _rewrite_line(root / "list_eval_partition.txt", 2, "000002.jpg 5")
    with pytest.raises(CelebAFormatError, match=r"list_eval_partition.txt:2: expected"):
        read_index(root)


@pytest.mark.parametrize("defect", ["missing", "undecodable"])
def test_bad_image_raises_or_is_skipped_and_listed(tmp_path, defect):
    root, attrs = make_celeba(tmp_path / "c", n=8)
    bad = root / "img_align_celeba" / "000006.jpg"
    if defect == "missing":
        bad.unlink()
    else:
        bad.write_bytes(b"not a jpeg")
    index = read_index(root)
    rows = split_rows(index, "test")  # rows 5..7 -> 000006..000008
    with pytest.raises(CelebAFormatError, match=r"000006.jpg: image .*(missing|cannot be decoded)"):
        build_subset(index, rows, image_size=16, crop_size=170, label_sets=LABELS, progress=False)
    subset, skipped = build_subset(index, rows, image_size=16, crop_size=170, label_sets=LABELS,
                                   on_bad_image="skip", progress=False)
    assert [s["id"] for s in skipped] == ["000006.jpg"]
    assert subset["image_ids"] == ["000007.jpg", "000008.jpg"]
    # labels stay with their images after the skip
    torch.testing.assert_close(subset["attrs"][0], torch.from_numpy((attrs[6] > 0).astype(np.float32)))
