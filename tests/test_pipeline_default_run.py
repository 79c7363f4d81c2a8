"""The whole default chain (ingestion → victims → stage 1 → stage 2 → attacker → evaluation) on a tiny config,
with the real demo faces (MTCNN must find faces), and the attacker branches' isolation."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
import torch

from tests.kedro_project import PROJECT, make_project, run_project
from tests.tiny_models import catalog_overrides, model_loading_params, save_tiny_checkpoints
from tsdf_pipeline.datasets import PhotoFolderDataset
from tsdf_pipeline.pipelines.attacker_retraining.nodes import collect_photos, prepare_attacker_data, retrain

SIZE = 64
DEMO = PROJECT / "data/01_raw/demo_celeba"
TINY_STARGAN_RECIPE = {"batch_size": 2, "g_conv_dim": 8, "d_conv_dim": 8, "g_repeat_num": 1, "d_repeat_num": 4,
                       "num_iters": 2, "num_iters_decay": 0}
FAST = {"device": "cpu", "progress": False}


def _attacker(tmp_path, branches):
    return {"branches": branches, "pool_count": 6, "fraction": 1.0, "seed": 0, "format": "png", "jpeg_quality": None,
            "detector": "mtcnn", "score_threshold": 0.5, "margin": 0.2,
            "out_size": SIZE, "batch_size": 6, "victim": "stargan", "min_crops": 2, "work_dir": str(tmp_path / "work"),
            "overrides": {"num_iters": 2, "checkpoint_every": 2, "sample_every": 0, "log_every": 1, "progress": False}}


def _recipes():
    return {"common": {"image_size": SIZE, "seed": 0}, "stargan": TINY_STARGAN_RECIPE}


@pytest.fixture
def project(tmp_path):
    paths = save_tiny_checkpoints(tmp_path / "models", size=SIZE)
    params = {
        "data_ingestion": {"root": str(DEMO), "image_size": SIZE, "optimisation": {"split": "train", "count": 4},
                           "evaluation": {"split": "test", "count": 3}, "training": {"split": "train", "start": 4, "count": 8}},
        "model_loading": model_loading_params(DEMO / "img_align_celeba" / "000003.jpg", size=SIZE),
        "interruption": {"methods": ["tsdf", "noise"], "checkpoint_dir": str(tmp_path / "ckpt"),
                         "tsdf": {"epochs": 1, "batch_size": 2, **FAST}, "noise": {"epsilon": 0.05, "seed": 1}},
        "poisoning": {"detectors": ["mtcnn"], "checkpoint_dir": str(tmp_path / "ckpt"), "epochs": 1, "steps": 2,
                      "device": "cpu"},
        "evaluation": {"methods": None, "batch_size": 3, "purifications": ["none"], "examples": 2,
                       "detection": {"detectors": ["mtcnn", "dlib_hog"],
                                     "perturbations": ["clean", "noise", "tsdf", "tsdf_w2"]}},
        "attacker_retraining": _attacker(tmp_path, ["clean", "noise", "tsdf", "tsdf_w2"]),
        "victim_training": _recipes(),
    }
    return make_project(tmp_path, params, catalog_overrides(paths))


def _latest(project, relative):
    return sorted((project / relative).glob("*/*"))[-1]


def test_default_chain_end_to_end(project, monkeypatch):
    run_project(project, monkeypatch)
    w2 = torch.load(_latest(project, "data/07_model_output/w2.pt"), weights_only=True)["w"]
    assert w2.shape == (1, 3, SIZE, SIZE) and w2.abs().max() <= 0.05 + 1e-6

    poisoning = pd.read_csv(_latest(project, "data/08_reporting/poisoning_metrics.csv"))
    detection = poisoning[poisoning["kind"] == "detection"]
    assert set(detection["perturbation"]) == {"clean", "noise", "tsdf", "tsdf_w2"}
    clean = detection[(detection["detector"] == "mtcnn") & (detection["perturbation"] == "clean")].iloc[0]
    assert clean["precision"] == 1 and clean["recall"] == 1 and clean["detection_rate_before"] > 0.5
    assert set(poisoning[poisoning["kind"] == "w2_vs_w1"]["victim"]) == {"stargan", "attentiongan", "attgan", "hisd"}

    photos = _latest(project, "data/03_primary/attacker_photos")  # the attacker's files: a versioned folder
    manifest = json.loads((photos / "manifest.json").read_text())["branches"]
    assert list(manifest) == ["clean", "noise", "tsdf", "tsdf_w2"] and len(list((photos / "tsdf").glob("*.png"))) == 6
    prep = pd.read_csv(_latest(project, "data/08_reporting/attacker_preparation.csv"))
    assert list(prep["branch"]) == ["clean", "noise", "tsdf", "tsdf_w2"] and (prep["kept"] >= 2).all()
    assert prep.set_index("branch").loc["clean", "crop_iou_mean"] == 1.0

    persistence = pd.read_csv(_latest(project, "data/08_reporting/persistence.csv"))
    disruption = persistence[persistence["kind"] == "disruption"]
    assert set(disruption["protection"]) == {"noise", "tsdf", "tsdf_w2"}
    assert set(disruption["phase"]) == {"before", "after", "after_clean"}
    report = _latest(project, "data/08_reporting/persistence.md").read_text()
    assert "| tsdf_w2 |" in report and "sr_mask_after_clean" in report

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert "persistence.tsdf.after.sr_mask" in run.data.metrics
    assert "detection.mtcnn.tsdf_w2.duq" in run.data.metrics
    assert "attacker.tsdf_w2.kept" in run.data.metrics


def test_branches_differ_only_in_the_protection(tmp_path, project, monkeypatch):
    """A branch whose protection is zero prepares the same crops and retrains to the same weights as clean; other
    crops under the same branch start a fresh fine-tuning job."""
    run_project(project, monkeypatch, pipeline="data_ingestion")
    training = torch.load(_latest(project, "data/05_model_input/training_set.pt"), weights_only=True)
    zero = {"kind": "universal", "w": torch.zeros(1, 3, SIZE, SIZE)}
    perturbations = {"noise": zero, "tsdf": {"kind": "universal", "w": torch.full((1, 3, SIZE, SIZE), 0.05)}}
    params = _attacker(tmp_path, ["clean", "noise", "tsdf"])
    registry = {"mtcnn": {"weights": None}}
    photos = PhotoFolderDataset(filepath=str(tmp_path / "photos"))  # the attacker's files, as the catalog keeps them
    photos.save(collect_photos(training, perturbations, zero, params))
    prepared, table, _, _ = prepare_attacker_data(photos.load(), training, params, registry)
    torch.testing.assert_close(prepared["noise"]["crops"], prepared["clean"]["crops"], rtol=0, atol=0)
    assert not torch.equal(prepared["tsdf"]["crops"], prepared["clean"]["crops"])
    ensemble = [{"name": "stargan", "arch": "stargan", "checkpoint": str(tmp_path / "models/stargan/200000-G.ckpt"),
                 "sha256": None, "config": {"conv_dim": 8, "c_dim": 5, "repeat_num": 1}, "options": {}}]
    models, _, _ = retrain({b: prepared[b] for b in ("clean", "noise")}, ensemble, params, _recipes())
    for key, value in models["models"]["clean"].items():
        torch.testing.assert_close(models["models"]["noise"][key], value, rtol=0, atol=0)
    # A changed protection gives the branch other crops: a new job in its own folder, not a refused resume.
    retrain({"noise": prepared["tsdf"]}, ensemble, params, _recipes())
    assert len(list((tmp_path / "work").glob("noise-*"))) == 2


def test_photos_of_other_images_are_refused_by_id(tmp_path):
    training = {"image_ids": ["000001.jpg", "000002.jpg"], "attrs": torch.zeros(2, 40)}
    photos = {"clean": {"images": torch.zeros(1, 3, 8, 8), "ids": ["000009.jpg"], "protected": torch.ones(1).bool()}}
    with pytest.raises(ValueError, match=r"branch 'clean': image ids \['000009.jpg'\] are not in the training"):
        prepare_attacker_data(photos, training, _attacker(tmp_path, ["clean"]), {"mtcnn": {"weights": None}})
