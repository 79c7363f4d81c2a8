"""Face-detection degradation metrics (TSDF ``evaluate_perturbation.py::test_watermark``).

A detector's output on one image is ``boxes [K,4]`` (``x1, y1, x2, y2`` in pixels) and ``scores [K]``. The clean
image's kept boxes are the originals ``O``; the protected image's kept boxes are ``W``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

MIN_SCORE = 0.7
IOU_THRESHOLD = 0.7


def _check_boxes(name: str, boxes: Tensor, scores: Tensor | None = None) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name}: expected boxes of shape [K,4] (x1,y1,x2,y2), got {tuple(boxes.shape)}")
    if scores is not None and scores.shape != (boxes.shape[0],):
        raise ValueError(f"{name}: expected scores of shape [{boxes.shape[0]}], got {tuple(scores.shape)}")


def filter_boxes(boxes: Tensor, scores: Tensor, min_score: float = MIN_SCORE) -> tuple[Tensor, Tensor]:
    """Keep the detections with ``score > min_score`` (strict, as the release); returns ``(boxes, scores)``."""
    _check_boxes("filter_boxes", boxes, scores)
    keep = scores > min_score
    return boxes[keep], scores[keep]


def box_iou(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """Pairwise IoU of ``[K,4]`` and ``[M,4]`` xyxy boxes, ``[K,M]``; a pair with zero union has IoU 0."""
    _check_boxes("boxes_a", boxes_a)
    _check_boxes("boxes_b", boxes_b)
    a = boxes_a[:, None, :]
    b = boxes_b[None, :, :]
    inter_w = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp_min(0)
    inter_h = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp_min(0)
    inter = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / torch.where(union > 0, union, torch.ones_like(union)), 0.0)


def greedy_match(orig_boxes: Tensor, prot_boxes: Tensor, iou_thr: float = IOU_THRESHOLD) -> int:
    """Number of one-to-one matches (TP) between original and protected boxes with ``IoU >= iou_thr``.

    Greedy by descending IoU over all pairs: the pair with the highest IoU is matched first, both boxes are
    removed, and so on (ties: lower original index, then lower protected index). The release instead walks the
    originals in detector order and gives each its best free protected box. The two give the same TP whenever no
    box has two partners at ``IoU >= iou_thr``; that holds when ``iou_thr >= 0.7`` and both box sets went through
    NMS at an IoU threshold below 0.4 (Jaccard distance is a metric, so two partners of one box would overlap
    each other at IoU >= 0.4), e.g. the release's detectors (NMS 0.3).

    Args:
        orig_boxes: ``[K,4]`` kept boxes on the clean image; prot_boxes: ``[M,4]`` on the protected image.
    """
    if orig_boxes.shape[0] == 0 or prot_boxes.shape[0] == 0:
        _check_boxes("orig_boxes", orig_boxes)
        _check_boxes("prot_boxes", prot_boxes)
        return 0
    iou = box_iou(orig_boxes, prot_boxes)
    cand_o, cand_p = torch.nonzero(iou >= iou_thr, as_tuple=True)
    order = torch.sort(iou[cand_o, cand_p], descending=True, stable=True).indices
    used_o: set[int] = set()
    used_p: set[int] = set()
    for i, j in zip(cand_o[order].tolist(), cand_p[order].tolist(), strict=True):
        if i not in used_o and j not in used_p:
            used_o.add(i)
            used_p.add(j)
    return len(used_o)


@dataclass(frozen=True)
class ImageDetection:
    """One detector on one image: kept-box counts, matches and mean kept scores (NaN when no box is kept)."""

    n_orig: int
    n_prot: int
    tp: int
    mean_score_orig: float
    mean_score_prot: float

    @property
    def precision(self) -> float:
        """``TP / |W|``; 1 when the protected image has no box."""
        return self.tp / self.n_prot if self.n_prot else 1.0

    @property
    def recall(self) -> float:
        """``TP / |O|``; 1 when the clean image has no box."""
        return self.tp / self.n_orig if self.n_orig else 1.0

    @property
    def duq(self) -> float:
        """``(TP - (|W| - TP)) / |O|``; 0 if both sets are empty, -1 if only ``O`` is empty. Lower = stronger."""
        if self.n_orig:
            return (self.tp - (self.n_prot - self.tp)) / self.n_orig
        return 0.0 if self.n_prot == 0 else -1.0


def image_detection(
    orig_boxes: Tensor,
    orig_scores: Tensor,
    prot_boxes: Tensor,
    prot_scores: Tensor,
    *,
    min_score: float = MIN_SCORE,
    iou_thr: float = IOU_THRESHOLD,
) -> ImageDetection:
    """Filter both detections with :func:`filter_boxes`, match them with :func:`greedy_match`.

    Args:
        orig_boxes, orig_scores: ``[K,4]``, ``[K]`` on the clean image.
        prot_boxes, prot_scores: ``[M,4]``, ``[M]`` on the protected image.
    """
    o_boxes, o_scores = filter_boxes(orig_boxes, orig_scores, min_score)
    p_boxes, p_scores = filter_boxes(prot_boxes, prot_scores, min_score)
    return ImageDetection(
        n_orig=int(o_boxes.shape[0]),
        n_prot=int(p_boxes.shape[0]),
        tp=greedy_match(o_boxes, p_boxes, iou_thr),
        mean_score_orig=float(o_scores.mean()) if o_scores.numel() else math.nan,
        mean_score_prot=float(p_scores.mean()) if p_scores.numel() else math.nan,
    )


def aggregate_detection(per_image: Sequence[ImageDetection]) -> dict[str, float | bool | int]:
    """Dataset-level detection metrics over ``per_image`` (one entry per image, or per (image, detector) pair).

    - ``precision``, ``recall``, ``duq``: means of the per-image values; ``f1`` from the averaged P and R
      (0 if both are 0).
    - ``confidence_before`` / ``confidence_after``: mean over images of the per-image mean kept score, an image
      without kept boxes contributing 0 (as the release sums scores of images with boxes and divides by all
      images); ``confidence_change = after - before``.
    - ``boxes_before`` / ``boxes_after``: average kept boxes per image; ``box_change_pct =
      (after - before) / before * 100``, NaN with ``box_change_undefined = True`` when ``before`` is 0 (the
      release reports 0 there).
    - ``detection_rate_before`` / ``detection_rate_after``: fraction of images with at least one kept box.
    """
    if not per_image:
        raise ValueError("aggregate_detection: per_image is empty; expected at least one ImageDetection")
    n = len(per_image)
    precision = sum(r.precision for r in per_image) / n
    recall = sum(r.recall for r in per_image) / n
    conf_before = sum(r.mean_score_orig for r in per_image if r.n_orig) / n
    conf_after = sum(r.mean_score_prot for r in per_image if r.n_prot) / n
    boxes_before = sum(r.n_orig for r in per_image) / n
    boxes_after = sum(r.n_prot for r in per_image) / n
    undefined = boxes_before == 0
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0,
        "duq": sum(r.duq for r in per_image) / n,
        "confidence_before": conf_before,
        "confidence_after": conf_after,
        "confidence_change": conf_after - conf_before,
        "boxes_before": boxes_before,
        "boxes_after": boxes_after,
        "box_change_pct": math.nan if undefined else (boxes_after - boxes_before) / boxes_before * 100,
        "box_change_undefined": undefined,
        "detection_rate_before": sum(r.n_orig > 0 for r in per_image) / n,
        "detection_rate_after": sum(r.n_prot > 0 for r in per_image) / n,
        "n_images": n,
    }
