"""Kedro hooks: per-node seeding and MLflow run extras (Kedro layer only)."""

from __future__ import annotations

import logging
import platform
import random
import zlib
from pathlib import Path
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
    """Tags the MLflow run with the Kedro session id and software versions, and logs report files.

    A catalog entry with ``metadata: {mlflow_artifact: true}`` is logged as an MLflow artifact (under its
    dataset name) right after it is saved, keeping its own versioned copy under ``data/``. (kedro-mlflow's
    ``MlflowArtifactDataset`` refuses a versioned inner dataset in Kedro 1.7.)
    """

    @hook_impl
    def after_catalog_created(self, catalog: Any) -> None:
        self._catalog = catalog

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

    @hook_impl
    def after_dataset_saved(self, dataset_name: str) -> None:
        dataset = self._catalog.get(dataset_name)
        if not (getattr(dataset, "metadata", None) or {}).get("mlflow_artifact"):
            return
        import mlflow

        if mlflow.active_run() is None:
            return
        versioned = getattr(dataset, "_version", None)
        path = dataset._get_versioned_path(dataset.resolve_save_version()) if versioned else dataset._filepath
        if Path(str(path)).is_dir():  # e.g. MatplotlibWriter saving a dict of figures
            mlflow.log_artifacts(str(path), artifact_path=dataset_name)
        else:
            mlflow.log_artifact(str(path), artifact_path=dataset_name)
