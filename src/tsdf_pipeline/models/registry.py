"""Build and load the face-editing generators (and their discriminators) by architecture name."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

from torch import nn

from tsdf_pipeline.models.attentiongan import AttentionGANGenerator
from tsdf_pipeline.models.attgan import AttGANDiscriminator, AttGANGenerator
from tsdf_pipeline.models.checkpoints import (
    GENERATOR_WRAPPER_KEYS,
    load_state_dict_strict,
    read_checkpoint,
    unwrap_state_dict,
)
from tsdf_pipeline.models.stargan import StarGANDiscriminator, StarGANGenerator

ARCHS: tuple[str, ...] = ("stargan", "attentiongan", "attgan", "hisd")

# Official CelebA 256 px configs (manifests in tests/fixtures/manifests); hisd's lives in hisd.py.
_STARGAN_CONFIG = {"conv_dim": 64, "c_dim": 5, "repeat_num": 6}
_GENERATOR_CONFIGS: dict[str, dict[str, Any]] = {
    "stargan": _STARGAN_CONFIG,
    "attentiongan": _STARGAN_CONFIG,
    "attgan": {"enc_dim": 64, "enc_layers": 5, "dec_dim": 64, "dec_layers": 5, "n_attrs": 13,
               "shortcut_layers": 1, "inject_layers": 0, "img_size": 256},
}
_DISCRIMINATOR_CONFIGS: dict[str, dict[str, Any]] = {
    "stargan": {"image_size": 256, "conv_dim": 64, "c_dim": 5, "repeat_num": 6},
    "attgan": {"dim": 64, "n_layers": 5, "fc_dim": 1024, "n_attrs": 13, "img_size": 256},
}
# Key of the discriminator's state dict in its official file (None = raw state dict: StarGAN 200000-D.ckpt;
# AttGAN keeps D in the full save {'G','D','optim_G','optim_D'}).
_DISCRIMINATOR_WRAPPER_KEYS: dict[str, str | None] = {"stargan": None, "attgan": "D"}


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown generator arch {arch!r}; expected one of {ARCHS}")


def _generator_class(arch: str) -> Callable[..., nn.Module]:
    if arch == "hisd":
        from tsdf_pipeline.models.hisd import HiSDGenerator

        return HiSDGenerator
    return {"stargan": StarGANGenerator, "attentiongan": AttentionGANGenerator, "attgan": AttGANGenerator}[arch]


def default_config(arch: str) -> dict[str, Any]:
    """A fresh copy of the official CelebA 256 px generator config of ``arch``."""
    _check_arch(arch)
    if arch == "hisd":
        from tsdf_pipeline.models.hisd import DEFAULT_CONFIG

        return copy.deepcopy(DEFAULT_CONFIG)
    return dict(_GENERATOR_CONFIGS[arch])


def _merged(kind: str, arch: str, defaults: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {kind} config key(s) {unknown} for {arch!r}; expected some of {sorted(defaults)}")
    return {**defaults, **config}


def build_generator(arch: str, **config: Any) -> nn.Module:
    """Randomly initialised generator of ``arch``; ``config`` overrides keys of ``default_config(arch)``."""
    merged = _merged("generator", arch, default_config(arch), config)
    return _generator_class(arch)(**merged)


def load_generator(arch: str, path: str | os.PathLike, *, wrapper_key: str | None = None,
                   **config: Any) -> nn.Module:
    """Generator of ``arch`` loaded from an official checkpoint file, in ``.eval()`` mode.

    ``wrapper_key`` defaults to the official wrapper (attgan ``'G'``, hisd ``'gen_test'``, else a raw state
    dict).  StarGAN / AttentionGAN norms use per-instance statistics in any mode; AttGAN BatchNorm uses its
    running statistics in eval mode, as the official code does.
    """
    _check_arch(arch)
    key = wrapper_key if wrapper_key is not None else GENERATOR_WRAPPER_KEYS[arch]
    state_dict = unwrap_state_dict(read_checkpoint(path), key, path=path)
    generator = build_generator(arch, **config)
    load_state_dict_strict(generator, state_dict, source=str(path), arch=arch)
    return generator.eval()


def _check_discriminator_arch(arch: str) -> None:
    if arch not in _DISCRIMINATOR_CONFIGS:
        raise ValueError(f"no discriminator for arch {arch!r}; available: {tuple(_DISCRIMINATOR_CONFIGS)}")


def build_discriminator(arch: str, **config: Any) -> nn.Module:
    """Randomly initialised discriminator of ``arch`` (stargan, attgan); ``config`` overrides the defaults."""
    _check_discriminator_arch(arch)
    merged = _merged("discriminator", arch, _DISCRIMINATOR_CONFIGS[arch], config)
    return (StarGANDiscriminator if arch == "stargan" else AttGANDiscriminator)(**merged)


def load_discriminator(arch: str, path: str | os.PathLike, *, wrapper_key: str | None = None,
                       **config: Any) -> nn.Module:
    """Discriminator of ``arch`` from its official file (StarGAN ``200000-D.ckpt`` raw; AttGAN ``{'D': sd}``)."""
    _check_discriminator_arch(arch)
    key = wrapper_key if wrapper_key is not None else _DISCRIMINATOR_WRAPPER_KEYS[arch]
    state_dict = unwrap_state_dict(read_checkpoint(path), key, path=path)
    discriminator = build_discriminator(arch, **config)
    load_state_dict_strict(discriminator, state_dict, source=str(path), arch=f"{arch} discriminator")
    return discriminator.eval()
