"""One entry point for every perturbation method: TSDF stage 1, CMUA, per-image PGD and the noise control."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

from tsdf_pipeline.defense.cmua import CMUAConfig, run_cmua
from tsdf_pipeline.defense.interruption import InterruptionConfig, run_interruption
from tsdf_pipeline.defense.loop import Callback
from tsdf_pipeline.defense.noise import NoiseConfig, uniform_noise
from tsdf_pipeline.defense.pgd import PGDConfig, run_pgd
from tsdf_pipeline.defense.victim_ops import VictimLike


@dataclass
class Perturbation:
    """``kind="universal"``: ``w`` ``[1,3,H,W]``, added to every image; ``"per_image"``: ``w`` ``[N,3,H,W]``,
    row i for image i; ``"per_target"``: ``w`` ``{victim name: [T,N,3,H,W]}``, one per image and edit target
    (PGD's ``mode: per_target``). In [-1,1] pixel units, ``‖w‖∞ ≤ ε``; ``history``: per-step metrics (iterative
    methods)."""

    kind: Literal["universal", "per_image", "per_target"]
    w: Tensor | dict[str, Tensor]
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class MethodSpec:
    """A method's config type and its runner ``(victims, images, attrs40, config, *, checkpoint_path, callback)``."""

    config_type: type
    run: Callable[..., Perturbation]


def _tsdf(victims: list[VictimLike], images: Tensor, attrs40: Tensor, config: Any, *,
          checkpoint_path: str | Path | None, callback: Callback | None) -> Perturbation:
    result = run_interruption(victims, images, attrs40, config, checkpoint_path=checkpoint_path, callback=callback)
    return Perturbation("universal", result.w, result.history)


def _cmua(victims: list[VictimLike], images: Tensor, attrs40: Tensor, config: Any, *,
          checkpoint_path: str | Path | None, callback: Callback | None) -> Perturbation:
    result = run_cmua(victims, images, attrs40, config, checkpoint_path=checkpoint_path, callback=callback)
    return Perturbation("universal", result.w, result.history)


def _pgd(victims: list[VictimLike], images: Tensor, attrs40: Tensor, config: Any, *,
         checkpoint_path: str | Path | None, callback: Callback | None) -> Perturbation:
    w = run_pgd(victims, images, attrs40, config)
    return Perturbation("per_image" if isinstance(w, Tensor) else "per_target", w)


def _noise(victims: list[VictimLike], images: Tensor, attrs40: Tensor, config: Any, *,
           checkpoint_path: str | Path | None, callback: Callback | None) -> Perturbation:
    if config.per_image:
        return Perturbation("per_image", uniform_noise(images.shape, config.epsilon, config.seed))
    return Perturbation("universal", uniform_noise((1, *images.shape[1:]), config.epsilon, config.seed))


METHODS: dict[str, MethodSpec] = {
    "tsdf": MethodSpec(InterruptionConfig, _tsdf),
    "cmua": MethodSpec(CMUAConfig, _cmua),
    "pgd": MethodSpec(PGDConfig, _pgd),
    "noise": MethodSpec(NoiseConfig, _noise),
}


def make_config(method: str, config: Any = None) -> Any:
    """The method's config from an instance, a dict of its fields (e.g. Kedro parameters) or ``None`` (defaults).

    Raises ``ValueError`` for an unknown method, unknown keys (listing the allowed ones) or a config object of
    another method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown perturbation method {method!r}; expected one of {sorted(METHODS)}")
    config_type = METHODS[method].config_type
    if config is None:
        return config_type()
    if isinstance(config, config_type):
        return config
    if isinstance(config, dict):
        allowed = {f.name for f in dataclasses.fields(config_type)}
        unknown = sorted(set(config) - allowed)
        if unknown:
            raise ValueError(f"{method} config: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        return config_type(**config)
    raise ValueError(f"{method} config: expected {config_type.__name__}, a dict or None, got {type(config).__name__}")


def make_perturbation(method: str, victims: list[VictimLike], images: Tensor, attrs40: Tensor, config: Any = None,
                      *, checkpoint_path: str | Path | None = None,
                      callback: Callback | None = None) -> Perturbation:
    """Run ``method`` (``"tsdf"``, ``"cmua"``, ``"pgd"``, ``"noise"``) on ``images`` ``[N,3,S,S]`` in [-1,1]
    with labels ``attrs40`` ``[N,40]``. ``checkpoint_path``/``callback`` apply to the universal iterative methods
    (tsdf, cmua) and are ignored by the others."""
    cfg = make_config(method, config)
    return METHODS[method].run(victims, images, attrs40, cfg, checkpoint_path=checkpoint_path, callback=callback)
