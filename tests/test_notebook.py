"""``notebooks/compare_methods.ipynb`` executed headless against a tiny project run in ``tmp_path``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import nbformat
from nbclient import NotebookClient

from tests.celeba_factory import make_celeba
from tests.kedro_project import PROJECT, make_project, run_project
from tests.tiny_models import SIZE, catalog_overrides, model_loading_params, save_tiny_checkpoints

NOTEBOOK = PROJECT / "notebooks" / "compare_methods.ipynb"


def tiny_stage1_params(tmp_path: Path, root: Path, methods: list[str], ensemble: list[str]) -> dict[str, Any]:
    """conf/local parameters of a tiny default run (tests/test_pipeline_stage1.py's sizes, fewer methods)."""
    fast = {"device": "cpu", "progress": False}
    return {
        "data_ingestion": {"root": str(root), "image_size": SIZE, "optimisation": {"split": "train", "count": 4},
                           "evaluation": {"split": "test", "count": 3}, "training": {"split": "train", "start": 0}},
        "model_loading": model_loading_params(root / "img_align_celeba" / "000001.jpg", ensemble),
        "interruption": {"methods": methods, "checkpoint_dir": str(tmp_path / "ckpt"),
                         "tsdf": {"epochs": 1, "batch_size": 2, **fast}, "noise": {"epsilon": 0.05, "seed": 1}},
        "evaluation": {"methods": None, "batch_size": 3, "target_mode": "all", "purifications": ["none", "jpeg75"],
                       "examples": 2, "device": "cpu"},
    }


def outputs_of(nb: nbformat.NotebookNode) -> tuple[str, int]:
    """All text/plain and text/html outputs joined, and the number of PNG outputs."""
    texts, pngs = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            texts += [data.get("text/plain", ""), data.get("text/html", ""), data.get("text/markdown", "")]
            pngs += "image/png" in data
    return "\n".join(texts), pngs


def test_notebook_compares_the_methods_of_the_latest_run(tmp_path, monkeypatch):
    root, _ = make_celeba(tmp_path / "celeba", n=10)
    paths = save_tiny_checkpoints(tmp_path / "models")
    params = tiny_stage1_params(tmp_path, root, ["tsdf", "noise"], ["stargan", "attgan"])
    project = make_project(tmp_path, params, catalog_overrides(paths))
    # Only what the notebook reads (and its upstream stages); also sets MLFLOW_TRACKING_URI for the kernel.
    run_project(project, monkeypatch, to_outputs=["interruption_table", "interruption_figures"])
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")

    monkeypatch.setenv("TSDF_PROJECT_PATH", str(project))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    text, pngs = outputs_of(nb)
    assert f"Project: `{project}`" in text
    assert all(name in text for name in ("tsdf", "noise", "stargan", "attgan", "jpeg75"))
    assert "examples_tsdf_" in text and pngs >= 2  # the example grid and the SR_mask/PSNR plot
    assert run.info.run_id in text and run.info.run_id[:8] in text  # runs table and per-run SR_mask table
