"""Kedro project settings: hooks, config loader resolvers."""

from __future__ import annotations

import os
from pathlib import Path

from tsdf_pipeline.hooks import MlflowExtrasHook, SeedHook


def _project_root() -> Path:
    """The Kedro project folder that holds the current working directory (falls back to the cwd)."""
    from kedro.utils import find_kedro_project

    return find_kedro_project(Path.cwd()) or Path.cwd()


def tracking_uri() -> str:
    """MLflow tracking URI: ``$MLFLOW_TRACKING_URI`` if set, else a sqlite store at the project root.

    mlflow >= 3.13 refuses the ``./mlruns`` file store that kedro-mlflow falls back to, hence sqlite.
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(_project_root() / 'mlflow.db').as_posix()}"


HOOKS = (SeedHook(), MlflowExtrasHook())

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "custom_resolvers": {"tracking_uri": tracking_uri},
    # conf/celeba overrides only the keys it names (deep merge over conf/base)
    "merge_strategy": {"parameters": "soft", "catalog": "soft"},
}
