"""dlib's HOG + linear-SVM frontal face detector: a black-box detector for transfer checks (never optimised).

It is not differentiable and has no features; it only implements ``detect``. Scores are dlib's SVM margins
(``run(..., adjust_threshold)``), not probabilities: evaluate it with ``min_score`` around 0. Needs the
``dlib-bin`` wheel, imported only when this detector is built.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from tsdf_pipeline.models.detectors.base import Detections


class HOGDetector:
    """``detect(x [N,3,H,W] in [-1,1]) -> Detections`` with dlib's frontal HOG detector."""

    name = "dlib_hog"

    def __init__(self, upsample: int = 1) -> None:
        try:
            import dlib
        except ImportError as exc:  # pragma: no cover - exercised only without the wheel
            raise ImportError("the dlib_hog black-box detector needs the dlib-bin wheel (pip install dlib-bin)") from exc
        self._detector = dlib.get_frontal_face_detector()
        self.upsample = int(upsample)

    def to(self, *args, **kwargs) -> HOGDetector:
        return self  # runs on the CPU whatever the device

    @torch.no_grad()
    def detect(self, x: Tensor, score_threshold: float = 0.0, nms_threshold: float = 0.3,
               top_k: int = 750) -> Detections:
        """Boxes ``[K,4]`` xyxy in input pixels and SVM scores ``[K]`` above ``score_threshold``, per image.

        ``nms_threshold``/``top_k`` exist for interface parity; dlib applies its own overlap suppression.
        """
        images = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        boxes, scores = [], []
        for img in images:
            array = np.ascontiguousarray(img.permute(1, 2, 0).numpy())
            rects, confidences, _ = self._detector.run(array, self.upsample, score_threshold)
            order = np.argsort(confidences)[::-1][:top_k]
            boxes.append(torch.tensor([[rects[i].left(), rects[i].top(), rects[i].right() + 1, rects[i].bottom() + 1]
                                       for i in order], dtype=torch.float32).reshape(-1, 4))
            scores.append(torch.tensor([confidences[i] for i in order], dtype=torch.float32))
        return Detections(boxes=boxes, scores=scores)
