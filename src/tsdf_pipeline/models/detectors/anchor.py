"""Common machinery of the single-shot anchor detectors (S3FD, DSFD, RetinaFace)."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field

import torch
from torch import Tensor

from tsdf_pipeline.models.detectors.base import Detector, DetectorOutput, RawDetections
from tsdf_pipeline.models.detectors.priors import decode_boxes, mean_subtracted_input, ssd_priors


@dataclass
class HeadOutputs:
    """One network pass on a preprocessed input.

    ``loc`` ``[N,P,4]`` box offsets; ``logits`` ``[N,P,2]`` (background, face); ``feature_sizes`` the
    ``(h, w)`` of each head level (prior order); ``features`` the three levels the poisoning reads;
    ``extras`` detector-specific maps.
    """

    loc: Tensor
    logits: Tensor
    feature_sizes: list[tuple[int, int]]
    features: list[Tensor]
    extras: dict[str, Tensor] = field(default_factory=dict)


class AnchorDetector(Detector):
    """A detector whose heads predict SSD offsets and 2-class logits for square priors.

    Subclasses set ``steps`` / ``min_sizes`` (per level; several sizes = several priors per cell),
    ``bgr_input`` (channel order of the 0..255 mean-subtracted network input) and implement ``heads``.
    """

    steps: tuple[int, ...]
    min_sizes: tuple[tuple[int, ...], ...]
    bgr_input: bool

    def preprocess(self, x: Tensor) -> Tensor:
        """``[N,3,H,W]`` RGB in ``[-1,1]`` -> 0..255 minus the mean, in B,G,R order (mean 104,117,123) when
        ``bgr_input`` else R,G,B (mean 123,117,104)."""
        return mean_subtracted_input(x, bgr=self.bgr_input)

    @abstractmethod
    def heads(self, net_input: Tensor) -> HeadOutputs:
        """Run the network on a preprocessed input ``[N,3,H,W]``."""

    def priors(self, image_size: tuple[int, int], feature_sizes: list[tuple[int, int]],
               device: torch.device | None = None) -> Tensor:
        """Priors ``[P,4]`` (cx, cy, w, h) normalised by the image size, in head order."""
        return ssd_priors(image_size, feature_sizes, self.steps, self.min_sizes, device=device)

    def forward(self, x: Tensor) -> DetectorOutput:
        return self.decode(self.heads(self.preprocess(x)), (x.shape[-2], x.shape[-1]))

    def decode(self, out: HeadOutputs, image_size: tuple[int, int]) -> DetectorOutput:
        """Head outputs -> face probabilities (softmax) and xyxy pixel boxes for an image of ``(H, W)``."""
        height, width = image_size
        priors = self.priors(image_size, out.feature_sizes, device=out.loc.device)
        scale = torch.tensor([width, height, width, height], dtype=out.loc.dtype, device=out.loc.device)
        boxes = decode_boxes(out.loc, priors) * scale
        scores = torch.softmax(out.logits, dim=-1)[..., 1]
        raw = RawDetections(scores=scores, boxes=boxes, logits=out.logits)
        return DetectorOutput(raw=raw, features=out.features, extras=out.extras)

    def raw(self, x: Tensor) -> RawDetections:
        return self.forward(x).raw
