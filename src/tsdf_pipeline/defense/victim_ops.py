"""What the defenses need from a victim, and the run-time plumbing they share (device, autocast, layout)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import Tensor


@dataclass
class AttackSettings:
    """Settings every victim-attacking method shares: which edit targets, seed, and how it runs on the device
    (``"auto"`` = CUDA when available; bf16 autocast, channels_last and ``torch.compile`` apply on CUDA)."""

    targets: Literal["train", "all"] = "all"
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.targets not in ("train", "all"):
            raise ValueError(f"{type(self).__name__}.targets: expected 'train' or 'all', got {self.targets!r}")


class VictimLike(Protocol):
    """The part of ``tsdf_pipeline.models.victims.Victim`` the defenses call (see the models contract).

    ``targets(attrs40 [N,40] in {0,1}, mode)`` -> ``EditTargets(names: list[str], cond: [T,N,...])``;
    ``edit(x [N,3,H,W] in [-1,1], t)`` -> ``[T,N,3,H,W]``; ``edit_with_feature`` -> ``(out, feat [T,N,C,h,w])``;
    ``feature(x, t)`` -> ``[T,N,C,h,w]`` (the middle feature TSDF stage 1 attacks). ``describe()``: its
    settings besides the weights (attributes, target names, options), JSON-serialisable.
    """

    name: str
    arch: str
    image_size: int

    def targets(self, attrs40: Tensor, mode: str = "all") -> Any: ...
    def edit(self, x: Tensor, t: Any) -> Tensor: ...
    def edit_with_feature(self, x: Tensor, t: Any) -> tuple[Tensor, Tensor]: ...
    def feature(self, x: Tensor, t: Any) -> Tensor: ...
    def to(self, *args: Any, **kwargs: Any) -> Any: ...
    def parameters(self) -> Iterator[Tensor]: ...
    def buffers(self) -> Iterator[Tensor]: ...
    def describe(self) -> dict[str, Any]: ...


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``amp``; a no-op on the CPU (fp32 there, for determinism and speed).

    The cast-weight cache is off: each region uses a weight once, and cached casts must not outlive a CUDA
    graph capture."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


@contextlib.contextmanager
def cudnn_autotune(device: torch.device) -> Iterator[None]:
    """On CUDA, let cuDNN time the candidate algorithms of every convolution shape once and keep the fastest
    (``torch.backends.cudnn.benchmark``; the loops' shapes are fixed, so it is paid in the first batch). The
    previous setting is restored on exit; on other devices nothing changes."""
    if device.type != "cuda":
        yield
        return
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def check_inputs(method: str, victims: Sequence[VictimLike], images: Tensor, attrs40: Tensor) -> None:
    """Raise ``ValueError`` naming the method when the victims or the data do not fit together."""
    if len(victims) == 0:
        raise ValueError(f"{method}: no victims given")
    names = [v.name for v in victims]
    if len(set(names)) != len(names):
        raise ValueError(f"{method}: victim names must be unique, got {names}")
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"{method}: images must be [N,3,S,S] in [-1,1], got shape {tuple(images.shape)}")
    if attrs40.dim() != 2 or attrs40.shape != (images.shape[0], 40):
        raise ValueError(
            f"{method}: attrs40 must be [N,40] (CelebA order) with N={images.shape[0]}, got {tuple(attrs40.shape)}"
        )
    size = images.shape[-1]
    wrong = [f"{v.name} ({v.image_size})" for v in victims if int(v.image_size) != size]
    if wrong:
        raise ValueError(f"{method}: images are {size} px but victims expect other sizes: {', '.join(wrong)}")


class PreparedVictim:
    """A victim on the run's device with its (optionally compiled, channels-last) call paths."""

    def __init__(self, victim: VictimLike, device: torch.device, *, channels_last: bool, compile: bool) -> None:
        victim.to(device)
        if channels_last:
            victim.to(memory_format=torch.channels_last)
        self.victim = victim
        self.name = victim.name
        self.arch = victim.arch
        self.channels_last = channels_last
        wrap: Callable[[Callable], Callable] = (
            (lambda fn: torch.compile(fn, dynamic=False)) if compile else (lambda fn: fn)
        )
        self._feature = wrap(victim.feature)
        self._edit_with_feature = wrap(victim.edit_with_feature)
        self._edit = wrap(victim.edit)

    def _layout(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def targets(self, attrs40: Tensor, mode: str) -> Any:
        return self.victim.targets(attrs40, mode=mode)

    def feature(self, x: Tensor, t: Any) -> Tensor:
        return self._feature(self._layout(x), t)

    def edit_with_feature(self, x: Tensor, t: Any, *, compiled: bool = True) -> tuple[Tensor, Tensor]:
        """``compiled=False`` runs the plain module: for calls made once per image (clean passes), where a
        compiled graph of their own (a no-grad graph compiles separately) would cost more than it saves."""
        fn = self._edit_with_feature if compiled else self.victim.edit_with_feature
        return fn(self._layout(x), t)

    def edit(self, x: Tensor, t: Any) -> Tensor:
        return self._edit(self._layout(x), t)


def prepare_victims(victims: Sequence[VictimLike], device: torch.device, *, channels_last: bool,
                    compile: bool) -> list[PreparedVictim]:
    """Move the victims to ``device`` (in place) and wrap them; channels-last and compile only on CUDA."""
    on_cuda = device.type == "cuda"
    return [PreparedVictim(v, device, channels_last=channels_last and on_cuda, compile=compile and on_cuda)
            for v in victims]
