"""Device selection shared by every stage (core: torch only)."""

from __future__ import annotations

import torch


def resolve_device(requested: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` → CUDA when available, else CPU; otherwise the device asked for, which must exist."""
    if requested is None or str(requested) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available (use 'auto' or 'cpu')")
    return device
