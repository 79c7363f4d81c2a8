"""Outer loop shared by the universal-perturbation methods: epochs x fixed batches, checkpoint and resume.

The data order is fixed (no shuffling, like the release's loader: batch ``b`` is images ``b·B .. b·B+B-1``).
A method supplies ``step(epoch, batch, x, attrs40, tensors) -> records``: it updates ``tensors`` in place and
returns one dict of 0-dim device tensors per optimisation step. The loop never reads them on the host during an
epoch: pending records are copied to the host in one transfer at each sync point (end of epoch, every
checkpoint, end of run), then numbered, appended to the history and passed to ``callback(step, metrics)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tsdf_pipeline.defense.state import LoopState, load_state, save_state

StepFn = Callable[[int, int, Tensor, Tensor, dict[str, Tensor]], list[dict[str, Tensor]]]
EpochFn = Callable[[int], None]
Callback = Callable[[int, dict[str, float]], None]


@dataclass
class LoopSettings:
    """How the outer loop runs: ``epochs`` passes over ``ceil(N / batch_size)`` batches."""

    method: str
    epochs: int
    batch_size: int
    checkpoint_every: Literal["batch", "epoch"] = "epoch"
    progress: bool = True


def batch_slice(batch: int, batch_size: int, n: int) -> slice:
    """The images of batch ``batch`` out of ``n`` in fixed batches of ``batch_size`` (the last may be short)."""
    return slice(batch * batch_size, min((batch + 1) * batch_size, n))


def _sync(pending: list[tuple[int, int, dict[str, Tensor]]], first_step: int) -> list[dict[str, float]]:
    """Copy pending ``(epoch, batch, record)`` entries to the host in one transfer and number them."""
    if not pending:
        return []
    flat = torch.stack([v.detach().float().reshape(()) for _, _, rec in pending for v in rec.values()])
    values = iter(flat.cpu().tolist())
    return [
        {"step": first_step + i, "epoch": epoch, "batch": batch, **{k: next(values) for k in rec}}
        for i, (epoch, batch, rec) in enumerate(pending)
    ]


def run_loop(images: Tensor, attrs40: Tensor, tensors: dict[str, Tensor], *, settings: LoopSettings,
             step: StepFn, start_epoch: EpochFn | None = None, fingerprint: dict[str, Any],
             checkpoint_path: str | Path | None = None, resume: bool = True,
             callback: Callback | None = None) -> LoopState:
    """Run (or resume) the loop; returns the final state (tensors on the run's device, full history).

    ``images`` ``[N,3,H,W]`` and ``attrs40`` ``[N,40]`` are already on the run's device. ``tensors`` is the
    initial state; when ``resume`` and ``checkpoint_path`` exists, the saved state replaces it (the
    ``fingerprint`` must match the saved one). ``start_epoch(e)`` is called once before the first batch run in
    epoch ``e`` (also when resuming mid-epoch), e.g. to draw the epoch's random plan; for ``e > 0`` already before
    epoch ``e - 1``'s records are read and its checkpoint written (it must not depend on them).
    """
    n = images.shape[0]
    if n == 0:
        raise ValueError(f"{settings.method}: no images to optimise on")
    if attrs40.shape[0] != n:
        raise ValueError(f"{settings.method}: {n} images but {attrs40.shape[0]} attribute rows")
    n_batches = math.ceil(n / settings.batch_size)
    device = images.device
    state = LoopState(tensors=tensors)
    if checkpoint_path is not None and resume and Path(checkpoint_path).exists():
        state = load_state(checkpoint_path, method=settings.method, fingerprint=fingerprint, device=device)
        missing = set(tensors) - set(state.tensors)
        if missing:
            raise ValueError(f"{checkpoint_path}: checkpoint lacks state tensors {sorted(missing)}")

    def checkpoint() -> None:
        if checkpoint_path is not None:
            save_state(checkpoint_path, state, method=settings.method, fingerprint=fingerprint)

    total = settings.epochs * n_batches
    done = min(state.epoch * n_batches + state.batch, total)
    pending: list[tuple[int, int, dict[str, Tensor]]] = []

    def flush() -> None:
        records = _sync(pending, len(state.history))
        pending.clear()
        for rec in records:
            state.history.append(rec)
            if callback is not None:
                callback(rec["step"], {k: float(v) for k, v in rec.items() if k != "step"})

    planned = -1  # the epoch start_epoch last ran for
    with tqdm(total=total, initial=done, desc=settings.method, disable=not settings.progress) as bar:
        while state.epoch < settings.epochs:
            if start_epoch is not None and planned != state.epoch:
                start_epoch(state.epoch)
            for b in range(state.batch, n_batches):
                sl = batch_slice(b, settings.batch_size, n)
                pending.extend((state.epoch, b, rec) for rec in step(state.epoch, b, images[sl], attrs40[sl],
                                                                       state.tensors))
                state.batch = b + 1
                bar.update(1)
                if settings.checkpoint_every == "batch" and b + 1 < n_batches:
                    flush()
                    checkpoint()
            state.epoch += 1
            state.batch = 0
            if start_epoch is not None and state.epoch < settings.epochs:
                # The next epoch's host work (drawing its plan) while the device still runs this one's batches;
                # the flush below waits for the device.
                start_epoch(state.epoch)
                planned = state.epoch
            flush()
            checkpoint()
    return state
