"""A throw-away copy of this Kedro project in ``tmp_path``, so tests never touch ``data/`` or ``mlflow.db``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import mlflow
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

PROJECT = Path(__file__).resolve().parents[1]


def make_project(tmp_path: Path, local_params: dict[str, Any] | None = None,
                 local_catalog: dict[str, Any] | None = None) -> Path:
    """Copy ``pyproject.toml`` and ``conf/`` into ``tmp_path/project``; local params/catalog go to conf/local."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(PROJECT / "pyproject.toml", project)
    shutil.copytree(PROJECT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    (project / "data").mkdir()
    (project / "src").mkdir()  # bootstrap_project checks it exists; the package itself is installed
    if local_params:
        (project / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(local_params))
    if local_catalog:
        (project / "conf" / "local" / "catalog.yml").write_text(yaml.safe_dump(local_catalog))
    return project


def run_project(project: Path, monkeypatch, pipeline: str | None = None, env: str | None = None,
                runtime_params: dict[str, Any] | None = None, **kwargs) -> dict:
    """``kedro run [--env ENV] [--params …]`` in ``project`` with an MLflow sqlite store inside it; returns the
    run's free outputs."""
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{(project / 'mlflow.db').as_posix()}")
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "true")
    bootstrap_project(project)
    try:
        with KedroSession.create(project_path=project, env=env, runtime_params=runtime_params) as session:
            return session.run(pipeline_names=[pipeline] if pipeline else None, **kwargs)
    finally:
        while (run := mlflow.active_run()) is not None:  # kedro-mlflow leaves a failed run active
            status = mlflow.MlflowClient().get_run(run.info.run_id).info.status
            mlflow.end_run("FAILED" if status == "RUNNING" else status)
