"""Poisoning evaluation: how much protections change face detections (TSDF §2.2, ``test_watermark``).

Every detector runs on the clean images ``x`` and on each published image ``p = quantize_8bit(clamp(x + w,
-1, 1))`` (decision 9); per image the kept clean boxes are matched with the kept protected boxes
(:func:`tsdf_pipeline.metrics.detection.image_detection`) and the matches are aggregated per
(detector, perturbation) with :func:`~tsdf_pipeline.metrics.detection.aggregate_detection`.
A perturbation given as ``None`` means "no protection": the clean detections are compared with themselves
(a sanity row with precision = recall = 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import Tensor

from tsdf_pipeline.metrics.detection import (
    IOU_THRESHOLD,
    MIN_SCORE,
    ImageDetection,
    aggregate_detection,
    filter_boxes,
    image_detection,
)
from tsdf_pipeline.metrics.evaluate_interruption import check_inputs, perturbation_slice
from tsdf_pipeline.metrics.grids import draw_boxes, image_rows
from tsdf_pipeline.metrics.purification import protect
from tsdf_pipeline.models.detectors.base import Detections

DETECT_THRESHOLD = 0.5
CLEAN_COLOR = "green"
PROTECTED_COLOR = "red"


class SupportsDetect(Protocol):
    """Anything with the ``Detector.detect`` signature (``tsdf_pipeline.models.detectors``)."""

    def detect(self, x: Tensor, score_threshold: float = ...) -> Detections:
        """``x`` ``[N,3,H,W]`` in [-1,1] -> per-image boxes ``[K,4]`` xyxy pixels and scores ``[K]``."""
        ...


def _check_perturbations(images: Tensor, perturbations: Mapping[str, Tensor | None]) -> None:
    if not perturbations:
        raise ValueError("perturbations: expected at least one entry, e.g. {'clean': None, 'w': w}")
    for name, w in perturbations.items():
        if w is not None:
            try:
                check_inputs(images, None, w, 1)
            except ValueError as err:
                raise ValueError(f"perturbations[{name!r}]: {err}") from None


def _published(x: Tensor, w: Tensor | None, start: int, stop: int) -> Tensor:
    return x if w is None else protect(x, perturbation_slice(w, start, stop).to(x.device))


@torch.no_grad()
def evaluate_detection(
    detectors: Mapping[str, SupportsDetect],
    images: Tensor,
    perturbations: Mapping[str, Tensor | None],
    *,
    batch_size: int,
    min_score: float = MIN_SCORE,
    iou_thr: float = IOU_THRESHOLD,
    detect_threshold: float = DETECT_THRESHOLD,
    device: torch.device | str | None = None,
) -> list[dict[str, Any]]:
    """Detection-degradation rows, one per (detector, perturbation), detectors outermost.

    Args:
        detectors: name -> detector already on ``device``; called as ``detect(x,
            score_threshold=detect_threshold)``.
        images: ``[N,3,H,W]`` clean images in [-1,1].
        perturbations: name -> ``[1,3,H,W]`` / ``[N,3,H,W]`` perturbation in [-1,1] units, or ``None`` for
            the unprotected control (e.g. ``{"clean": None, "noise": w_noise, "w1": w1, "w2": w2}``).
        batch_size: images per detector call.
        min_score: boxes with score ``> min_score`` count (both sides); iou_thr: match threshold.
        device: where the detectors run; ``None`` = ``images.device``.

    Returns:
        Rows ``{"detector", "perturbation", "min_score", "iou_thr", "detect_threshold",
        **aggregate_detection(...)}``
        (precision, recall, f1, duq, confidence_before/after/change, boxes_before/after, box_change_pct,
        box_change_undefined, detection_rate_before/after, n_images).
    """
    check_inputs(images, None, None, batch_size)
    _check_perturbations(images, perturbations)
    if not detectors:
        raise ValueError("detectors: expected at least one name -> detector entry")
    dev = torch.device(device) if device is not None else images.device
    per_image: dict[tuple[str, str], list[ImageDetection]] = {
        (d, p): [] for d in detectors for p in perturbations
    }
    n = images.shape[0]
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        x = images[start:stop].to(dev)
        published = {p: _published(x, w, start, stop) for p, w in perturbations.items() if w is not None}
        for d_name, detector in detectors.items():
            clean = detector.detect(x, score_threshold=detect_threshold)
            for p_name in perturbations:
                prot = (detector.detect(published[p_name], score_threshold=detect_threshold)
                        if p_name in published else clean)
                for i in range(stop - start):
                    per_image[(d_name, p_name)].append(image_detection(
                        clean.boxes[i].cpu(), clean.scores[i].cpu(), prot.boxes[i].cpu(),
                        prot.scores[i].cpu(), min_score=min_score, iou_thr=iou_thr,
                    ))
    return [
        {"detector": d, "perturbation": p, "min_score": min_score, "iou_thr": iou_thr,
         "detect_threshold": detect_threshold, **aggregate_detection(results)}
        for (d, p), results in per_image.items()
    ]


@torch.no_grad()
def detection_examples(
    detector: SupportsDetect,
    images: Tensor,
    perturbations: Mapping[str, Tensor | None],
    n: int = 4,
    *,
    min_score: float = MIN_SCORE,
    detect_threshold: float = DETECT_THRESHOLD,
    device: torch.device | str | None = None,
) -> Tensor:
    """Detections side by side: one row per image, one column per perturbation (``perturbations`` order).

    Each cell shows the published image of that perturbation (the clean image for ``None``) with the kept
    (``score > min_score``) clean detections in green and the kept detections on the published image in red
    (a ``None`` column shows only the green boxes).

    Returns:
        ``[3, n*(H+2)+2, P*(W+2)+2]`` in [0,1] with ``P = len(perturbations)`` (``n`` capped at N).
    """
    check_inputs(images, None, None, 1)
    _check_perturbations(images, perturbations)
    if n < 1:
        raise ValueError(f"n: expected a positive number of examples, got {n}")
    n = min(n, images.shape[0])
    dev = torch.device(device) if device is not None else images.device
    x = images[:n].to(dev)
    clean = detector.detect(x, score_threshold=detect_threshold)
    clean_kept = [filter_boxes(b.cpu(), s.cpu(), min_score)[0] for b, s in zip(clean.boxes, clean.scores)]
    columns = []
    for w in perturbations.values():
        shown = _published(x, w, 0, n)
        if w is None:
            cells = [draw_boxes(shown[i], [(clean_kept[i], CLEAN_COLOR)]) for i in range(n)]
        else:
            prot = detector.detect(shown, score_threshold=detect_threshold)
            cells = []
            for i in range(n):
                prot_kept = filter_boxes(prot.boxes[i].cpu(), prot.scores[i].cpu(), min_score)[0]
                boxes = [(clean_kept[i], CLEAN_COLOR), (prot_kept, PROTECTED_COLOR)]
                cells.append(draw_boxes(shown[i], boxes))
        columns.append(torch.stack(cells))
    return image_rows(columns)
