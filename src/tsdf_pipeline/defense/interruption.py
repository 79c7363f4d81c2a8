"""TSDF stage 1 (interruption): one universal perturbation ``w`` against an ensemble of face-editing victims.

Per batch of the fixed training subset (TSDF_METHOD.md §1.3, the release's ``train.py`` with ``do_poison=False``):

1. ``inner_steps`` feature-ensemble steps. For every victim ``m`` the middle feature of
   ``DI(x + w)`` is resized to ``feature_size``², summed over channels and over victims into ``A [B,s,s]``
   (``C`` likewise from the clean ``x``). ``L = -MSE(A, C) + enh_weight · MSE(enhance(C, A), A)``; then
   ``w <- clip(w - α·sign(g / mean|g|), ±ε)`` with ``g = ∂L/∂w`` (no momentum).
2. One end-to-end step: ``L_m = 0.7·(-MSE(G_m(DI(x+w)), G_m(x))) + 0.3·(-MSE(mid_m(DI(x+w)), mid_m(x)))``,
   ``L = Σ_m ω_m L_m``; ``ĝ = g / mean|g| + 0.8·mom``, ``mom <- ĝ``, ``w <- clip(w - α·sign(ĝ), ±ε)``; then
   ``EMA <- 0.9·EMA + 0.1·L`` and ``ω <- softmax(EMA / 0.1)`` (init: EMA 0, ω 1/M). A victim the perturbation
   disrupts least has the largest (least negative) ``L_m`` and so the largest weight.

Differences from the release, none of which changes the update:

* The clean outputs ``G_m(x)`` and clean features ``mid_m(x)`` do not depend on ``w``. The release recomputes them
  in every step (4 extra forward passes per step); here they are computed once per batch and, with
  ``cache_clean="run"``, kept for all epochs (the subset and its order are fixed). Those of all batches are then
  computed before the run's first step, so that on CUDA they keep the device busy while the compiled steps load
  on a thread (``aot_prefetch``).
* EMA and weights stay on the device (the release calls ``.item()`` per victim per step); losses and weights
  reach the host once per epoch (or per checkpoint) through the loop's history.
* Input diversity is one gather with pre-drawn index tables (see ``input_diversity``); each victim call gets
  its own draw, as in the release. The release shuffles the victim order per step; that only decides which
  victim receives which of the step's i.i.d. draws (and the floating-point summation order), so here the draws
  are shuffled among the victims and the victims run in a fixed order (``shuffle_victims=False``: victim ``m``
  gets draw ``m``).
* On CUDA (``cuda_graphs``) a batch's steps are captured once as a CUDA graph and replayed for every batch of
  that size: the same kernels without the host's launch overhead.
* The end-to-end step is computed per victim, ``L_m`` and ``∂(ω_m·L_m)/∂w``, and the gradients are summed (the
  gradient of ``Σ_m ω_m L_m``, up to the order of the floating-point sums). On CUDA the victims run side by side on
  streams of their own (``streams``), in the feature steps as well.
* ``aot_cache_dir``: the feature step and each victim's end-to-end part (pure tensor functions; all victims' parts
  as one function with ``victim_streams: false``) are each traced once, compiled ahead of time by Inductor and
  stored there; a later run with the same victim architectures and settings, config and shapes (any weights: they
  are the artifacts' inputs) loads them instead of tracing and compiling (``aot_compile``). One artifact per step
  kind (and victim), not one per batch: the feature step is compiled once for all its ``inner_steps`` calls. With
  ``aot_prefetch`` the artifacts earlier runs built are loaded on a thread from the start, beside the clean
  passes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from tsdf_pipeline.defense.aot_compile import AotCompiledFunction, import_runtime_in_background, prefetch
from tsdf_pipeline.defense.cuda_graphs import GraphedFunction
from tsdf_pipeline.defense.feature_contrast import (
    bilinear_resize,
    enhance_feature_contrast,
    summed_feature_map,
)
from tsdf_pipeline.defense.input_diversity import (
    DiversityDraw,
    apply_diversity,
    diversity_range,
    sample_diversity,
)
from tsdf_pipeline.defense.loop import Callback, LoopSettings, batch_slice, run_loop
from tsdf_pipeline.defense.state import config_fingerprint, make_generator
from tsdf_pipeline.defense.streams import VictimStreams
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

# Settings that do not change the result (or only its floating-point rounding); a checkpoint may be resumed
# with other values of these.
RUNTIME_FIELDS = ("epochs", "device", "channels_last", "compile", "cuda_graphs", "victim_streams", "checkpoint_every",
                  "progress", "cache_clean", "aot_cache_dir", "aot_options", "aot_prefetch")


@dataclass
class InterruptionConfig(AttackSettings):
    """Hyperparameters of TSDF stage 1 (defaults: the release, 256 px, [-1,1] pixel units)."""

    epsilon: float = 0.05
    step_size: float = 1e-3
    epochs: int = 30
    inner_steps: int = 3
    feature_size: int = 32
    feature_loss_weight: float = 0.3
    output_loss_weight: float = 0.7
    momentum: float = 0.8
    ema: float = 0.9
    temperature: float = 0.1
    enh_weight: float = 0.001
    enh_temperature: float = 0.1
    enh_alpha: float = 0.4
    di_prob: float = 0.5
    di_low: int | None = None     # None: scaled from the image size (256 px -> 256)
    di_high: int | None = None    # None: scaled (256 px -> 289)
    di_pad: int | None = None     # None: scaled (256 px -> 290)
    batch_size: int = 8
    targets: Literal["train", "all"] = "train"   # the paper's training edits (AttackSettings: "all")
    shuffle_victims: bool = True
    cache_clean: Literal["run", "batch"] = "run"
    cuda_graphs: bool = True     # on CUDA: capture each batch's steps once, replay them (no launch overhead)
    victim_streams: bool = True  # on CUDA: the victims side by side, each on a stream of its own
    aot_cache_dir: str | None = None  # compile the steps ahead of time (Inductor) and keep them here
    aot_options: dict[str, Any] | None = None  # Inductor config for that compilation, e.g. {"max_autotune": true}
    aot_prefetch: bool = True  # load the artifacts earlier runs built on a thread, beside the clean passes
    checkpoint_every: Literal["batch", "epoch"] = "epoch"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cache_clean not in ("run", "batch"):
            raise ValueError(f"InterruptionConfig.cache_clean: expected 'run' or 'batch', got {self.cache_clean!r}")
        if self.epsilon <= 0 or self.step_size <= 0 or self.batch_size < 1 or self.epochs < 0:
            raise ValueError("InterruptionConfig: epsilon, step_size and batch_size must be positive, epochs >= 0")
        if self.aot_options is not None and (self.aot_cache_dir is None or not isinstance(self.aot_options, dict)):
            raise ValueError("InterruptionConfig.aot_options: expected a dict of Inductor settings together with "
                             f"aot_cache_dir, got {self.aot_options!r} with aot_cache_dir={self.aot_cache_dir!r}")


@dataclass
class InterruptionResult:
    """A universal perturbation ``w`` ``[1,3,H,W]`` (CPU, fp32, ``‖w‖∞ ≤ ε``) and the per-step history."""

    w: Tensor
    history: list[dict[str, float]] = field(default_factory=list)


def l1_normalize(grad: Tensor) -> Tensor:
    """``g / (mean|g| + 1e-12)`` per sample (mean over C,H,W), as the release normalises gradients."""
    return grad / (grad.abs().mean(dim=(1, 2, 3), keepdim=True) + 1e-12)


def sign_step(w: Tensor, direction: Tensor, step_size: float, epsilon: float) -> Tensor:
    """Descent step ``clip(w - step_size·sign(direction), -ε, ε)``."""
    return (w - step_size * direction.sign()).clamp(-epsilon, epsilon)


def momentum_direction(grad: Tensor, momentum: Tensor, decay: float) -> Tensor:
    """MI-FGSM direction ``g/mean|g| + decay·momentum`` (also the new momentum)."""
    return l1_normalize(grad) + decay * momentum


def update_model_weights(ema: Tensor, losses: Tensor, beta: float, temperature: float) -> tuple[Tensor, Tensor]:
    """``ema' = β·ema + (1-β)·losses`` and ``ω = softmax(ema'/T)``; all ``[M]`` device tensors."""
    ema = beta * ema + (1.0 - beta) * losses
    return ema, torch.softmax(ema / temperature, dim=0)


@dataclass
class _CleanPass:
    """``w``-independent quantities of one batch: targets, clean outputs/features, the clean ensemble map."""

    targets: list[Any]
    outputs: list[Tensor]      # per victim [T,N,3,H,W]
    features: list[Tensor]     # per victim [T,N,C,s,s] (resized)
    feature_map: Tensor        # [N,s,s] fp32, channel- and victim-summed


class _Stage1:
    """One stage-1 run: prepared victims, clean cache, the epoch's DI plan and the per-batch step.

    The DI plan of an epoch is ``[n_batches, inner+1, M, 2, S]``, indexed by victim: the release's per-step
    victim shuffle only decides which victim receives which of the step's i.i.d. draws, so it is applied to
    the draws (``shuffle_victims``) and the victims always run in index order. That keeps the batch step one
    fixed sequence of operations, which on CUDA is captured once and replayed as a graph (``cuda_graphs``).
    """

    def __init__(self, victims: list[PreparedVictim], config: InterruptionConfig, images: Tensor,
                 attrs40: Tensor) -> None:
        """``images`` ``[N,3,S,S]`` and ``attrs40`` ``[N,40]``: the run's subset, on the run's device."""
        device, size = images.device, images.shape[-1]
        self.victims = victims
        self.config = config
        self.device = device
        self.images, self.attrs40 = images, attrs40
        self.n_batches = -(-images.shape[0] // config.batch_size)
        self.range = diversity_range(size, config.di_low, config.di_high, config.di_pad)
        self.cache: dict[int, _CleanPass] = {}
        self.plan: DiversityDraw | None = None
        self._graph_targets: list[Any] | None = None
        self.streams = VictimStreams(device, len(victims) if config.victim_streams else 1)
        # The feature step and each victim's end-to-end part over tensors only, each compiled ahead of time into its
        # own artifact (the feature step's serves its `inner_steps` calls); None: run them as Python.
        self.aot: dict[str, AotCompiledFunction] | None = None
        if config.aot_cache_dir is not None:
            self.aot = {"feature": self._aot_function("feature", self._feature_tensor_step, victims)}
            if config.victim_streams:  # one artifact per victim, each on its stream
                for m, v in enumerate(victims):
                    self.aot[f"end_to_end/{v.name}"] = self._aot_function(
                        f"end_to_end/{v.name}", self._victim_end_to_end_tensor(m), [v])
            else:  # one artifact for all victims: fewer kernels to load (identical ones are shared)
                self.aot["end_to_end"] = self._aot_function("end_to_end", self._end_to_end_tensor_parts, victims)
            if config.aot_prefetch:
                prefetch(list(self.aot.values()), device)
        # The batch step over tensors only, replayed as a CUDA graph (None: launched eagerly).
        self.tensor_step: Callable[..., Any] | None = None
        if config.cuda_graphs and device.type == "cuda":
            self.tensor_step = GraphedFunction(self._graph_step)

    def _aot_key(self, victims: list[PreparedVictim]) -> dict[str, Any]:
        """Everything an ahead-of-time artifact over ``victims`` bakes in besides its inputs: the config and each
        victim's settings (``describe()``, e.g. HiSD's tag) and layout. Not the seed (the step draws nothing: its
        random tables are inputs), nor the weights: the victims' parameters and buffers are its live inputs
        (``AotCompiledFunction`` names the artifact by their shapes), so seeds and checkpoints of the same
        architectures share it."""
        fields = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in (*RUNTIME_FIELDS, "seed")}
        described = {v.name: [v.victim.describe(), v.channels_last] for v in victims}
        return {"stage": "tsdf-stage1", "config": fields, "victims": described}

    def _aot_function(self, step: str, fn: Callable[..., Any], victims: list[PreparedVictim]) -> AotCompiledFunction:
        """``fn`` compiled ahead of time; it reads the parameters and buffers of ``victims`` (its live inputs)."""
        live = {f"{v.name}.{name}": t for v in victims
                for name, t in [*v.victim.named_parameters(), *v.victim.named_buffers()]}
        assert self.config.aot_cache_dir is not None
        return AotCompiledFunction(fn, self.config.aot_cache_dir, {**self._aot_key(victims), "step": step}, live,
                                   options=self.config.aot_options)

    def start_epoch(self, epoch: int) -> None:
        cfg = self.config
        if cfg.cache_clean == "run":  # every batch's clean pass up front (cached: once per run)
            for b in range(self.n_batches):
                sl = batch_slice(b, cfg.batch_size, self.images.shape[0])
                self.clean_pass(b, self.images[sl], self.attrs40[sl])
        m = len(self.victims)
        steps = cfg.inner_steps + 1
        gen = make_generator(cfg.seed, "tsdf-stage1-plan", epoch)
        draw = sample_diversity(self.n_batches * steps * m, self.range, cfg.di_prob, gen)
        shape = (self.n_batches, steps, m, 2, self.range.size)
        index, valid = draw.index.view(shape), draw.valid.view(shape)
        if cfg.shuffle_victims:
            # Victim order[slot] gets the slot-th draw of the step, as in the release's shuffled loop.
            for b in range(self.n_batches):
                for k in range(steps):
                    order = torch.randperm(m, generator=gen)
                    index[b, k, order] = index[b, k].clone()
                    valid[b, k, order] = valid[b, k].clone()
        self.plan = DiversityDraw(index, valid).to(self.device)

    def tables(self, batch: int) -> DiversityDraw:
        """The batch's DI draws ``[inner+1, M, 2, S]`` (step, victim)."""
        assert self.plan is not None, "start_epoch() first"
        return DiversityDraw(self.plan.index[batch], self.plan.valid[batch])

    @torch.no_grad()
    def clean_pass(self, batch: int, x: Tensor, attrs40: Tensor) -> _CleanPass:
        if batch in self.cache:
            return self.cache[batch]
        cfg = self.config
        targets, outputs, features = [], [], []
        feature_map = torch.zeros(x.shape[0], cfg.feature_size, cfg.feature_size, device=x.device)
        with autocast(self.device, cfg.amp):
            for v in self.victims:
                t = v.targets(attrs40, cfg.targets)
                out, feat = v.edit_with_feature(x, t, compiled=False)  # once per image: not worth a compile
                targets.append(t)
                outputs.append(out)
                features.append(bilinear_resize(feat, cfg.feature_size))
                feature_map = feature_map + summed_feature_map(feat, cfg.feature_size)
        entry = _CleanPass(targets, outputs, features, feature_map)
        if cfg.cache_clean == "batch":
            self.cache.clear()
        self.cache[batch] = entry
        return entry

    def feature_loss(self, x: Tensor, w: Tensor, clean: _CleanPass, draw: DiversityDraw, *,
                     concurrent: bool = True) -> dict[str, Tensor]:
        """Loss of one feature-ensemble step (``loss`` is minimised); ``draw``: ``[M,2,S]`` per victim.
        ``concurrent``: the victims on their own CUDA streams (off inside an ahead-of-time trace)."""
        cfg = self.config
        x_adv = x + w

        def victim_map(m: int) -> Tensor:
            with autocast(self.device, cfg.amp):
                x_di = apply_diversity(x_adv, draw.index[m], draw.valid[m])
                return summed_feature_map(self.victims[m].feature(x_di, clean.targets[m]), cfg.feature_size)

        victims = range(len(self.victims))
        maps = self.streams.map(victim_map, victims) if concurrent else [victim_map(m) for m in victims]
        adv_map = maps[0]
        for part in maps[1:]:
            adv_map = adv_map + part
        mse = F.mse_loss(adv_map, clean.feature_map)
        enhanced = enhance_feature_contrast(clean.feature_map, adv_map, cfg.enh_temperature, cfg.enh_alpha)
        enh_mse = F.mse_loss(enhanced, adv_map)
        return {"loss": -mse + cfg.enh_weight * enh_mse, "mse": mse, "enh_mse": enh_mse}

    def feature_steps(self, x: Tensor, w: Tensor, clean: _CleanPass, draws: DiversityDraw
                      ) -> tuple[Tensor, list[dict[str, Tensor]]]:
        """The ``inner_steps`` feature-ensemble sign steps of one batch (no momentum); ``draws`` is
        :meth:`tables`' ``[inner+1, M, 2, S]``. Returns ``(w, records)``."""
        records: list[dict[str, Tensor]] = []
        for k in range(self.config.inner_steps):
            if self.aot is None:
                w, record = self.feature_step(x, w, clean, DiversityDraw(draws.index[k], draws.valid[k]))
            else:
                w, record = self.aot["feature"](x, w, _clean_tensors(clean), (draws.index[k], draws.valid[k]))
            records.append(record)
        return w, records

    def feature_step(self, x: Tensor, w: Tensor, clean: _CleanPass, draw: DiversityDraw, *,
                     concurrent: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        """One feature-ensemble sign step; ``draw``: ``[M,2,S]`` per victim. Returns ``(w, record)``."""
        cfg = self.config
        w_var = w.detach().requires_grad_(True)
        parts = self.feature_loss(x, w_var, clean, draw, concurrent=concurrent)
        (grad,) = torch.autograd.grad(parts["loss"], w_var)
        w = sign_step(w, l1_normalize(grad), cfg.step_size, cfg.epsilon)
        return w, {f"feature/{key}": val.detach() for key, val in parts.items()}

    def victim_end_to_end(self, m: int, x: Tensor, w: Tensor, clean: tuple[Any, Tensor, Tensor],
                          draw: tuple[Tensor, Tensor], *, weight: Tensor) -> tuple[Tensor, Tensor]:
        """Victim ``m``'s part of the end-to-end step: ``(L_m, ∂(ω_m·L_m)/∂w)``, a 0-dim loss (higher = less
        disrupted) and a ``[1,3,H,W]`` gradient. ``clean``: its target, clean output ``[T,N,3,H,W]`` and clean
        feature ``[T,N,C,s,s]``; ``draw``: its DI tables ``(index, valid)`` ``[2,S]``; ``weight``: 0-dim ω_m."""
        target, clean_output, clean_feature = clean
        cfg = self.config
        w_var = w.detach().requires_grad_(True)
        with autocast(self.device, cfg.amp):
            x_di = apply_diversity(x + w_var, *draw)
            out, feat = self.victims[m].edit_with_feature(x_di, target)
            out_mse = F.mse_loss(out.float(), clean_output.float())
            feat_mse = F.mse_loss(bilinear_resize(feat, cfg.feature_size).float(), clean_feature.float())
            loss = -(cfg.output_loss_weight * out_mse + cfg.feature_loss_weight * feat_mse)
        (grad,) = torch.autograd.grad(weight * loss, w_var)
        return loss.detach(), grad

    def end_to_end_step(self, x: Tensor, w: Tensor, clean: _CleanPass, draws: DiversityDraw, *,
                        momentum: Tensor, ema: Tensor, weights: Tensor
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """The end-to-end step with momentum and the EMA-softmax victim weights ``[M]``; ``draws`` as in
        :meth:`feature_steps`. The victims' parts (:meth:`victim_end_to_end`) run side by side on CUDA.

        Returns ``(w, new momentum, new ema, new weights, record)``; ``momentum`` matches ``w``'s batch dimension.
        """
        cfg = self.config
        k = cfg.inner_steps

        def part(m: int) -> tuple[Tensor, Tensor]:
            target, draw = clean.targets[m], (draws.index[k, m], draws.valid[k, m])
            if self.aot is None:
                return self.victim_end_to_end(m, x, w, (target, clean.outputs[m], clean.features[m]), draw,
                                              weight=weights[m])
            return self.aot[f"end_to_end/{self.victims[m].name}"](
                x, w, (target.cond, clean.outputs[m], clean.features[m]), draw, weights[m])

        if self.aot is not None and "end_to_end" in self.aot:
            losses, grad = self.aot["end_to_end"](x, w, _clean_tensors(clean), (draws.index[k], draws.valid[k]),
                                                  weights)
        else:
            losses, grad = _stack_parts(self.streams.map(part, range(len(self.victims))))
        direction = momentum_direction(grad, momentum, cfg.momentum)
        w = sign_step(w, direction, cfg.step_size, cfg.epsilon)
        new_ema, new_weights = update_model_weights(ema, losses, cfg.ema, cfg.temperature)
        record = {"e2e/loss": (weights * losses).sum()}
        for i, v in enumerate(self.victims):
            record[f"e2e/loss/{v.name}"] = losses[i]
            record[f"weight/{v.name}"] = weights[i]
        return w, direction, new_ema, new_weights, record

    def batch_step(self, x: Tensor, clean: _CleanPass, draws: DiversityDraw, state: dict[str, Tensor]
                   ) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
        """All steps of one batch, a pure function of its inputs. ``state``: ``w``, ``momentum``, ``ema``,
        ``weights``; returns the new state and the step records."""
        w, records = self.feature_steps(x, state["w"], clean, draws)
        w, momentum, ema, weights, record = self.end_to_end_step(
            x, w, clean, draws, momentum=state["momentum"], ema=state["ema"], weights=state["weights"])
        return {"w": w, "momentum": momentum, "ema": ema, "weights": weights}, [*records, record]

    def _from_tensors(self, clean: dict[str, Any]) -> _CleanPass:
        """The clean pass back from :func:`_clean_tensors`: target names are fixed per victim (those of the last
        :meth:`step`), only the condition tensors travel through a graph or an artifact."""
        assert self._graph_targets is not None
        targets = [dataclasses.replace(t, cond=c) for t, c in zip(self._graph_targets, clean["conds"], strict=True)]
        return _CleanPass(targets, clean["outputs"], clean["features"], clean["feature_map"])

    def _graph_step(self, x: Tensor, clean: dict[str, Any], draws: tuple[Tensor, Tensor], state: dict[str, Tensor]
                    ) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
        """:meth:`batch_step` over tensors only (what :class:`GraphedFunction` captures)."""
        return self.batch_step(x, self._from_tensors(clean), DiversityDraw(*draws), state)

    def _feature_tensor_step(self, x: Tensor, w: Tensor, clean: dict[str, Any], draw: tuple[Tensor, Tensor]
                             ) -> tuple[Tensor, dict[str, Tensor]]:
        """:meth:`feature_step` over tensors only (what ``aot["feature"]`` compiles: one stream)."""
        return self.feature_step(x, w, self._from_tensors(clean), DiversityDraw(*draw), concurrent=False)

    def _end_to_end_tensor_parts(self, x: Tensor, w: Tensor, clean: dict[str, Any], draw: tuple[Tensor, Tensor],
                                 weights: Tensor) -> tuple[Tensor, Tensor]:
        """Every victim's :meth:`victim_end_to_end` in turn over tensors only (what ``aot["end_to_end"]`` compiles,
        one stream): the losses ``[M]`` and the summed gradient; ``draw``: ``[M,2,S]``."""
        c = self._from_tensors(clean)
        index, valid = draw
        return _stack_parts([self.victim_end_to_end(m, x, w, (c.targets[m], c.outputs[m], c.features[m]),
                                                    (index[m], valid[m]), weight=weights[m])
                             for m in range(len(self.victims))])

    def _victim_end_to_end_tensor(self, m: int) -> Callable[..., tuple[Tensor, Tensor]]:
        """:meth:`victim_end_to_end` of victim ``m`` over tensors only (what ``aot["end_to_end/<name>"]``
        compiles): the target's condition tensor instead of the target."""

        def fn(x: Tensor, w: Tensor, clean: tuple[Tensor, Tensor, Tensor], draw: tuple[Tensor, Tensor],
               weight: Tensor) -> tuple[Tensor, Tensor]:
            assert self._graph_targets is not None
            cond, output, feature = clean
            target = dataclasses.replace(self._graph_targets[m], cond=cond)
            return self.victim_end_to_end(m, x, w, (target, output, feature), draw, weight=weight)

        return fn

    def step(self, epoch: int, batch: int, x: Tensor, attrs40: Tensor,
             state: dict[str, Tensor]) -> list[dict[str, Tensor]]:
        clean = self.clean_pass(batch, x, attrs40)
        draws = self.tables(batch)
        current = {k: state[k] for k in ("w", "momentum", "ema", "weights")}
        self._graph_targets = clean.targets
        if self.tensor_step is None:
            new, records = self.batch_step(x, clean, draws, current)
        else:
            new, records = self.tensor_step(x, _clean_tensors(clean), (draws.index, draws.valid), current)
        state.update(new)
        return records


def _stack_parts(parts: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """The victims' ``(L_m, gradient)`` pairs as the losses ``[M]`` and the gradient summed in victim order."""
    grad = parts[0][1]
    for _, victim_grad in parts[1:]:
        grad = grad + victim_grad
    return torch.stack([loss for loss, _ in parts]), grad


def _clean_tensors(clean: _CleanPass) -> dict[str, Any]:
    """The tensors of a clean pass (what a CUDA graph or an AOT artifact takes as inputs)."""
    return {"conds": [t.cond for t in clean.targets], "outputs": clean.outputs, "features": clean.features,
            "feature_map": clean.feature_map}


def run_interruption(victims: list[VictimLike], images: Tensor, attrs40: Tensor, config: InterruptionConfig,
                     *, checkpoint_path: str | Path | None = None, callback: Callback | None = None,
                     resume: bool = True) -> InterruptionResult:
    """Optimise TSDF's stage-1 universal perturbation.

    ``victims``: the ensemble (moved to ``config.device`` in place; channels-last on CUDA when configured).
    ``images``: ``[N,3,S,S]`` in [-1,1], used in fixed batches of ``config.batch_size`` (the release: the first
    128 training images). ``attrs40``: ``[N,40]`` in {0,1}, CelebA column order. With ``checkpoint_path`` the
    state is written atomically every epoch (or batch) and, when ``resume``, a run continues from it with the
    same final result as an uninterrupted run. ``callback(step, metrics)`` sees every step's losses and
    weights, delivered at sync points. Deterministic for a given seed on the CPU.
    """
    check_inputs("interruption", victims, images, attrs40)
    if config.aot_cache_dir is not None:
        import_runtime_in_background()  # beside moving the victims and the clean passes
    device = resolve_device(config.device)
    prepared = prepare_victims(victims, device, channels_last=config.channels_last, compile=config.compile)
    images = images.to(device=device, dtype=torch.float32)
    attrs40 = attrs40.to(device=device, dtype=torch.float32)
    size = images.shape[-1]
    m = len(victims)
    init = make_generator(config.seed, "tsdf-stage1-init")
    w0 = (torch.rand(1, 3, size, size, generator=init) * 2.0 - 1.0) * config.epsilon
    state = {
        "w": w0.to(device),
        "momentum": torch.zeros(1, 3, size, size, device=device),
        "ema": torch.zeros(m, device=device),
        "weights": torch.full((m,), 1.0 / m, device=device),
    }
    stage = _Stage1(prepared, config, images, attrs40)
    with cudnn_autotune(device):
        final = run_loop(
            images, attrs40, state,
            settings=LoopSettings("interruption", config.epochs, config.batch_size, config.checkpoint_every,
                                  config.progress),
            step=stage.step, start_epoch=stage.start_epoch,
            fingerprint=config_fingerprint(config, RUNTIME_FIELDS, [v.name for v in victims], images.shape),
            checkpoint_path=checkpoint_path, resume=resume, callback=callback,
        )
    for fn in (stage.aot or {}).values():  # no loading thread outlives the run (e.g. a finished run resumed)
        fn.await_prefetch()
    return InterruptionResult(w=final.tensors["w"].detach().float().cpu(), history=final.history)
