"""The face-detector interface that TSDF stage 2 (detector poisoning) works against.

Every detector takes images ``x`` of shape ``[N,3,H,W]``, RGB, values in ``[-1,1]`` (the project's image
tensor, possibly with a perturbation added and clamped) and exposes:

* ``preprocess(x)``: the differentiable network input (each detector documents channel order and mean);
* ``raw(x)``: differentiable per-prior face probabilities and decoded boxes, before any threshold or NMS;
* ``features(x)``: the three feature levels the poisoning loss reads;
* ``detect(x)``: thresholded, NMS-filtered detections (no gradient), what an attacker's data preparation sees.

Detectors are fixed, pretrained networks: ``train()`` keeps them in eval mode (BatchNorm on running
statistics) so that an optimisation loop calling ``.train()`` on a container cannot change their outputs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import nms


@dataclass
class RawDetections:
    """Differentiable detector outputs before thresholding and NMS.

    ``scores``: ``[N,P]`` face probability per prior/candidate in ``[0,1]``;
    ``boxes``: ``[N,P,4]`` decoded ``(x1,y1,x2,y2)`` in pixels of the input image;
    ``logits``: ``[N,P,2]`` (background, face) logits, or ``None`` when the detector has none.
    """

    scores: Tensor
    boxes: Tensor
    logits: Tensor | None


@dataclass
class Detections:
    """Per-image detections after score threshold and NMS (no gradient).

    ``boxes``: ``N`` tensors ``[K,4]`` ``(x1,y1,x2,y2)`` in pixels; ``scores``: ``N`` tensors ``[K]``,
    sorted by decreasing score.
    """

    boxes: list[Tensor]
    scores: list[Tensor]


@dataclass
class DetectorOutput:
    """Everything stage 2 reads from one forward pass (all differentiable).

    ``raw``: as ``Detector.raw``; ``features``: as ``Detector.features``; ``extras``: detector-specific maps
    (S3FD: ``'conv3_3_conf'`` ``[N,4,H/4,W/4]``, its raw small-anchor classifier output).
    """

    raw: RawDetections
    features: list[Tensor]
    extras: dict[str, Tensor]


class Detector(nn.Module, ABC):
    """Base class of the face detectors; subclasses set ``name`` and implement the methods below.

    ``forward(x)`` returns a ``DetectorOutput`` computed in one pass (cheaper than ``raw`` + ``features``).
    """

    name: str = "detector"

    def train(self, mode: bool = True) -> Detector:
        """Detectors stay in eval mode whatever ``mode`` says (they are fixed, pretrained networks)."""
        return super().train(False)

    @abstractmethod
    def preprocess(self, x: Tensor) -> Tensor:
        """``[N,3,H,W]`` RGB in ``[-1,1]`` -> the network input (differentiable)."""

    @abstractmethod
    def raw(self, x: Tensor) -> RawDetections:
        """Per-prior face probabilities and pixel boxes for ``x`` ``[N,3,H,W]`` in ``[-1,1]`` (differentiable)."""

    @abstractmethod
    def features(self, x: Tensor) -> list[Tensor]:
        """The three feature maps (fine to coarse) that the poisoning loss reads (differentiable)."""

    @abstractmethod
    def forward(self, x: Tensor) -> DetectorOutput:
        """``raw``, ``features`` and extras of ``x`` ``[N,3,H,W]`` in ``[-1,1]`` in one pass."""

    # Candidates kept (by score) before NMS; ``None`` = ``top_k`` (S3FD's release ranks only ``top_k``).
    pre_nms_top_k: int | None = 5000

    @torch.no_grad()
    def detect(self, x: Tensor, score_threshold: float = 0.5, nms_threshold: float = 0.3,
               top_k: int = 750) -> Detections:
        """Boxes with face probability ``> score_threshold`` after greedy IoU NMS, at most ``top_k`` per image."""
        return self.postprocess(self.raw(x), score_threshold, nms_threshold, top_k)

    def postprocess(self, raw: RawDetections, score_threshold: float = 0.5, nms_threshold: float = 0.3,
                    top_k: int = 750) -> Detections:
        """``detect``'s threshold + NMS step on already computed raw outputs (no gradient)."""
        pre = top_k if self.pre_nms_top_k is None else self.pre_nms_top_k
        return select_detections(raw.scores, raw.boxes, score_threshold, nms_threshold, top_k, pre_nms_top_k=pre)


def select_detections(scores: Tensor, boxes: Tensor, score_threshold: float, nms_threshold: float,
                      top_k: int, *, pre_nms_top_k: int = 5000) -> Detections:
    """Threshold + NMS per image.

    ``scores`` ``[N,P]``, ``boxes`` ``[N,P,4]`` xyxy. Keeps ``score > score_threshold``, takes the
    ``pre_nms_top_k`` best candidates, runs greedy NMS suppressing IoU ``> nms_threshold`` and returns at most
    ``top_k`` boxes per image, best first.
    """
    out_boxes: list[Tensor] = []
    out_scores: list[Tensor] = []
    for img_scores, img_boxes in zip(scores.detach(), boxes.detach(), strict=True):
        keep = img_scores > score_threshold
        cand_scores, cand_boxes = img_scores[keep], img_boxes[keep]
        order = cand_scores.argsort(descending=True)[:pre_nms_top_k]
        cand_scores, cand_boxes = cand_scores[order], cand_boxes[order]
        kept = nms(cand_boxes.float(), cand_scores.float(), nms_threshold)[:top_k]
        out_boxes.append(cand_boxes[kept])
        out_scores.append(cand_scores[kept])
    return Detections(boxes=out_boxes, scores=out_scores)
