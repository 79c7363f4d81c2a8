"""Detection-degradation evaluation with a stand-in detector whose box follows the image brightness."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from tsdf_pipeline.metrics.evaluate_detection import detection_examples, evaluate_detection
from tsdf_pipeline.metrics.image_quality import quantize_8bit
from tsdf_pipeline.models.detectors.base import Detections

SIZE = 32
N = 3


class ShiftingDetector:
    """One 8x8 box per image at ``x1 = 16 * (mean(x) + 1)``, score ``score``; records the thresholds it got.

    A brighter image moves the box to the right: a +0.25 shift moves it by 4 px (IoU 1/3).
    """

    def __init__(self, score: float = 0.9) -> None:
        self.score = score
        self.thresholds: list[float] = []
        self.calls = 0

    def detect(self, x: Tensor, score_threshold: float = 0.5) -> Detections:
        self.thresholds.append(score_threshold)
        self.calls += 1
        x1 = 16 * (x.flatten(1).mean(dim=1) + 1)
        boxes = [torch.stack([a, torch.tensor(4.0), a + 8, torch.tensor(12.0)])[None] for a in x1]
        scores = [torch.tensor([self.score]) for _ in x1]
        return Detections(boxes=boxes, scores=scores)


@pytest.fixture()
def images() -> Tensor:
    rng = torch.Generator().manual_seed(0)
    return quantize_8bit((torch.rand(N, 3, SIZE, SIZE, generator=rng) - 0.5) * 0.2)


def _by_pert(rows: list[dict]) -> dict[str, dict]:
    return {r["perturbation"]: r for r in rows}


def test_clean_sanity_and_moving_boxes(images):
    det = ShiftingDetector()
    perts = {
        "clean": None,
        "small": torch.full((1, 3, SIZE, SIZE), 0.01),  # box moves 0.16 px: still matched
        "shift": torch.full((1, 3, SIZE, SIZE), 0.25),  # box moves 4 px: IoU 1/3 < 0.7
    }
    rows = evaluate_detection({"shift_det": det}, images, perts, batch_size=2, detect_threshold=0.4)
    assert [r["perturbation"] for r in rows] == ["clean", "small", "shift"]
    rows = _by_pert(rows)
    clean = rows["clean"]
    assert clean["detector"] == "shift_det" and clean["n_images"] == N
    assert clean["precision"] == clean["recall"] == clean["f1"] == clean["duq"] == 1.0
    assert clean["confidence_change"] == 0 and clean["box_change_pct"] == 0
    assert rows["small"]["recall"] == 1.0 and rows["small"]["duq"] == 1.0
    shift = rows["shift"]
    assert shift["precision"] == shift["recall"] == shift["f1"] == 0.0
    assert shift["duq"] == -1.0  # 0 TP, 1 false positive, 1 original box
    assert shift["boxes_before"] == shift["boxes_after"] == 1 and shift["detection_rate_after"] == 1
    assert set(det.thresholds) == {0.4}
    # 2 batches x (1 clean + 2 protected) calls: the clean control reuses the clean detections.
    assert det.calls == 2 * 3


def test_min_score_filters_both_sides(images):
    rows = evaluate_detection({"weak": ShiftingDetector(score=0.6)}, images,
                              {"clean": None, "shift": torch.full((1, 3, SIZE, SIZE), 0.25)},
                              batch_size=N, min_score=0.7)
    shift = _by_pert(rows)["shift"]
    assert shift["boxes_before"] == 0 and shift["boxes_after"] == 0
    assert shift["precision"] == shift["recall"] == 1.0 and shift["duq"] == 0.0
    assert math.isnan(shift["box_change_pct"]) and shift["box_change_undefined"]


def test_per_image_perturbation_and_clamping(images):
    """Per-image w: only image 1 is shifted; a huge w is clamped to [-1,1] before detection."""
    w = torch.zeros(N, 3, SIZE, SIZE)
    w[1] = 0.25
    rows = _by_pert(evaluate_detection({"d": ShiftingDetector()}, images, {"w": w, "big": w * 100},
                                       batch_size=2))
    assert rows["w"]["recall"] == pytest.approx(2 / 3)
    assert rows["big"]["recall"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"perturbations\['bad'\]"):
        evaluate_detection({"d": ShiftingDetector()}, images, {"bad": torch.zeros(2, 3, SIZE, SIZE)},
                           batch_size=2)


def test_detection_examples_shape(images):
    perts = {"clean": None, "shift": torch.full((1, 3, SIZE, SIZE), 0.25)}
    grid = detection_examples(ShiftingDetector(), images, perts, n=2)
    assert grid.shape == (3, 2 * (SIZE + 2) + 2, 2 * (SIZE + 2) + 2)
    assert grid.min() >= 0 and grid.max() <= 1
    clean_cell = grid[:, 2:2 + SIZE, 2:2 + SIZE]
    shift_cell = grid[:, 2:2 + SIZE, 2 + SIZE + 2:2 + 2 * SIZE + 2]
    red = (shift_cell[0] > 0.9) & (shift_cell[1] < 0.1)
    assert red.any() and not ((clean_cell[0] > 0.9) & (clean_cell[1] < 0.1)).any()
    green = (clean_cell[1] > 0.45) & (clean_cell[0] < 0.1) & (clean_cell[2] < 0.1)
    assert green.any()
