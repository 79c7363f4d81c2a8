"""TSDF stage 2 (poisoning): the stage-1 loop plus a face-detector poisoning step per batch (TSDF_METHOD.md §1.4).

Per batch, starting from the stage-1 result ``w1`` (TSDF_METHOD.md §5 decisions 1-4, 10):

1. the stage-1 feature-ensemble steps (``InterruptionConfig.inner_steps``) on the universal ``w``;
2. detector poisoning: ``W0 = w``, mask ``M_d = exp(-β|W0|)·1[|W0| < τ]``, ``δ = N(0,1)·0.001·M_d`` (per image,
   or one shared ``δ`` with ``universal_delta``), ``steps`` Adam steps (cosine LR, grad-norm clip) on
   ``L_feat + L_output`` of ``clamp(x + W0 + δ, -1, 1)``, after each step ``δ <- clamp(δ ⊙ M_d, ±0.4)``.
   Multiplying by ``M_d`` every step compounds (pixels near τ shrink by ~18 % per step): the release's
   behaviour, kept. ``δ_best`` = the ``δ`` of the step with the lowest ``L_output``; ``w <- clip(W0 + δ_best, ±ε)``;
3. the stage-1 end-to-end step on that (per-image) ``w``, then ``w <- mean over the batch`` (the release's
   ``up.mean(0)``).

Losses (see ``detector_losses``): ``L_feat`` drives fused detector features (per level: each detector's map
through a 1x1 projection to 128 channels, bilinearly resized to 64² at 256 px, concatenated over detectors)
towards ``-F_clean + ν·noise``; ``L_output`` = base constant + ``12·MSE(scores, 0) + 12·L1(boxes, collapsed)``
+ ``20·`` the S3FD small-anchor term (only when an S3FD takes part; MTCNN has none).

Corrected mode (default): the level losses are summed over all levels; the projections are fixed, drawn once
per (detector, level) from the seed (``fusion="normalized"`` instead divides each map by the clean map's
per-channel RMS, no projection); the score/box terms use the raw pre-NMS outputs of the priors whose clean
score is ``> output_score_threshold`` plus each image's ``output_top_k`` best clean priors, so they carry
gradient; "clean detections exist" (ν 0.2 vs 0.5, emphasis 2 vs 4, the suppression term, the base constant)
is decided per image from the detectors' ``detect`` on the clean image; ``δ_best`` is the ``δ`` that was
evaluated at the best step.

``release_compat``: only the last level's loss counts; projections are re-drawn on every call (clean and
protected features pass through different random maps); the score/box terms are computed from thresholded,
NMS-filtered detections of the protected image and carry no gradient; "boxes exist" is decided per step from
those detections (always true with RetinaFace, whose raw output the release reads); ``δ_best`` is the ``δ``
after the best step's update (the release's off-by-one). RetinaFace contributes no gradient when it is built
with ``release_compat=True`` (required here: the detectors' mode must match the config's).

Not reproduced: the release replaces a non-finite gradient by random noise (a host sync per step; a
non-finite gradient is left to show in the losses instead). Momentum: with per-image ``δ`` the end-to-end
step's momentum is per image as in the release, kept per batch slot ``[batch_size,3,H,W]`` across batches.

All random draws of stage 2 (the stage-1 DI plan and its victim shuffle included) come from
``PoisoningConfig.seed``; the embedded ``InterruptionConfig``'s ``seed``, ``epochs`` and ``device`` are not
used. Best-step bookkeeping stays on the device; the history reaches the host at the loop's sync points.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from tsdf_pipeline.defense.detector_losses import (
    channel_scale,
    detached_output_terms,
    feature_inversion_terms,
    fused_feature_size,
    intensity_mask,
    kaiming_projection,
    output_base,
    output_suppression_terms,
    prior_selection,
    project_and_resize,
    small_anchor_term,
)
from tsdf_pipeline.defense.interruption import (
    RUNTIME_FIELDS as INTERRUPTION_RUNTIME_FIELDS,
)
from tsdf_pipeline.defense.interruption import (
    InterruptionConfig,
    _Stage1,
)
from tsdf_pipeline.defense.loop import Callback, LoopSettings, run_loop
from tsdf_pipeline.defense.state import derive_seed, make_generator
from tsdf_pipeline.defense.victim_ops import (
    VictimLike,
    autocast,
    check_inputs,
    cudnn_autotune,
    prepare_victims,
)
from tsdf_pipeline.devices import resolve_device
from tsdf_pipeline.models.detectors import Detector, DetectorOutput, RetinaFaceMobileNet

# Settings that do not change the result; a checkpoint may be resumed with other values of these.
RUNTIME_FIELDS = ("epochs", "device")
# Fields of the embedded stage-1 config that stage 2 ignores or that do not change its result.
UNUSED_INTERRUPTION_FIELDS = (*INTERRUPTION_RUNTIME_FIELDS, "seed")
FEATURE_LEVELS = 3


@dataclass
class PoisoningConfig:
    """Hyperparameters of TSDF stage 2 (defaults: the release, 256 px, [-1,1] pixel units).

    ``detectors``: names (keys of the dict given to ``run_poisoning``) taking part, in order; ``None`` = all.
    ``interruption``: the stage-1 settings the joint loop runs with (ε, step size, inner steps, batch size, ...;
    a dict is accepted). ``epochs``/``seed``/``device`` of stage 2 are these fields, not the embedded ones.
    """

    beta: float = 5.0
    tau: float = 0.04
    steps: int = 50
    lr: float = 0.02
    grad_clip: float = 1.0
    delta_bound: float = 0.4
    init_scale: float = 0.001
    nu_boxes: float = 0.2
    nu_noboxes: float = 0.5
    level_weights: tuple[float, ...] = (5.0, 3.0, 4.0)
    output_weight: float = 12.0
    s3fd_small_anchor_weight: float = 20.0
    fusion: Literal["projection", "normalized"] = "projection"
    projection_channels: int = 128
    feature_size: int | None = None          # None: 64 at 256 px, scaled with the image side
    output_score_threshold: float = 0.5
    output_top_k: int = 16
    release_compat: bool = False
    universal_delta: bool = False
    detectors: list[str] | None = None
    epochs: int = 30
    seed: int = 0
    device: str = "auto"
    interruption: InterruptionConfig = field(default_factory=InterruptionConfig)

    def __post_init__(self) -> None:
        if isinstance(self.interruption, dict):
            self.interruption = InterruptionConfig(**self.interruption)
        if not isinstance(self.interruption, InterruptionConfig):
            raise ValueError("PoisoningConfig.interruption: expected an InterruptionConfig or a dict of its fields, "
                             f"got {type(self.interruption).__name__}")
        self.level_weights = tuple(float(v) for v in self.level_weights)
        if len(self.level_weights) != FEATURE_LEVELS:
            raise ValueError(f"PoisoningConfig.level_weights: expected {FEATURE_LEVELS} values, "
                             f"got {list(self.level_weights)}")
        if self.fusion not in ("projection", "normalized"):
            raise ValueError(f"PoisoningConfig.fusion: expected 'projection' or 'normalized', got {self.fusion!r}")
        if self.detectors is not None:
            self.detectors = list(self.detectors)
        if self.steps < 1 or self.lr <= 0 or self.tau <= 0 or self.epochs < 0 or self.projection_channels < 1:
            raise ValueError("PoisoningConfig: steps, lr, tau and projection_channels must be positive, epochs >= 0")


@dataclass
class PoisoningResult:
    """The stage-2 universal perturbation ``w2`` ``[1,3,H,W]`` (CPU, fp32, ``‖w2‖∞ ≤ ε``) and the history."""

    w: Tensor
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class CleanReference:
    """δ-independent detector quantities of one clean batch.

    ``features``: fused clean features per level ``[N,C,s,s]``; ``selected``: per detector, the priors the
    score/box terms act on ``[N,P]`` bool; ``has_boxes``: ``[N]`` bool, some detector finds a face in the clean
    image; ``scales``: per (detector, level) the clean per-channel RMS ``[N,C,1,1]`` (``fusion="normalized"``).
    """

    features: list[Tensor]
    selected: dict[str, Tensor]
    has_boxes: Tensor
    scales: dict[tuple[str, int], Tensor] | None


@dataclass
class PoisonOutcome:
    """Result of one batch's poisoning step.

    ``w``: ``clip(W0 + δ_best, ±ε)`` ``[B,3,H,W]`` (``[1,...]`` with ``universal_delta``); ``delta``: ``δ_best``;
    ``mask``: ``M_d`` ``[1,3,H,W]``; ``best_step``: 0-dim long; ``output_losses``/``feature_losses``: ``[steps]``
    (the loss of the ``δ`` evaluated at each step); ``has_boxes``: ``[B]`` bool; ``deltas``: with ``trace``, the
    ``δ_best`` candidate of every step ``[steps, *delta.shape]``.
    """

    w: Tensor
    delta: Tensor
    mask: Tensor
    best_step: Tensor
    output_losses: Tensor
    feature_losses: Tensor
    has_boxes: Tensor
    deltas: Tensor | None = None

    def record(self) -> dict[str, Tensor]:
        """History entry (0-dim device tensors)."""
        return {
            "poison/feature_first": self.feature_losses[0],
            "poison/feature_last": self.feature_losses[-1],
            "poison/output_first": self.output_losses[0],
            "poison/output_last": self.output_losses[-1],
            "poison/output_best": self.output_losses.min(),
            "poison/best_step": self.best_step.float(),
            "poison/clean_with_boxes": self.has_boxes.float().mean(),
            "poison/mask_mean": self.mask.mean(),
            "poison/delta_abs_mean": self.delta.abs().mean(),
        }


class DetectorPoisoner:
    """Stage-2 objective and optimiser against fixed detectors (on ``device``, frozen, eval mode)."""

    def __init__(self, detectors: dict[str, Detector], config: PoisoningConfig, image_size: int,
                 device: torch.device) -> None:
        if not detectors:
            raise ValueError("poisoning: no detectors given")
        self.detectors = detectors
        self.config = config
        self.device = device
        self.amp = config.interruption.amp
        self.size = config.feature_size or fused_feature_size(image_size)
        self._projections: dict[tuple[str, int], Tensor] = {}
        self._has_retinaface = any(isinstance(d, RetinaFaceMobileNet) for d in detectors.values())

    def _run(self, x: Tensor) -> dict[str, DetectorOutput]:
        with autocast(self.device, self.amp):
            outputs = {name: det(x) for name, det in self.detectors.items()}
        for name, out in outputs.items():
            if len(out.features) != FEATURE_LEVELS:
                raise ValueError(f"detector {name!r}: expected {FEATURE_LEVELS} feature levels, "
                                 f"got {len(out.features)}")
        return outputs

    def _projection(self, name: str, level: int, channels: int, generator: torch.Generator) -> Tensor | None:
        cfg = self.config
        if cfg.fusion == "normalized":
            return None
        if cfg.release_compat:
            return kaiming_projection(channels, cfg.projection_channels, generator, self.device)
        key = (name, level)
        if key not in self._projections:
            gen = make_generator(cfg.seed, "tsdf-stage2-projection", name, level)
            self._projections[key] = kaiming_projection(channels, cfg.projection_channels, gen).to(self.device)
        return self._projections[key]

    def _fuse(self, outputs: dict[str, DetectorOutput], generator: torch.Generator,
              scales: dict[tuple[str, int], Tensor] | None) -> list[Tensor]:
        """Per level: every detector's map projected/normalised, resized to ``size²``, concatenated."""
        levels = []
        for level in range(FEATURE_LEVELS):
            parts = []
            for name, out in outputs.items():
                feat = out.features[level]
                if scales is not None:
                    feat = feat.float() / scales[(name, level)]
                weight = self._projection(name, level, feat.shape[1], generator)
                parts.append(project_and_resize(feat, weight, self.size))
            levels.append(torch.cat(parts, dim=1))
        return levels

    @torch.no_grad()
    def clean_reference(self, x: Tensor, generator: torch.Generator) -> CleanReference:
        """Clean features, prior selections and face presence of ``x`` ``[N,3,H,W]`` in [-1,1]."""
        cfg = self.config
        outputs = self._run(x)
        scales = None
        if cfg.fusion == "normalized":
            scales = {(name, i): channel_scale(f) for name, out in outputs.items() for i, f in enumerate(out.features)}
        features = self._fuse(outputs, generator, scales)
        selected = {name: prior_selection(out.raw.scores.float(), cfg.output_score_threshold, cfg.output_top_k)
                    for name, out in outputs.items()}
        found = [False] * x.shape[0]
        for det in self.detectors.values():
            found = [f or b.shape[0] > 0 for f, b in zip(found, det.detect(x).boxes, strict=True)]
        return CleanReference(features, selected, torch.tensor(found, device=x.device), scales)

    def losses(self, x_protected: Tensor, ref: CleanReference, generator: torch.Generator) -> dict[str, Tensor]:
        """All loss terms of a protected batch ``[N,3,H,W]`` in [-1,1] (0-dim fp32 tensors).

        ``feature/level{i}``, ``feature/suppress{i}``, ``feature`` (see ``feature_inversion_terms``);
        ``output/base``, ``output/score/{det}``, ``output/box/{det}`` (weighted by ``output_weight``),
        ``output/small_anchor/{det}`` (S3FD only, weighted), ``output`` (their sum).
        """
        cfg = self.config
        outputs = self._run(x_protected)
        image_size = (x_protected.shape[-2], x_protected.shape[-1])
        if cfg.release_compat:
            detections = {name: self.detectors[name].postprocess(out.raw) for name, out in outputs.items()}
            found = self._has_retinaface or any(b.shape[0] > 0 for d in detections.values() for b in d.boxes)
            has_boxes = torch.full((x_protected.shape[0],), found, dtype=torch.bool, device=x_protected.device)
        else:
            has_boxes = ref.has_boxes
        terms = feature_inversion_terms(
            self._fuse(outputs, generator, ref.scales), ref.features, has_boxes,
            nu_boxes=cfg.nu_boxes, nu_no_boxes=cfg.nu_noboxes, level_weights=cfg.level_weights,
            last_level_only=cfg.release_compat, generator=generator,
        )
        output = output_base(has_boxes)
        terms["output/base"] = output
        for name, out in outputs.items():
            if cfg.release_compat:
                score, box = detached_output_terms(detections[name], image_size, x_protected.device)
            else:
                score, box = output_suppression_terms(out.raw.scores, out.raw.boxes, ref.selected[name], image_size)
            terms[f"output/score/{name}"] = cfg.output_weight * score
            terms[f"output/box/{name}"] = cfg.output_weight * box
            output = output + terms[f"output/score/{name}"] + terms[f"output/box/{name}"]
            conf = out.extras.get("conv3_3_conf")
            if conf is not None:
                terms[f"output/small_anchor/{name}"] = cfg.s3fd_small_anchor_weight * small_anchor_term(conf)
                output = output + terms[f"output/small_anchor/{name}"]
        terms["output"] = output
        return terms

    def poison(self, x: Tensor, w0: Tensor, generator: torch.Generator, *, trace: bool = False) -> PoisonOutcome:
        """One batch's poisoning step for images ``x`` ``[B,3,H,W]`` and the current ``W0`` ``[1,3,H,W]``.

        ``generator`` (on the run's device) supplies δ's initial noise, the target noise and (release mode)
        the projections, in a fixed order. ``trace`` keeps every step's ``δ_best`` candidate (tests).
        """
        cfg = self.config
        epsilon = cfg.interruption.epsilon
        w0 = w0.detach()
        ref = self.clean_reference(x, generator)
        mask = intensity_mask(w0, cfg.beta, cfg.tau)
        shape = (1 if cfg.universal_delta else x.shape[0], *x.shape[1:])
        noise = torch.randn(shape, generator=generator, device=x.device)
        delta = (noise * cfg.init_scale * mask).requires_grad_(True)
        optimizer = torch.optim.Adam([delta], lr=cfg.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.steps)
        best_loss = torch.tensor(float("inf"), device=x.device)
        best_delta = delta.detach().clone()
        best_step = torch.zeros((), dtype=torch.long, device=x.device)
        output_losses, feature_losses, candidates = [], [], []
        for step in range(cfg.steps):
            terms = self.losses((x + w0 + delta).clamp(-1.0, 1.0), ref, generator)
            optimizer.zero_grad(set_to_none=True)
            total = terms["feature"] + terms["output"]
            if total.requires_grad:  # False only when no detector passes gradient (release mode, RetinaFace alone)
                total.backward()
            torch.nn.utils.clip_grad_norm_([delta], cfg.grad_clip)
            evaluated = delta.detach().clone()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                delta.mul_(mask).clamp_(-cfg.delta_bound, cfg.delta_bound)
            candidate = delta.detach().clone() if cfg.release_compat else evaluated
            output = terms["output"].detach()
            better = output < best_loss
            best_loss = torch.where(better, output, best_loss)
            best_delta = torch.where(better, candidate, best_delta)
            best_step = torch.where(better, step, best_step)
            output_losses.append(output)
            feature_losses.append(terms["feature"].detach())
            if trace:
                candidates.append(candidate)
        w = (w0 + best_delta).clamp(-1.0, 1.0).clamp(-epsilon, epsilon)
        return PoisonOutcome(
            w=w, delta=best_delta, mask=mask, best_step=best_step, output_losses=torch.stack(output_losses),
            feature_losses=torch.stack(feature_losses), has_boxes=ref.has_boxes,
            deltas=torch.stack(candidates) if trace else None,
        )


class _Stage2:
    """The stage-1 per-batch step with the poisoning step between the feature steps and the end-to-end step."""

    def __init__(self, stage1: _Stage1, poisoner: DetectorPoisoner, config: PoisoningConfig) -> None:
        self.stage1 = stage1
        self.poisoner = poisoner
        self.config = config

    def start_epoch(self, epoch: int) -> None:
        self.stage1.start_epoch(epoch)

    def step(self, epoch: int, batch: int, x: Tensor, attrs40: Tensor,
             state: dict[str, Tensor]) -> list[dict[str, Tensor]]:
        s1 = self.stage1
        clean = s1.clean_pass(batch, x, attrs40)
        draws = s1.tables(batch)
        w, records = s1.feature_steps(x, state["w"], clean, draws)

        generator = make_generator(self.config.seed, "tsdf-stage2-poison", epoch, batch, device=x.device)
        outcome = self.poisoner.poison(x, w, generator)
        records.append(outcome.record())

        # w is per sample now ([B,3,H,W]); the momentum buffer keeps one slot per batch position, as the release.
        n = outcome.w.shape[0]
        w, direction, ema, weights, record = s1.end_to_end_step(
            x, outcome.w, clean, draws, momentum=state["momentum"][:n], ema=state["ema"], weights=state["weights"])
        momentum = state["momentum"].clone()
        momentum[:n] = direction
        state.update(w=w.mean(0, keepdim=True), momentum=momentum, ema=ema, weights=weights)
        return [*records, record]


def _select_detectors(detectors: dict[str, Detector], config: PoisoningConfig) -> dict[str, Detector]:
    names = list(detectors) if config.detectors is None else config.detectors
    missing = [n for n in names if n not in detectors]
    if missing or not names:
        raise ValueError(f"poisoning: detectors {missing or names} requested by PoisoningConfig.detectors; "
                         f"given: {sorted(detectors)}")
    selected = {n: detectors[n] for n in names}
    wrong = [n for n, d in selected.items()
             if getattr(d, "release_compat", config.release_compat) != config.release_compat]
    if wrong:
        raise ValueError(f"poisoning: detectors {wrong} were built with release_compat="
                         f"{not config.release_compat}, but PoisoningConfig.release_compat={config.release_compat}")
    return selected


def _fingerprint(config: PoisoningConfig, victims: list[str], detectors: list[str], image_shape: torch.Size,
                 w1: Tensor) -> dict[str, Any]:
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in RUNTIME_FIELDS}
    fields["interruption"] = {k: v for k, v in fields["interruption"].items() if k not in UNUSED_INTERRUPTION_FIELDS}
    fields["detectors"] = detectors
    digest = hashlib.blake2b(w1.detach().float().cpu().contiguous().numpy().tobytes(), digest_size=16)
    return {**fields, "victims": victims, "images": [int(s) for s in image_shape], "w1": digest.hexdigest()}


def run_poisoning(victims: list[VictimLike], detectors: dict[str, Detector], images: Tensor, attrs40: Tensor,  # noqa: PLR0917
                  w1: Tensor, config: PoisoningConfig, *, checkpoint_path: str | Path | None = None,
                  callback: Callback | None = None, resume: bool = True) -> PoisoningResult:
    """Optimise TSDF's stage-2 perturbation ``w2`` from the stage-1 result ``w1``.

    ``victims``: the stage-1 ensemble; ``detectors``: name -> detector (the ``config.detectors`` ones take part;
    moved to the run's device in place, frozen, eval); ``images`` ``[N,3,S,S]`` in [-1,1] in fixed batches of
    ``config.interruption.batch_size``; ``attrs40`` ``[N,40]`` in {0,1}; ``w1`` ``[1,3,S,S]`` with
    ``‖w1‖∞ ≤ ε``. Checkpoint, resume and ``callback(step, metrics)`` work as in stage 1 (each batch adds the
    stage-1 records and one ``poison/*`` record). Deterministic for a given seed on the CPU.
    """
    check_inputs("poisoning", victims, images, attrs40)
    icfg = config.interruption
    size = images.shape[-1]
    if w1.shape != (1, 3, size, size):
        raise ValueError(f"poisoning: w1 must be [1,3,{size},{size}] (the stage-1 result), got {tuple(w1.shape)}")
    if w1.abs().max().item() > icfg.epsilon + 1e-6:
        raise ValueError(f"poisoning: w1 exceeds ε={icfg.epsilon} (max |w1| = {w1.abs().max().item():.4g}); "
                         "pass the stage-1 result for the same interruption.epsilon")
    selected = _select_detectors(detectors, config)
    device = resolve_device(config.device)
    # Stage 2 calls stage 1's steps around the poisoning step, which is neither graph-captured nor compiled
    # ahead of time.
    stage1_config = dataclasses.replace(icfg, epochs=config.epochs, device=str(device), cuda_graphs=False,
                                        aot_cache_dir=None, seed=derive_seed(config.seed, "tsdf-stage2-plan"))
    prepared = prepare_victims(victims, device, channels_last=icfg.channels_last, compile=icfg.compile)
    for det in selected.values():
        det.requires_grad_(False)
        det.to(device).eval()
    images = images.to(device=device, dtype=torch.float32)
    attrs40 = attrs40.to(device=device, dtype=torch.float32)
    m = len(victims)
    slots = 1 if config.universal_delta else icfg.batch_size
    state = {
        "w": w1.detach().float().to(device),
        "momentum": torch.zeros(slots, 3, size, size, device=device),
        "ema": torch.zeros(m, device=device),
        "weights": torch.full((m,), 1.0 / m, device=device),
    }
    stage = _Stage2(_Stage1(prepared, stage1_config, images, attrs40),
                    DetectorPoisoner(selected, config, size, device), config)
    with cudnn_autotune(device):  # as stage 1 (fixed shapes: the timing is paid in the first batch)
        final = run_loop(
            images, attrs40, state,
            settings=LoopSettings("poisoning", config.epochs, icfg.batch_size, icfg.checkpoint_every,
                                  icfg.progress),
            step=stage.step, start_epoch=stage.start_epoch,
            fingerprint=_fingerprint(config, [v.name for v in victims], list(selected), images.shape, w1),
            checkpoint_path=checkpoint_path, resume=resume, callback=callback,
        )
    return PoisoningResult(w=final.tensors["w"].detach().float().cpu(), history=final.history)
