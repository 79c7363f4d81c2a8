"""Victim ensembles described by plain specs (arch, checkpoint path + sha256, config, victim options).

A spec is JSON-friendly, so the validated ensemble is a small versioned artifact that every later stage
rebuilds from the same checkpoint files (the sha256 is checked, so a changed file is never used silently).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from tsdf_pipeline.data.images import celeba_transform
from tsdf_pipeline.models.checkpoints import CheckpointError
from tsdf_pipeline.models.registry import load_generator
from tsdf_pipeline.models.victims import Victim, make_victim


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_reference_image(path: str | Path, image_size: int, crop_size: int | None = None) -> torch.Tensor:
    """A HiSD reference image as ``[1,3,S,S]`` in [-1,1]: ``[CenterCrop(crop)] → Resize(S)`` (CMUA: no crop)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HiSD reference image not found: {path}")
    with Image.open(path) as im:
        x = celeba_transform(image_size, crop_size)(im.convert("RGB"))
    if x.shape[-2] != x.shape[-1]:
        raise ValueError(f"{path}: reference must be square after preprocessing, got {list(x.shape)}; "
                         "set reference_crop to crop it")
    return x.unsqueeze(0)


def _present(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """``values`` without its ``None`` entries (``None`` = keep the default)."""
    return {k: v for k, v in (values or {}).items() if v is not None}


def load_victim(spec: Mapping[str, Any], *, verify_sha256: bool = True) -> Victim:
    """Build one victim from ``spec``: ``{name, arch, checkpoint, sha256?, config, options}``.

    ``options`` are :func:`make_victim` options; for HiSD ``reference`` is an image path (with optional
    ``reference_crop``), loaded at the generator's resolution. ``null`` config/option values mean the default.
    """
    path = Path(spec["checkpoint"])
    expected = spec.get("sha256")
    if verify_sha256 and expected and path.is_file() and file_sha256(path) != expected:
        raise CheckpointError(f"{path}: sha256 differs from the one recorded when the ensemble was validated "
                              f"({expected[:12]}...); re-run the model_loading stage")
    generator = load_generator(spec["arch"], path, **_present(spec.get("config")))
    options = _present(spec.get("options"))
    options.setdefault("name", spec.get("name", spec["arch"]))
    if spec["arch"] == "hisd":
        size = int(generator.image_size)
        options["reference"] = load_reference_image(options["reference"], size, options.pop("reference_crop", None))
    return make_victim(spec["arch"], generator, **options)


def load_ensemble(specs: Sequence[Mapping[str, Any]], *, device: str | torch.device = "cpu") -> list[Victim]:
    """All victims of ``specs``, moved to ``device``."""
    return [load_victim(spec).to(device) for spec in specs]
