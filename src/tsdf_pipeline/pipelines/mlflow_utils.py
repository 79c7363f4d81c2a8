"""Helpers shaping node outputs for kedro-mlflow datasets (Kedro layer)."""

from __future__ import annotations

import math
from collections.abc import Mapping


def as_mlflow_metrics(values: Mapping[str, float], step: int = 0) -> dict[str, dict[str, float]]:
    """``{name: value}`` → the ``{name: {"value", "step"}}`` form of ``MlflowMetricsHistoryDataset``.

    Non-finite values (e.g. an undefined ratio) are left out: MLflow cannot plot them.
    """
    return {k: {"value": float(v), "step": step} for k, v in values.items() if math.isfinite(float(v))}
