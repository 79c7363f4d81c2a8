"""Per-image PGD of Ruiz et al. 2020 ("Disrupting Deepfakes", ``LinfPGDAttack.perturb``), MODELS.md §8.

For each image: ``X = x + U(-ε, ε)`` (random start), then ``iterations`` times
``X_adv = X + a·sign(∂L/∂X)``, ``X = clip(x + clip(X_adv - x, -ε, ε), -1, 1)`` with ``L = MSE(G(X, t), G(x, t))``
(ascent: away from the clean edit). The perturbation returned is ``X - x``: in the ε-ball, and ``x + δ`` in [-1,1].

With one victim and one target this is the vanilla per-class attack. With several targets and/or victims it is
the "joint class-transferable" variant (``perturb_joint_class``) extended to the ensemble: each iteration
ascends the sum of the per-target MSEs over all victims' targets. Unlike the upstream function, which compares
every target's edit with a single ``y``, each target is compared with its own clean edit.

The ensemble extension is ours (upstream attacks one model), and so is how it weighs the victims
(``victim_weighting``): ``"sum"`` steps along the sign of the plain sum of the victims' input gradients, which
the victim with the largest gradient dominates (on the demo victims StarGAN's is about 20x AttGAN's);
``"balanced"`` (default) first divides each victim's gradient, per image, by its mean absolute value, so every
victim counts equally in the sign. With a single victim both are the upstream step (a sign is blind to a
positive scale).

``mode="per_target"`` is Ruiz's ``perturb`` itself: one δ per image, victim and target, each ascending that
target's MSE alone (a white-box attack per model and class: an upper bound, not one image a user can publish).

Images are processed ``batch_size`` at a time; every loss term is a mean over the batch, so each image's
gradient sign, hence its update, is the same as when attacked alone (the victims normalise per instance or
with fixed running statistics, so images do not interact).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from tsdf_pipeline.defense.state import make_generator
from tsdf_pipeline.defense.victim_ops import (
    AttackSettings,
    PreparedVictim,
    VictimLike,
    autocast,
    check_inputs,
    cudnn_autotune,
    prepare_victims,
)
from tsdf_pipeline.devices import resolve_device
from tsdf_pipeline.models.victims import EditTargets


@dataclass
class PGDConfig(AttackSettings):
    """Ruiz et al. PGD settings (defaults: ``LinfPGDAttack``: ε 0.05, k 10, a 0.01, random start)."""

    epsilon: float = 0.05
    iterations: int = 10
    step_size: float = 0.01
    random_start: bool = True
    batch_size: int = 16
    victim_weighting: Literal["sum", "balanced"] = "balanced"
    mode: Literal["joint", "per_target"] = "joint"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.victim_weighting not in ("sum", "balanced"):
            raise ValueError(f"PGDConfig.victim_weighting: expected 'sum' or 'balanced', "
                             f"got {self.victim_weighting!r}")
        if self.mode not in ("joint", "per_target"):
            raise ValueError(f"PGDConfig.mode: expected 'joint' or 'per_target', got {self.mode!r}")


def pgd_update(x_nat: Tensor, x: Tensor, grad: Tensor, step_size: float, epsilon: float) -> Tensor:
    """One PGD ascent step: ``clip(x_nat + clip(x + a·sign(g) - x_nat, ±ε), -1, 1)``."""
    eta = (x + step_size * grad.sign() - x_nat).clamp(-epsilon, epsilon)
    return (x_nat + eta).clamp(-1.0, 1.0)


def joint_gradient(victims: list[PreparedVictim], targets: list, clean: list[Tensor], x: Tensor, *,
                   amp: bool, victim_weighting: str) -> Tensor:
    """``Σ_victims g_v`` with ``g_v = ∂/∂x Σ_targets MSE(G_v(x, t), clean)`` (each MSE a mean per image, summed
    over the batch), ``[N,3,H,W]`` fp32; ``victim_weighting="balanced"`` divides each ``g_v`` per image by its
    mean ``|g_v|`` first. One backward per victim: the same as one backward of the sum, with one victim's graph
    alive at a time (all targets of the four official victims at 256 px do not fit together)."""
    x_var = x.detach().requires_grad_(True)
    grad = torch.zeros_like(x_var)
    for v, t, y in zip(victims, targets, clean, strict=True):
        with autocast(x.device, amp):
            loss = F.mse_loss(v.edit(x_var, t).float(), y, reduction="none").flatten(1).mean(1).sum()
        g = torch.autograd.grad(loss, x_var)[0]
        if victim_weighting == "balanced":  # per image, so images in a batch still do not interact
            g = g / g.abs().flatten(1).mean(1).clamp_min(torch.finfo(g.dtype).tiny).view(-1, 1, 1, 1)
        grad += g
    return grad


def _ascend(victims: list[PreparedVictim], targets: list, clean: list[Tensor], x: Tensor, *, config: PGDConfig,
            gen: torch.Generator) -> Tensor:
    """``δ`` ``[B,3,H,W]`` (CPU fp32) after ``config.iterations`` PGD steps on the joint loss of ``targets``."""
    x_cur = x
    if config.random_start:
        x_cur = x + config.epsilon * (torch.rand(x.shape, generator=gen, device=x.device) * 2.0 - 1.0)
    for _ in range(config.iterations):
        grad = joint_gradient(victims, targets, clean, x_cur, amp=config.amp, victim_weighting=config.victim_weighting)
        x_cur = pgd_update(x, x_cur, grad, config.step_size, config.epsilon)
    return (x_cur - x).float().cpu()


def run_pgd(victims: list[VictimLike], images: Tensor, attrs40: Tensor, config: PGDConfig
            ) -> Tensor | dict[str, Tensor]:
    """Per-image perturbations (CPU fp32, ``‖δ‖∞ ≤ ε``, ``x + δ`` in [-1,1]) for ``images`` ``[N,3,H,W]``.

    ``mode="joint"``: ``[N,3,H,W]``, one per image. ``mode="per_target"``: ``{victim.name: [T,N,3,H,W]}``, one
    per image and each of the victim's ``config.targets`` (in ``victim.targets`` order).
    """
    check_inputs("pgd", victims, images, attrs40)
    device = resolve_device(config.device)
    prepared = prepare_victims(victims, device, channels_last=config.channels_last, compile=config.compile)
    joint = torch.empty(images.shape, dtype=torch.float32)
    per_target: dict[str, Tensor] = {}
    starts = range(0, images.shape[0], config.batch_size)
    with cudnn_autotune(device):  # as stage 1: methods are compared under the same settings
        for b, start in enumerate(tqdm(starts, desc="pgd", disable=not config.progress)):
            x = images[start:start + config.batch_size].to(device=device, dtype=torch.float32)
            attrs = attrs40[start:start + config.batch_size].to(device=device, dtype=torch.float32)
            rows = slice(start, start + x.shape[0])
            targets = [v.targets(attrs, config.targets) for v in prepared]
            with torch.no_grad(), autocast(device, config.amp):
                clean = [v.edit(x, t).float() for v, t in zip(prepared, targets)]
            if config.mode == "joint":
                gen = make_generator(config.seed, "pgd", b, device=device)
                joint[rows] = _ascend(prepared, targets, clean, x, config=config, gen=gen)
                continue
            for v, t, y in zip(prepared, targets, clean, strict=True):
                out = per_target.setdefault(v.name, torch.empty(len(t.names), *images.shape))
                for i, name in enumerate(t.names):
                    gen = make_generator(config.seed, "pgd", v.name, name, b, device=device)
                    single = EditTargets([name], t.cond[i:i + 1])
                    out[i, rows] = _ascend([v], [single], [y[i:i + 1]], x, config=config, gen=gen)
    return joint if config.mode == "joint" else per_target
