"""``evaluation.perceptual``: the user's LPIPS / FID backbone weights, loaded when configured (else unavailable)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tsdf_pipeline.metrics.evaluate_interruption import PerceptualModels
from tsdf_pipeline.metrics.fid import load_fid_inception
from tsdf_pipeline.metrics.lpips import load_lpips
from tsdf_pipeline.models.checkpoints import CheckpointError
from tsdf_pipeline.models.ensemble import file_sha256

KEYS = ("lpips_backbone", "lpips_linear", "fid_inception")


def _describe(label: str, paths: dict[str, str]) -> str:
    files = "; ".join(f"{key} {path} (sha256 {file_sha256(path)[:12]})" for key, path in paths.items())
    return f"{label}: computed with {files}."


def load_perceptual(params: dict[str, Any] | None, device: torch.device) -> tuple[PerceptualModels, list[str]]:
    """The models ``evaluation.perceptual`` names (``null`` paths: not computed) on ``device``, and one summary
    line per metric saying whether it was computed and from which files.

    Raises ``ValueError`` for an unknown key or only one of the two LPIPS files, and ``CheckpointError`` naming
    the parameter and the file when a weights file is missing or does not fit.
    """
    params = dict(params or {})
    unknown = sorted(set(params) - set(KEYS))
    if unknown:
        raise ValueError(f"evaluation.perceptual: unknown key(s) {unknown}; allowed: {list(KEYS)}")
    paths = {k: str(params[k]) for k in KEYS if params.get(k) is not None}
    lpips_keys = [k for k in ("lpips_backbone", "lpips_linear") if k in paths]
    if len(lpips_keys) == 1:
        raise ValueError(f"evaluation.perceptual: LPIPS needs both lpips_backbone (torchvision's AlexNet file) and "
                         f"lpips_linear (the lpips package's weights/v0.1/alex.pth); only {lpips_keys[0]} is set")

    def load(key: str, loader: Callable[..., torch.nn.Module], *args: str) -> torch.nn.Module:
        try:
            return loader(*args).to(device)
        except CheckpointError as err:
            raise type(err)(f"evaluation.perceptual.{key}: {err}") from err

    lpips = fid = None
    lines = []
    if lpips_keys:
        lpips = load("lpips_backbone / lpips_linear", load_lpips, paths["lpips_backbone"], paths["lpips_linear"])
        lines.append(_describe("LPIPS (v0.1, AlexNet)", {k: paths[k] for k in lpips_keys}))
    else:
        lines.append("LPIPS: unavailable (no weights configured: evaluation.perceptual.lpips_backbone and "
                     "lpips_linear; docs/weights.md).")
    if "fid_inception" in paths:
        fid = load("fid_inception", load_fid_inception, paths["fid_inception"])
        lines.append(_describe("FID (pytorch-fid's Inception, pool3)", {"fid_inception": paths["fid_inception"]}))
    else:
        lines.append("FID: unavailable (no weights configured: evaluation.perceptual.fid_inception; "
                     "docs/weights.md).")
    return PerceptualModels(lpips=lpips, fid=fid), lines
