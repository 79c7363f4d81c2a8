"""Optimisation state of a universal-perturbation outer loop, its checkpoint file and its random streams.

Randomness is counter-based: every random draw of epoch ``e`` / batch ``b`` comes from a generator seeded with
``derive_seed(seed, tag, e, b)``. The RNG state of a run is therefore fully described by ``(seed, epoch, batch)``,
which the checkpoint stores; a resumed run re-creates exactly the streams an uninterrupted run would use.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tsdf_pipeline.models.checkpoints import atomic_save

STATE_FORMAT = "tsdf-defense-state/1"


def derive_seed(seed: int, *keys: object) -> int:
    """A stable 63-bit seed for the stream named by ``keys`` (same value in every process and platform)."""
    digest = hashlib.blake2b(repr((int(seed), *keys)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def make_generator(seed: int, *keys: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`derive_seed`."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *keys))
    return gen


def tensor_digest(t: Tensor) -> str:
    """sha256 of a tensor's bytes (CPU, contiguous, any dtype): names the exact data or weights a run used."""
    return hashlib.sha256(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def config_fingerprint(config: Any, runtime_fields: tuple[str, ...], victim_names: list[str],
                       image_shape: Sequence[int]) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed: the config without ``runtime_fields``, victims, data shape."""
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in runtime_fields}
    return {**fields, "victims": list(victim_names), "images": [int(s) for s in image_shape]}


@dataclass
class LoopState:
    """Everything needed to continue a run: tensors (``w``, momentum, EMA, ...), position and history.

    ``epoch``/``batch`` name the next batch to run. ``tensors`` live on the run's device while it runs.
    """

    tensors: dict[str, Tensor]
    epoch: int = 0
    batch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def save_state(path: str | Path, state: LoopState, *, method: str, fingerprint: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": STATE_FORMAT,
        "method": method,
        "fingerprint": fingerprint,
        "epoch": state.epoch,
        "batch": state.batch,
        "tensors": {k: v.detach().to("cpu") for k, v in state.tensors.items()},
        "history": state.history,
    }
    atomic_save(payload, path)


def load_state(path: str | Path, *, method: str, fingerprint: dict[str, Any],
               device: torch.device | str) -> LoopState:
    """Read a checkpoint written by :func:`save_state` for the same method and settings.

    Raises ``ValueError`` naming the file when it is not such a checkpoint, belongs to another method, or was
    written with different settings (the differing keys are listed).
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"{path}: not a readable defense checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: not a defense checkpoint (expected format {STATE_FORMAT!r})")
    if payload["method"] != method:
        raise ValueError(f"{path}: checkpoint of method {payload['method']!r}, cannot resume method {method!r}")
    saved = payload["fingerprint"]
    differing = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    if differing:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {fingerprint.get(k)!r}" for k in differing)
        raise ValueError(f"{path}: checkpoint was written with other settings ({details}); "
                         "delete it or pass resume=False")
    return LoopState(
        tensors={k: v.to(device) for k, v in payload["tensors"].items()},
        epoch=int(payload["epoch"]),
        batch=int(payload["batch"]),
        history=list(payload["history"]),
    )
