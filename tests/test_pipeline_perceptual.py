"""``evaluation.perceptual``: LPIPS and FID through the evaluation pipeline when the user gives weight files."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from tests.celeba_factory import make_celeba
from tests.kedro_project import make_project, run_project
from tests.tiny_models import catalog_overrides, model_loading_params, save_tiny_checkpoints
from tsdf_pipeline.metrics.fid import FIDInception
from tsdf_pipeline.metrics.lpips import LPIPS
from tsdf_pipeline.models.checkpoints import CheckpointNotFoundError
from tsdf_pipeline.pipelines.evaluation.perceptual import load_perceptual


def weight_files(folder: Path) -> dict[str, str]:
    """Random-init weights in the official layouts (torchvision AlexNet, lpips' alex.pth, pytorch-fid's file)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    lpips = LPIPS()
    files = {"lpips_backbone": folder / "alexnet-owt-7be5be79.pth", "lpips_linear": folder / "alex.pth",
             "fid_inception": folder / "pt_inception-2015-12-05-6726825d.pth"}
    torch.save({f"features.{k}": v for k, v in lpips.features.state_dict().items()}, files["lpips_backbone"])
    torch.save({f"lin{i}.model.1.weight": lin.weight for i, lin in enumerate(lpips.lins)}, files["lpips_linear"])
    torch.save(FIDInception().net.state_dict(), files["fid_inception"])
    return {k: str(v) for k, v in files.items()}


def test_lpips_and_fid_reach_the_table_summary_and_mlflow(tmp_path, monkeypatch):
    root, _ = make_celeba(tmp_path / "celeba", n=10)
    paths = save_tiny_checkpoints(tmp_path / "models")
    params = {
        "data_ingestion": {"root": str(root), "image_size": 32, "optimisation": {"split": "train", "count": 2},
                           "evaluation": {"split": "test", "count": 2}, "training": {"split": "train", "start": 0}},
        "model_loading": model_loading_params(root / "img_align_celeba" / "000001.jpg", ensemble=["stargan"]),
        "interruption": {"methods": ["noise"], "checkpoint_dir": str(tmp_path / "ckpt")},
        "evaluation": {"methods": None, "batch_size": 2, "target_mode": "all", "purifications": ["none", "blur1"],
                       "examples": 1, "device": "cpu", "perceptual": weight_files(tmp_path / "metric_weights")},
    }
    project = make_project(tmp_path, params, catalog_overrides(paths))
    run_project(project, monkeypatch, to_nodes=["evaluate_interruption"])

    table = pd.read_csv(next((project / "data/08_reporting/interruption_metrics.csv").glob("*/*.csv")))
    inter = table[table["kind"] == "interruption"]
    assert inter["lpips_out"].notna().all() and (inter["lpips_out"] > 0).all()
    (fid,) = table[table["kind"] == "fid"].itertuples(index=False)
    assert fid.method == "noise" and fid.victim == "stargan" and fid.n_samples == 2 * 6 and fid.fid_out > 0
    summary = next((project / "data/08_reporting/interruption_summary.md").glob("*/*.md")).read_text()
    assert "LPIPS (v0.1, AlexNet): computed with lpips_backbone" in summary and "| noise | stargan |" in summary
    assert "## FID between the clean edits" in summary and "FID (pytorch-fid's Inception, pool3): computed" in summary
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    for name in ("noise.stargan.lpips_out", "noise.stargan.blur1.lpips_out", "noise.watermark_lpips",
                 "noise.stargan.fid_out"):
        assert name in run.data.metrics, name


def test_perceptual_parameters_are_checked(tmp_path):
    cpu = torch.device("cpu")
    models, lines = load_perceptual(None, cpu)
    assert models.lpips is None and models.fid is None
    assert lines[0].startswith("LPIPS: unavailable") and lines[1].startswith("FID: unavailable")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lpips'\]"):
        load_perceptual({"lpips": "x.pth"}, cpu)
    with pytest.raises(ValueError, match="only lpips_backbone is set"):
        load_perceptual({"lpips_backbone": "x.pth", "lpips_linear": None}, cpu)
    with pytest.raises(CheckpointNotFoundError, match=r"evaluation.perceptual.fid_inception: .*nowhere.pth"):
        load_perceptual({"fid_inception": str(tmp_path / "nowhere.pth")}, cpu)
