"""Kedro hooks: per-node seeding and MLflow run extras (Kedro layer only)."""

from __future__ import annotations

import logging
import platform
import random
import zlib
from typing import Any

import numpy as np
import torch
from kedro.framework.hooks import hook_impl

log = logging.getLogger(__name__)


def node_seed(seed: int, node_name: str) -> int:
    """Seed of one node: a stable function of ``params:seed`` and the node's name (not of run order)."""
    return (int(seed) * 1_000_003 + zlib.crc32(node_name.encode())) % (2**31 - 1)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class SeedHook:
    """Seeds every node from ``params:seed`` so that reruns and ``--from-nodes`` reproduce."""

    def __init__(self) -> None:
        self._seed = 0

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._seed = int(context.params.get("seed", 0))

    @hook_impl
    def before_node_run(self, node: Any) -> None:
        seed_everything(node_seed(self._seed, node.name))


class MlflowExtrasHook:
    """Tags the MLflow run that kedro-mlflow opened with the Kedro session id and the software versions."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        self._tags = {
            "kedro_session_id": str(run_params.get("session_id") or run_params.get("run_id")),
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "cuda_available": str(torch.cuda.is_available()),
        }
        self._tagged = False

    @hook_impl
    def before_node_run(self) -> None:
        # kedro-mlflow starts its run in its own before_pipeline_run; hook order is not guaranteed,
        # so tag on the first node, when the run is certainly active.
        if getattr(self, "_tagged", True):
            return
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.set_tags(self._tags)
            self._tagged = True
