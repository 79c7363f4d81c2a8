"""Stage 1 and every baseline through the ``interruption`` and ``evaluation`` pipelines on a tiny config."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from tests.celeba_factory import make_celeba
from tests.kedro_project import make_project, run_project
from tests.tiny_models import SIZE, catalog_overrides, model_loading_params, save_tiny_checkpoints
from tsdf_pipeline.defense.cmua_search import score_factors as real_score_factors

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
    assert "LPIPS: unavailable (no weights configured" in summary and "fid" not in set(table["kind"])
    figures = list((project / "data/08_reporting/interruption_figures").glob("*/*/*.png"))
    assert any(f.name == "examples_tsdf_hisd.png" for f in figures) and any(f.name == "bars_attgan.png" for f in figures)

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert "tsdf.stargan.sr_mask" in run.data.metrics and "cmua.watermark_psnr" in run.data.metrics
    assert "tsdf.attgan.jpeg75.sr_mask" in run.data.metrics
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"interruption_summary", "interruption_figures", "model_cards"} <= artifacts


def test_cmua_factor_search_feeds_cmua_logs_its_trials_and_resumes(tmp_path, monkeypatch):
    root, _ = make_celeba(tmp_path / "celeba", n=8)
    paths = save_tiny_checkpoints(tmp_path / "models")
    search = {"trials": 3, "batch_size": 2, "eval_images": 2, "startup_trials": 2, "low": 0.5, "high": 5.0, "seed": 3}
    params = {
        "data_ingestion": {"root": str(root), "image_size": SIZE, "optimisation": {"split": "train", "count": 4},
                           "evaluation": {"split": "test", "count": 2}, "training": {"split": "train", "start": 0}},
        "model_loading": model_loading_params(root / "img_align_celeba" / "000001.jpg"),
        "interruption": {"methods": ["cmua"], "checkpoint_dir": str(tmp_path / "ckpt"),
                         "cmua": {"epochs": 1, "batch_size": 4, "iterations": 1, **FAST}, "cmua_search": search},
    }
    project = make_project(tmp_path, params, catalog_overrides(paths))
    run_project(project, monkeypatch, to_nodes=["run_interruption_methods"])

    def latest(pattern: str) -> Path:
        return sorted((project / pattern).glob("*/*"))[-1]

    chosen = json.loads(latest("data/07_model_output/cmua_factors.json").read_text())
    trials = pd.read_csv(latest("data/08_reporting/cmua_search_trials.csv"))
    assert chosen["searched"] and len(trials) == 3
    archs = {"stargan", "attentiongan", "attgan", "hisd"}
    assert set(chosen["factors"]) >= archs and all(0.5 <= chosen["factors"][a] <= 5.0 for a in archs)
    best = trials.loc[trials["score"].idxmax()]
    assert chosen["score"] == best["score"] and all(chosen["factors"][a] == best[f"factor_{a}"] for a in archs)
    perturbations = torch.load(latest("data/07_model_output/perturbations.pt"), weights_only=True)
    assert perturbations["cmua"]["config"]["factors"] == str(chosen["factors"])
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert "interruption.cmua_search.best_score" in run.data.metrics

    # One more trial wanted: the study resumes with its three completed trials and runs only the fourth.
    from tsdf_pipeline.pipelines.interruption import nodes

    scored = []
    monkeypatch.setattr(nodes, "score_factors", lambda *a, **k: scored.append(a[3]) or real_score_factors(*a, **k))
    run_project(project, monkeypatch, to_nodes=["run_interruption_methods"],
                runtime_params={"interruption": {"cmua_search": {"trials": 4}}})
    more = pd.read_csv(latest("data/08_reporting/cmua_search_trials.csv"))
    assert len(more) == 4 and len(scored) == 1
    pd.testing.assert_frame_equal(more.iloc[:3], trials)


def test_cmua_factor_search_is_skipped_when_off_or_cmua_is_not_run(caplog):
    from tsdf_pipeline.pipelines.interruption.nodes import search_cmua_factors

    params = {"methods": ["tsdf"], "checkpoint_dir": "unused", "cmua": {"factors": {"stargan": 2.0}},
              "cmua_search": {"trials": 5}}
    chosen, trials, metrics = search_cmua_factors([], {}, params)  # neither victims nor images are touched
    assert chosen == {"factors": {"stargan": 2.0}, "searched": False, "score": None}
    assert trials.empty and metrics == {} and "not in interruption.methods" in caplog.text
    params |= {"methods": ["cmua"], "cmua_search": {"trials": 0}}
    assert search_cmua_factors([], {}, params)[0]["searched"] is False


def test_per_target_pgd_is_stored_evaluated_and_checked_against_the_evaluation_targets(tmp_path, monkeypatch):
    """``interruption.pgd.mode: per_target`` (Ruiz's per-class attack) through both stages; its targets must be
    the evaluation's."""
    root, _ = make_celeba(tmp_path / "celeba", n=10)
    paths = save_tiny_checkpoints(tmp_path / "models")
    params = {
        "data_ingestion": {"root": str(root), "image_size": SIZE, "optimisation": {"split": "train", "count": 2},
                           "evaluation": {"split": "test", "count": 2}, "training": {"split": "train", "start": 0}},
        "model_loading": model_loading_params(root / "img_align_celeba" / "000001.jpg", ensemble=["stargan"]),
        "interruption": {"methods": ["pgd"], "checkpoint_dir": str(tmp_path / "ckpt"),
                         "pgd": {"iterations": 1, "targets": "all", "mode": "per_target", **FAST}},
        "evaluation": {"methods": None, "batch_size": 2, "target_mode": "all", "purifications": ["none"],
                       "examples": 1, "device": "cpu"},
    }
    project = make_project(tmp_path, params, catalog_overrides(paths))
    run_project(project, monkeypatch, to_nodes=["evaluate_interruption"])
    entry = torch.load(next((project / "data/07_model_output/perturbations.pt").glob("*/*.pt")),
                       weights_only=True)["pgd"]
    assert entry["kind"] == "per_target" and entry["w"]["stargan"].shape == (6, 2, 3, SIZE, SIZE)
    assert entry["targets"]["stargan"][0] == "recon" and len(entry["image_ids"]) == 2
    table = pd.read_csv(next((project / "data/08_reporting/interruption_metrics.csv").glob("*/*.csv")))
    assert len(table[(table["kind"] == "interruption") & (table["target"] != "all")]) == 6
    assert int(table[table["kind"] == "watermark"]["n_samples"].iloc[0]) == 2 * 6

    with pytest.raises(ValueError, match=r"pgd: per-target perturbations for stargan were made for the targets "
                                         r"\[.recon., .*\], the evaluation \(target_mode 'train'\) edits with"):
        run_project(project, monkeypatch, to_nodes=["evaluate_interruption"],
                    runtime_params={"evaluation": {"target_mode": "train"}})
