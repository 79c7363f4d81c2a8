"""Face-detection degradation metrics: IoU, greedy matching, per-image P/R/DUQ and the dataset aggregate."""

from __future__ import annotations

import math

import pytest
import torch

from tsdf_pipeline.metrics import (
    ImageDetection,
    aggregate_detection,
    box_iou,
    filter_boxes,
    greedy_match,
    image_detection,
)


def _boxes(*rows: tuple[float, float, float, float], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype).view(-1, 4)


def test_box_iou_known_values() -> None:
    a = _boxes((0, 0, 10, 10), (0, 0, 0, 0))
    b = _boxes((0, 0, 10, 10), (0, 0, 10, 7), (5, 0, 15, 10), (20, 20, 30, 30), (0, 0, 0, 0))
    iou = box_iou(a, b)
    assert iou.shape == (2, 5)
    torch.testing.assert_close(iou[0], torch.tensor([1.0, 0.7, 50 / 150, 0.0, 0.0]))
    assert iou[1].tolist() == [0.0] * 5  # zero-area box: IoU 0, never NaN


def test_filter_boxes_is_strict() -> None:
    boxes = _boxes((0, 0, 1, 1), (0, 0, 2, 2), (0, 0, 3, 3))
    kept_boxes, kept_scores = filter_boxes(boxes, torch.tensor([0.7, 0.71, 0.2]))
    assert kept_scores.tolist() == pytest.approx([0.71])
    assert kept_boxes.tolist() == [[0.0, 0.0, 2.0, 2.0]]


def test_filter_boxes_rejects_mismatched_scores() -> None:
    with pytest.raises(ValueError, match="scores"):
        filter_boxes(_boxes((0, 0, 1, 1)), torch.tensor([0.9, 0.8]))


def test_greedy_match_perfect_and_empty() -> None:
    faces = _boxes((0, 0, 10, 10), (50, 50, 70, 80), (100, 0, 120, 20))
    shuffled = faces[[2, 0, 1]] + 0.1
    assert greedy_match(faces, shuffled) == 3
    assert greedy_match(faces, _boxes()) == 0
    assert greedy_match(_boxes(), faces) == 0
    assert greedy_match(_boxes(), _boxes()) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_greedy_match_iou_threshold_is_inclusive(dtype: torch.dtype) -> None:
    orig = _boxes((0, 0, 10, 10), dtype=dtype)
    assert greedy_match(orig, _boxes((0, 0, 10, 7), dtype=dtype)) == 1  # IoU exactly 0.7
    assert greedy_match(orig, _boxes((0, 0, 10, 6.9), dtype=dtype)) == 0  # IoU 0.69


def test_greedy_match_is_by_descending_iou_not_by_original_order() -> None:
    orig = _boxes((0, 0, 10, 10), (0.6, 0, 10.6, 10))  # A, B
    prot = _boxes((-1.5, 0, 8.5, 10), (0.5, 0, 10.5, 10))  # P, Q
    iou = box_iou(orig, prot)
    # A-P 0.739, A-Q 0.905, B-P 0.653 (< 0.7), B-Q 0.980: walking the originals in order (the release) lets A
    # take Q and leaves B unmatched (TP 1); descending IoU matches B-Q first, then A-P (TP 2).
    assert iou[0, 1] > iou[0, 0] >= 0.7 > iou[1, 0]
    assert iou[1, 1] > iou[0, 1]
    assert greedy_match(orig, prot) == 2


def test_image_detection_perfect_match() -> None:
    boxes = _boxes((0, 0, 10, 10), (20, 20, 40, 40))
    r = image_detection(boxes, torch.tensor([0.9, 0.8]), boxes.clone(), torch.tensor([0.95, 0.85]))
    assert (r.n_orig, r.n_prot, r.tp) == (2, 2, 2)
    assert (r.precision, r.recall, r.duq) == (1.0, 1.0, 1.0)
    assert r.mean_score_orig == pytest.approx(0.85)
    assert r.mean_score_prot == pytest.approx(0.9)


def test_image_detection_miss_and_false_positives() -> None:
    orig = _boxes((0, 0, 10, 10), (20, 20, 40, 40))
    prot = _boxes((0, 0, 10, 10), (60, 60, 64, 64), (70, 70, 74, 74), (80, 80, 84, 84))
    prot_scores = torch.tensor([0.9, 0.8, 0.75, 0.5])  # the last one is filtered out
    r = image_detection(orig, torch.tensor([0.9, 0.9]), prot, prot_scores)
    assert (r.n_orig, r.n_prot, r.tp) == (2, 3, 1)
    assert r.precision == pytest.approx(1 / 3)
    assert r.recall == pytest.approx(1 / 2)
    assert r.duq == pytest.approx((1 - 2) / 2)


def test_image_detection_all_missed() -> None:
    r = image_detection(_boxes((0, 0, 10, 10)), torch.tensor([0.9]), _boxes(), torch.tensor([]))
    assert (r.precision, r.recall, r.duq) == (1.0, 0.0, 0.0)
    assert math.isnan(r.mean_score_prot)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ((0, 0, 0), (1.0, 1.0, 0.0)),
        ((0, 2, 0), (0.0, 1.0, -1.0)),
        ((3, 0, 0), (1.0, 0.0, 0.0)),
        ((2, 4, 2), (0.5, 1.0, 0.0)),
    ],
)
def test_image_detection_empty_set_conventions(
    counts: tuple[int, int, int], expected: tuple[float, float, float]
) -> None:
    n_orig, n_prot, tp = counts
    r = ImageDetection(
        n_orig=n_orig, n_prot=n_prot, tp=tp, mean_score_orig=math.nan, mean_score_prot=math.nan
    )
    assert (r.precision, r.recall, r.duq) == pytest.approx(expected)


def test_aggregate_detection_hand_made() -> None:
    per_image = [
        ImageDetection(n_orig=1, n_prot=1, tp=1, mean_score_orig=0.9, mean_score_prot=0.8),  # P1 R1 DUQ1
        ImageDetection(n_orig=1, n_prot=3, tp=1, mean_score_orig=0.9, mean_score_prot=0.75),  # P1/3 R1 DUQ-1
        ImageDetection(n_orig=2, n_prot=0, tp=0, mean_score_orig=0.8, mean_score_prot=math.nan),  # P1 R0 DUQ0
        ImageDetection(
            n_orig=0, n_prot=0, tp=0, mean_score_orig=math.nan, mean_score_prot=math.nan
        ),  # P1 R1 DUQ0
    ]
    out = aggregate_detection(per_image)
    p = (1 + 1 / 3 + 1 + 1) / 4
    r = (1 + 1 + 0 + 1) / 4
    assert out["precision"] == pytest.approx(p)
    assert out["recall"] == pytest.approx(r)
    assert out["f1"] == pytest.approx(2 * p * r / (p + r))
    assert out["duq"] == pytest.approx(0.0)
    assert out["confidence_before"] == pytest.approx((0.9 + 0.9 + 0.8) / 4)
    assert out["confidence_after"] == pytest.approx((0.8 + 0.75) / 4)
    assert out["confidence_change"] == pytest.approx((0.8 + 0.75 - 2.6) / 4)
    assert out["boxes_before"] == pytest.approx(1.0)
    assert out["boxes_after"] == pytest.approx(1.0)
    assert out["box_change_pct"] == pytest.approx(0.0)
    assert out["box_change_undefined"] is False
    assert out["detection_rate_before"] == pytest.approx(0.75)
    assert out["detection_rate_after"] == pytest.approx(0.5)
    assert out["n_images"] == 4


def test_aggregate_detection_box_change_and_undefined_baseline() -> None:
    grown = aggregate_detection(
        [ImageDetection(n_orig=2, n_prot=5, tp=2, mean_score_orig=0.9, mean_score_prot=0.8)] * 2
    )
    assert grown["box_change_pct"] == pytest.approx(150.0)
    no_faces = aggregate_detection(
        [ImageDetection(n_orig=0, n_prot=2, tp=0, mean_score_orig=math.nan, mean_score_prot=0.8)]
    )
    assert math.isnan(no_faces["box_change_pct"])
    assert no_faces["box_change_undefined"] is True
    assert no_faces["duq"] == -1.0


def test_aggregate_detection_rejects_empty_input() -> None:
    with pytest.raises(ValueError, match="per_image"):
        aggregate_detection([])
