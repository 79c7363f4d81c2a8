"""KedroSession runs of the ingestion stage on a miniature CelebA in tmp_path."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
import torch

from tests.celeba_factory import make_celeba
from tests.kedro_project import make_project, run_project


@pytest.fixture
def project(tmp_path):
    root, _ = make_celeba(tmp_path / "celeba", n=12)
    return make_project(tmp_path, {"data_ingestion": {
        "root": str(root), "image_size": 32,
        "optimisation": {"split": "train", "count": 4}, "evaluation": {"split": "test", "count": 50},
        "training": {"split": "train", "start": 1, "count": 3},
    }})


def test_ingestion_writes_versioned_outputs_and_one_mlflow_run(project, monkeypatch):
    run_project(project, monkeypatch, pipeline="data_ingestion")
    opt_files = list((project / "data/05_model_input/optimisation_set.pt").glob("*/optimisation_set.pt"))
    assert len(opt_files) == 1  # one timestamped version
    opt = torch.load(opt_files[0], weights_only=True)
    assert opt["images"].shape == (4, 3, 32, 32) and opt["image_ids"][0] == "000001.jpg"
    ev = torch.load(next((project / "data/05_model_input/evaluation_set.pt").glob("*/*.pt")), weights_only=True)
    assert len(ev["image_ids"]) == 5  # asked for 50, the data holds 5 test images
    table = pd.read_parquet(next((project / "data/02_intermediate/celeba_attributes.parquet").glob("*/*.parquet")))
    assert table.shape == (12, 42)
    report = json.loads(next((project / "data/08_reporting/ingestion_report.json").glob("*/*.json")).read_text())
    assert report["evaluation"]["requested"] == 50 and report["evaluation"]["decoded"] == 5
    training = torch.load(next((project / "data/05_model_input/training_set.pt").glob("*/*.pt")), weights_only=True)
    assert training["image_ids"] == ["000002.jpg", "000003.jpg", "000004.jpg"]  # start 1 of the train split

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.metrics["ingestion.optimisation.images"] == 4
    assert run.data.metrics["ingestion.evaluation.images_per_s"] > 0
    assert run.data.tags["kedro_session_id"] == opt_files[0].parent.name  # names the data versions
    assert run.data.params["data_ingestion.image_size"] == "32"
