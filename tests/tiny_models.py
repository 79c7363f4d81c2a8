"""Tiny random victims (32 px by default) saved in the official checkpoint formats, for fast pipeline tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tsdf_pipeline.data.attributes import STARGAN_ATTRS
from tsdf_pipeline.models import build_generator, save_generator

SIZE = 32
ATTRS = list(STARGAN_ATTRS)
FILES = {"stargan": "200000-G.ckpt", "attentiongan": "200000-G.ckpt", "attgan": "weights.199.pth",
         "hisd": "gen_00600000.pt"}


def configs(size: int = SIZE) -> dict[str, dict[str, Any]]:
    """Generator configs of the tiny victims at ``size`` px."""
    return {
        "stargan": {"conv_dim": 8, "c_dim": 5, "repeat_num": 1},
        "attentiongan": {"conv_dim": 8, "c_dim": 5, "repeat_num": 1},
        "attgan": {"enc_dim": 8, "enc_layers": 3, "dec_dim": 8, "dec_layers": 3, "n_attrs": 5, "img_size": size},
        "hisd": {"new_size": size, "style_dim": 16, "noise_dim": 8, "encoder": [8, 16, 16], "decoder": [16, 16, 8],
                 "extractors": [8, 16, 16], "translators": [8, 8, 8], "mappers_pre": [16, 16],
                 "mappers_post": [16, 16]},
    }


def save_tiny_checkpoints(folder: Path, seed: int = 0, size: int = SIZE) -> dict[str, Path]:
    """One random tiny generator per arch under ``folder/<arch>/<official file name>``."""
    paths = {}
    for i, (arch, config) in enumerate(configs(size).items()):
        torch.manual_seed(seed + i)
        paths[arch] = save_generator(arch, build_generator(arch, **config), folder / arch / FILES[arch])
    return paths


def model_loading_params(reference: Path, ensemble: list[str] | None = None, size: int = SIZE) -> dict[str, Any]:
    """``model_loading`` parameters for the tiny victims; ``reference`` is HiSD's reference image."""
    options: dict[str, dict[str, Any]] = {
        "stargan": {"attrs": ATTRS, "image_size": size}, "attentiongan": {"attrs": ATTRS, "image_size": size},
        "attgan": {"attrs": ATTRS}, "hisd": {"reference": str(reference), "reference_crop": 170, "tag": 0},
    }
    return {"ensemble": ensemble or list(FILES), "validation_images": 2,
            "victims": {a: {"config": c, "options": options[a]} for a, c in configs(size).items()}}


def catalog_overrides(paths: dict[str, Path]) -> dict[str, Any]:
    """conf/local catalog entries pointing the checkpoint datasets at ``paths``."""
    return {f"{arch}_checkpoint": {"type": "tsdf_pipeline.datasets.CheckpointDataset", "filepath": str(path),
                                   "source": f"tiny test {arch}"} for arch, path in paths.items()}
