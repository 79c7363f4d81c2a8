"""CMUA-Watermark (Huang et al., AAAI 2022): cross-model universal perturbation (MODELS.md §6).

Per batch, victims in the order StarGAN -> AttentionGAN -> HiSD -> AttGAN (by arch; other archs after, in the
given order) and, per victim, each edit target in turn (``targets="all"``), one PGD run of ``iterations``:

    y = G(x, t)                      (HiSD: + 0.002, as the release)
    X = x + U(-ε, ε)                 (HiSD: X = x + up, or x before the first update; no noise)
    repeat: g = ∂MSE(G(X, t), y)/∂X;  X_adv = X + a·sign(g)
            eta = mean_batch(clip(f_arch·(X_adv - x), -ε, ε))          [1,3,H,W]
            up  = eta (very first update) else momentum·up + (1-momentum)·eta
            X   = clip(x + up, -1, 1)

``up`` stays in the ε-ball (a convex combination of clipped terms). ``f_arch`` are the per-model step factors
CMUA tunes with TPE (the paper's tuned values are not published: default 1 each, as ``setting.json``).
Targets run one at a time because ``up`` changes between them (that is the algorithm, not a batching choice).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from tsdf_pipeline.defense.interruption import InterruptionResult
from tsdf_pipeline.defense.loop import Callback, LoopSettings, run_loop
from tsdf_pipeline.defense.state import config_fingerprint, make_generator
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

CMUA_ORDER: tuple[str, ...] = ("stargan", "attentiongan", "hisd", "attgan")
RUNTIME_FIELDS = ("epochs", "device", "channels_last", "compile", "checkpoint_every", "progress")


@dataclass
class CMUAConfig(AttackSettings):
    """CMUA settings (defaults: ``setting.json`` as shipped; [-1,1] pixel units)."""

    epsilon: float = 0.05
    iterations: int = 10
    step_size: float = 0.01
    momentum: float = 0.5
    factors: dict[str, float] = field(default_factory=lambda: {arch: 1.0 for arch in CMUA_ORDER})
    order: tuple[str, ...] = CMUA_ORDER
    hisd_target_offset: float = 0.002
    batch_size: int = 64
    epochs: int = 1
    checkpoint_every: Literal["batch", "epoch"] = "epoch"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"CMUAConfig.momentum: expected a value in [0, 1), got {self.momentum}")
        self.order = tuple(self.order)


def cmua_order(archs: list[str], order: tuple[str, ...]) -> list[int]:
    """Victim indices sorted by ``order`` of their arch (stable; unlisted archs last)."""
    rank = {arch: i for i, arch in enumerate(order)}
    return sorted(range(len(archs)), key=lambda i: rank.get(archs[i], len(order)))


def cmua_update(up: Tensor | None, x_nat: Tensor, x: Tensor, grad: Tensor, *, step_size: float, factor: float,
                epsilon: float, momentum: float) -> tuple[Tensor, Tensor]:
    """One CMUA iteration: returns ``(up', X')`` with ``up'`` ``[1,3,H,W]`` and ``X'`` ``[N,3,H,W]``."""
    x_adv = x + step_size * grad.sign()
    eta = (factor * (x_adv - x_nat)).clamp(-epsilon, epsilon).mean(0, keepdim=True)
    up = eta if up is None else momentum * up + (1.0 - momentum) * eta
    return up, (x_nat + up).clamp(-1.0, 1.0)


class _CMUA:
    def __init__(self, victims: list[PreparedVictim], config: CMUAConfig, device: torch.device) -> None:
        self.victims = victims
        self.config = config
        self.device = device
        self.order = cmua_order([v.arch for v in victims], config.order)

    def step(self, epoch: int, batch: int, x: Tensor, attrs40: Tensor,
             state: dict[str, Tensor]) -> list[dict[str, Tensor]]:
        cfg = self.config
        gen = make_generator(cfg.seed, "cmua", epoch, batch, device=self.device)
        up: Tensor | None = None if (epoch == 0 and batch == 0) else state["w"]
        record: dict[str, Tensor] = {}
        for m in self.order:
            v = self.victims[m]
            factor = float(cfg.factors.get(v.arch, 1.0))
            all_targets = v.targets(attrs40, cfg.targets)
            last_losses = []
            for i, name in enumerate(all_targets.names):
                t = dataclasses.replace(all_targets, names=[name], cond=all_targets.cond[i:i + 1])
                with torch.no_grad(), autocast(self.device, cfg.amp):
                    y = v.edit(x, t).float()
                if v.arch == "hisd":
                    y = y + cfg.hisd_target_offset
                    x_cur = x if up is None else x + up
                else:
                    noise = torch.rand(x.shape, generator=gen, device=self.device) * 2.0 - 1.0
                    x_cur = x + cfg.epsilon * noise
                for _ in range(cfg.iterations):
                    x_var = x_cur.detach().requires_grad_(True)
                    with autocast(self.device, cfg.amp):
                        loss = F.mse_loss(v.edit(x_var, t).float(), y)
                    (grad,) = torch.autograd.grad(loss, x_var)
                    up, x_cur = cmua_update(up, x, x_var.detach(), grad, step_size=cfg.step_size, factor=factor,
                                            epsilon=cfg.epsilon, momentum=cfg.momentum)
                last_losses.append(loss.detach())
            record[f"loss/{v.name}"] = torch.stack(last_losses).mean()
        if up is not None:
            state["w"] = up.detach()
        return [record]


def run_cmua(victims: list[VictimLike], images: Tensor, attrs40: Tensor, config: CMUAConfig, *,
             checkpoint_path: str | Path | None = None, callback: Callback | None = None,
             resume: bool = True) -> InterruptionResult:
    """Optimise a CMUA universal perturbation ``w`` ``[1,3,H,W]`` (``‖w‖∞ ≤ ε``) on ``images`` ``[N,3,S,S]``.

    Same loop, checkpointing and history as :func:`run_interruption`; one history record per batch with the
    last-iteration loss per victim (mean over its targets).
    """
    check_inputs("cmua", victims, images, attrs40)
    device = resolve_device(config.device)
    prepared = prepare_victims(victims, device, channels_last=config.channels_last, compile=config.compile)
    images = images.to(device=device, dtype=torch.float32)
    attrs40 = attrs40.to(device=device, dtype=torch.float32)
    size = images.shape[-1]
    state = {"w": torch.zeros(1, 3, size, size, device=device)}
    algo = _CMUA(prepared, config, device)
    with cudnn_autotune(device):  # as stage 1: methods are compared under the same settings
        final = run_loop(
            images, attrs40, state,
            settings=LoopSettings("cmua", config.epochs, config.batch_size, config.checkpoint_every, config.progress),
            step=algo.step, fingerprint=config_fingerprint(config, RUNTIME_FIELDS, [v.name for v in victims],
                                           images.shape),
            checkpoint_path=checkpoint_path, resume=resume, callback=callback,
        )
    return InterruptionResult(w=final.tensors["w"].detach().float().cpu(), history=final.history)
