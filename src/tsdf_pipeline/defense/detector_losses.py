"""Loss terms of TSDF stage 2 (detector poisoning), TSDF_METHOD.md §1.4 (the release's ``face_poison_integration``).

Everything here is plain tensor math on detector outputs; ``poisoning`` runs the detectors and the optimiser.
Images are ``[N,3,S,S]`` in [-1,1]; the poison ``δ`` lives where the interruption perturbation ``W0`` is weak.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from tsdf_pipeline.models.detectors import Detections

# The release's constants (TSDF_METHOD.md §1.4).
RELEASE_IMAGE_SIZE = 256
RELEASE_FEATURE_SIZE = 64          # fused feature side at 256 px
BOX_HALF_WIDTH = 0.001             # collapsed box: 0.002 wide around each box centre (normalised coords)
EMPHASIS_BOXES = 2.0               # target scale where |F_clean| > per-sample mean |F_clean|, image has boxes
EMPHASIS_NO_BOXES = 4.0            # same, image without boxes
SUPPRESS_WEIGHT = 2.0              # weight of mean|F_protected| for images without boxes
BASE_BOXES = -0.1                  # constant of L_output when some clean image has boxes
BASE_NO_BOXES = -1.0               # ... and when none has


def intensity_mask(w0: Tensor, beta: float, tau: float) -> Tensor:
    """Intensity separation ``M_d = exp(-β|W0|)·1[|W0| < τ]`` (eq. 15), same shape as ``w0``, values in [0,1]."""
    magnitude = w0.abs()
    return torch.exp(-beta * magnitude) * (magnitude < tau).to(w0.dtype)


def fused_feature_size(image_size: int) -> int:
    """Side of the fused feature maps: 64 at 256 px, scaled linearly with the image side (at least 1)."""
    return max(1, round(RELEASE_FEATURE_SIZE * image_size / RELEASE_IMAGE_SIZE))


def kaiming_projection(channels_in: int, channels_out: int, generator: torch.Generator,
                       device: torch.device | str = "cpu") -> Tensor:
    """A 1x1 conv weight ``[out,in,1,1]`` drawn like ``kaiming_uniform_(a=0)``: ``U(±sqrt(6/in))``."""
    bound = math.sqrt(6.0 / channels_in)
    weight = torch.rand(channels_out, channels_in, 1, 1, generator=generator, device=device)
    return weight * (2.0 * bound) - bound


def project_and_resize(feat: Tensor, weight: Tensor | None, size: int) -> Tensor:
    """``[N,C,h,w]`` -> 1x1 projection by ``weight`` ``[C',C,1,1]`` (if given) and bilinear resize to
    ``[N,C',size,size]`` (``align_corners=False``), in fp32.

    Both maps are linear, per pixel and per channel respectively, so they commute; the cheaper order is used
    (resize first when it shrinks the map).
    """
    feat = feat.float()
    if weight is None:
        return F.interpolate(feat, size=(size, size), mode="bilinear", align_corners=False)
    if feat.shape[-2] * feat.shape[-1] > size * size:
        feat = F.interpolate(feat, size=(size, size), mode="bilinear", align_corners=False)
        return F.conv2d(feat, weight)
    return F.interpolate(F.conv2d(feat, weight), size=(size, size), mode="bilinear", align_corners=False)


def channel_scale(clean_feat: Tensor) -> Tensor:
    """Per-sample, per-channel RMS ``[N,C,1,1]`` of a clean feature map (the "normalized" fusion's divisor)."""
    return clean_feat.float().square().mean(dim=(2, 3), keepdim=True).sqrt() + 1e-6


def feature_inversion_terms(protected: Sequence[Tensor], clean: Sequence[Tensor], has_boxes: Tensor, *,
                            nu_boxes: float, nu_no_boxes: float, level_weights: Sequence[float],
                            last_level_only: bool, generator: torch.Generator) -> dict[str, Tensor]:
    """L_feat (eq. 12, as the release codes it): drive each fused level towards its negated clean value.

    ``protected``/``clean``: fused features per level ``[N,C,s,s]``; ``has_boxes``: ``[N]`` bool (clean image
    has detections). Per level ``i``: target ``T = -F_clean + ν·N(0,1)`` (ν = ``nu_boxes`` / ``nu_no_boxes``),
    scaled by 2 (4 without boxes) where ``|F_clean|`` exceeds its per-sample mean; term
    ``w_i·MSE(F_protected, T)`` (``feature/level{i}``) plus ``2·mean|F_protected|`` over images without boxes
    (``feature/suppress{i}``). ``feature``: the sum over all levels, or only the last level with
    ``last_level_only`` (the release's loss sits after its level loop). All 0-dim fp32 tensors.
    """
    if len(protected) != len(level_weights) or len(clean) != len(level_weights):
        raise ValueError(f"feature levels: {len(protected)} protected / {len(clean)} clean maps for "
                         f"{len(level_weights)} level weights")
    no_boxes = (~has_boxes).float().view(-1, 1, 1, 1)
    nu = nu_boxes + (nu_no_boxes - nu_boxes) * no_boxes
    emphasis = EMPHASIS_BOXES + (EMPHASIS_NO_BOXES - EMPHASIS_BOXES) * no_boxes
    terms: dict[str, Tensor] = {}
    for i, (adv, ref) in enumerate(zip(protected, clean, strict=True)):
        noise = torch.randn(adv.shape, generator=generator, device=adv.device, dtype=adv.dtype)
        target = -ref + nu * noise
        important = ref.abs() > ref.abs().mean(dim=(1, 2, 3), keepdim=True)
        target = torch.where(important, target * emphasis, target)
        terms[f"feature/level{i}"] = level_weights[i] * F.mse_loss(adv, target)
        suppress = adv.abs().mean(dim=(1, 2, 3)) * no_boxes.flatten()
        terms[f"feature/suppress{i}"] = SUPPRESS_WEIGHT * suppress.mean()
    counted = [len(level_weights) - 1] if last_level_only else range(len(level_weights))
    terms["feature"] = sum(terms[f"feature/level{i}"] + terms[f"feature/suppress{i}"] for i in counted)
    return terms


def prior_selection(clean_scores: Tensor, threshold: float, top_k: int) -> Tensor:
    """Priors whose clean face score is ``> threshold``, plus each image's ``top_k`` best: ``[N,P]`` bool.

    The ``top_k`` floor keeps the score/box terms alive on images the detector finds no face in.
    """
    selected = clean_scores > threshold
    k = min(top_k, clean_scores.shape[1])
    if k > 0:
        selected = selected.scatter(1, clean_scores.topk(k, dim=1).indices, True)
    return selected


def _collapse_l1(boxes: Tensor) -> Tensor:
    """Per-box L1 (mean over the 4 coordinates) to the ``2·BOX_HALF_WIDTH``-wide box at its own centre."""
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    target = torch.cat([centre - BOX_HALF_WIDTH, centre + BOX_HALF_WIDTH], dim=-1)
    return (boxes - target).abs().mean(dim=-1)


def _normalised(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    height, width = image_size
    scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=boxes.device)
    return boxes.float() / scale


def output_suppression_terms(scores: Tensor, boxes: Tensor, selected: Tensor,
                             image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """L_output's score and box parts on raw, pre-NMS outputs (differentiable).

    ``scores`` ``[N,P]`` face probabilities, ``boxes`` ``[N,P,4]`` xyxy pixels, ``selected`` ``[N,P]`` bool.
    Returns ``(MSE(scores, 0), L1(boxes, collapsed boxes))`` over the selected priors, boxes in coordinates
    normalised by the image ``(H, W)``; 0 when nothing is selected.
    """
    weight = selected.float()
    count = weight.sum().clamp_min(1.0)
    score_mse = (scores.float().square() * weight).sum() / count
    box_l1 = (_collapse_l1(_normalised(boxes, image_size)) * weight).sum() / count
    return score_mse, box_l1


def detached_output_terms(detections: Detections, image_size: tuple[int, int],
                          device: torch.device) -> tuple[Tensor, Tensor]:
    """The release's score/box parts: the same formulas on thresholded, NMS-filtered detections (no gradient)."""
    scores = torch.cat([s.float().reshape(-1) for s in detections.scores]).to(device)
    boxes = torch.cat([b.float().reshape(-1, 4) for b in detections.boxes]).to(device)
    count = max(scores.numel(), 1)
    return scores.square().sum() / count, _collapse_l1(_normalised(boxes, image_size)).sum() / count


def small_anchor_term(conv3_3_conf: Tensor) -> Tensor:
    """S3FD conv3_3 term ``mean(max(bg logits[0:3]) - face logit[3])`` on ``[N,4,h,w]`` (release sign:
    minimising it raises the face logit of the 16-px anchors, creating small false faces)."""
    conf = conv3_3_conf.float()
    return (conf[:, 0:3].amax(dim=1) - conf[:, 3]).mean()


def output_base(has_boxes: Tensor) -> Tensor:
    """The release's constant of L_output: -0.1 when some clean image has boxes, else -1 (0-dim, no sync)."""
    return torch.where(has_boxes.any(), BASE_BOXES, BASE_NO_BOXES).float()
