"""Stage 1 and every baseline through the ``interruption`` and ``evaluation`` pipelines on a tiny config."""

from __future__ import annotations

import mlflow
import pandas as pd
import torch

from tests.celeba_factory import make_celeba
from tests.kedro_project import make_project, run_project
from tests.tiny_models import SIZE, catalog_overrides, model_loading_params, save_tiny_checkpoints

FAST = {"device": "cpu", "progress": False}


def test_interruption_and_evaluation_end_to_end(tmp_path, monkeypatch):
    root, _ = make_celeba(tmp_path / "celeba", n=10)
    paths = save_tiny_checkpoints(tmp_path / "models")
    params = {
        "data_ingestion": {"root": str(root), "image_size": SIZE, "optimisation": {"split": "train", "count": 4},
                           "evaluation": {"split": "test", "count": 3}, "training": {"split": "train", "start": 0}},
        "model_loading": model_loading_params(root / "img_align_celeba" / "000001.jpg"),
        "interruption": {
            "methods": ["tsdf", "cmua", "pgd", "noise"], "checkpoint_dir": str(tmp_path / "ckpt"),
            "tsdf": {"epochs": 1, "batch_size": 2, **FAST}, "cmua": {"epochs": 1, "batch_size": 2, "iterations": 2,
                                                                      **FAST},
            "pgd": {"iterations": 2, **FAST}, "noise": {"epsilon": 0.05, "seed": 1},
        },
        "evaluation": {"methods": None, "batch_size": 3, "target_mode": "all", "purifications": ["none", "jpeg75"],
                       "examples": 2, "device": "cpu"},
    }
    project = make_project(tmp_path, params, catalog_overrides(paths))
    run_project(project, monkeypatch, to_nodes=["evaluate_interruption"])

    perturbations = torch.load(next((project / "data/07_model_output/perturbations.pt").glob("*/*.pt")),
                               weights_only=True)
    assert perturbations["tsdf"]["w"].shape == (1, 3, SIZE, SIZE)
    assert perturbations["pgd"]["kind"] == "per_image" and perturbations["pgd"]["w"].shape == (3, 3, SIZE, SIZE)
    for entry in perturbations.values():
        assert entry["w"].abs().max() <= 0.05 + 1e-6
    table = pd.read_csv(next((project / "data/08_reporting/interruption_metrics.csv").glob("*/*.csv")))
    pooled = table[(table["kind"] == "interruption") & (table["target"] == "all")]
    assert set(pooled["method"]) == {"tsdf", "cmua", "pgd", "noise"}
    assert set(pooled["victim"]) == {"stargan", "attentiongan", "attgan", "hisd"}
    assert set(pooled["purification"]) == {"none", "jpeg75"}
    assert (table[table["kind"] == "watermark"]["watermark_linf"] <= 0.05 + 2 / 255).all()
    summary = next((project / "data/08_reporting/interruption_summary.md").glob("*/*.md")).read_text()
    assert "| tsdf | stargan |" in summary
    figures = list((project / "data/08_reporting/interruption_figures").glob("*/*/*.png"))
    assert any(f.name == "examples_tsdf_hisd.png" for f in figures) and any(f.name == "bars_attgan.png" for f in figures)

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert "tsdf.stargan.sr_mask" in run.data.metrics and "cmua.watermark_psnr" in run.data.metrics
    assert "tsdf.attgan.jpeg75.sr_mask" in run.data.metrics
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"interruption_summary", "interruption_figures", "model_cards"} <= artifacts
