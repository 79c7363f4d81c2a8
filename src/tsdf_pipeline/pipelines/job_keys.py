"""Stable names for resumable jobs (Kedro layer)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def job_name(name: str, *parts: Any) -> str:
    """``<name>-<hash of parts>``: the same job (same config, victims, data) gets the same name."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return f"{name}-{hashlib.sha256(blob).hexdigest()[:16]}"


def job_checkpoint(folder: str | Path, name: str, *parts: Any) -> Path:
    """``folder/<name>-<hash>.pt``: the same job (same config, victims, data) finds its checkpoint again,
    so a killed ``kedro run`` resumes where it stopped; any change starts a fresh one."""
    return Path(folder) / f"{job_name(name, *parts)}.pt"

