"""The ``victim_training`` pipeline on tiny recipes: four victims trained, versioned, logged, then resumed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.kedro_project import make_project, run_project
from tests.tiny_models import SIZE
from tsdf_pipeline.data.attributes import CELEBA_ATTRS
from tsdf_pipeline.models import ARCHS, load_generator
from tsdf_pipeline.pipelines.victim_training.nodes import train_victim

# tests/tiny_models.py generator sizes, as training recipes (conf/base recipe keys).
TINY_RECIPES: dict[str, dict[str, Any]] = {
    "stargan": {"batch_size": 4, "g_conv_dim": 8, "d_conv_dim": 8, "g_repeat_num": 1, "d_repeat_num": 2},
    "attentiongan": {"batch_size": 4, "g_conv_dim": 8, "d_conv_dim": 8, "g_repeat_num": 1, "d_repeat_num": 2},
    "attgan": {"batch_size": 4, "enc_dim": 8, "dec_dim": 8, "enc_layers": 3, "dec_layers": 3, "dis_dim": 8,
               "dis_fc_dim": 16, "dis_layers": 3},
    "hisd": {"batch_size": 2, "dis_channels": [8, 16, 16],
             "generator": {"style_dim": 16, "noise_dim": 8, "encoder": [8, 16, 16], "decoder": [16, 16, 8],
                           "extractors": [8, 16, 16], "translators": [8, 8, 8], "mappers_pre": [16, 16],
                           "mappers_post": [16, 16]}},
}


def training_set(n: int = 8) -> dict[str, Any]:
    """Random ``[n,3,SIZE,SIZE]`` images in [-1,1]; random attributes with exactly one of black/blond/brown hair."""
    g = torch.Generator().manual_seed(0)
    attrs = (torch.rand(n, 40, generator=g) > 0.5).float()
    hair = [CELEBA_ATTRS.index(h) for h in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")]
    attrs[:, hair] = 0
    attrs[torch.arange(n), torch.tensor(hair[:3]).repeat(n)[:n]] = 1
    return {"images": torch.rand(n, 3, SIZE, SIZE, generator=g) * 2 - 1, "attrs": attrs,
            "image_ids": [f"{i:06d}.jpg" for i in range(n)]}


def params(work_dir: Path, num_iters: int, victims: list[str]) -> dict[str, Any]:
    """conf/local parameters (merged over conf/base, whose arch blocks set num_iters: set it per arch too)."""
    common = {"image_size": SIZE, "seed": 0, "checkpoint_every": 2, "sample_every": 2, "log_every": 1,
              "n_samples": 2, "progress": False}
    recipes = {arch: {**recipe, "num_iters": num_iters} for arch, recipe in TINY_RECIPES.items()}
    return {"victim_training": {"victims": victims, "work_dir": str(work_dir), "device": "cpu", "common": common,
                                **recipes}}


def versions(project: Path, relative: str) -> list[Path]:
    """Every saved version of a versioned file, oldest first."""
    return sorted((project / relative).glob("*/*"))


def card(project: Path, arch: str) -> dict[str, Any]:
    return json.loads(versions(project, f"data/08_reporting/victim_training/{arch}_card.json")[-1].read_text())


def test_trains_every_victim_logs_to_mlflow_and_resumes_a_selected_one(tmp_path, monkeypatch):
    data = tmp_path / "training_set.pt"
    torch.save(training_set(), data)
    catalog = {"training_set": {"type": "tsdf_pipeline.datasets.TorchDataset", "filepath": str(data),
                                "versioned": False}}  # conf/local merges over the versioned base entry
    project = make_project(tmp_path, params(tmp_path / "work", 2, list(ARCHS)), catalog)
    run_project(project, monkeypatch, pipeline="victim_training")

    files = {"stargan": "200000-G.ckpt", "attentiongan": "200000-G.ckpt", "attgan": "weights.199.pth",
             "hisd": "gen_00600000.pt"}
    for arch in ARCHS:
        info = card(project, arch)
        assert info["steps"] == 2 and info["resumed_from"] is None and info["training_images"] == 8
        (checkpoint,) = versions(project, f"data/06_models/victim_training/{arch}/{files[arch]}")
        generator = load_generator(arch, checkpoint, **info["generator_config"])
        trained = load_generator(arch, Path(info["work_dir"]) / "generator.pt", **info["generator_config"])
        assert all(torch.equal(a, b) for a, b in zip(generator.state_dict().values(),
                                                     trained.state_dict().values(), strict=True))
        history = pd.read_csv(versions(project, f"data/08_reporting/victim_training/{arch}_history.csv")[-1])
        assert history["step"].tolist() == [1, 2] and set(history["arch"]) == {arch} and history.shape[1] > 3
        (samples,) = versions(project, f"data/08_reporting/victim_training/{arch}_samples.png")
        assert Image.open(samples).size[0] >= 2 * SIZE

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    client = mlflow.MlflowClient()
    for arch in ARCHS:
        terms = [c for c in pd.read_csv(versions(
            project, f"data/08_reporting/victim_training/{arch}_history.csv")[-1]).columns if c not in ("arch", "step")]
        for term in terms:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, f"victim_training.{arch}.{term}")]
            assert steps == [1, 2], (arch, term)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {f"victim_training_{arch}_{kind}" for arch in ARCHS for kind in ("card", "history", "samples")} <= artifacts

    # A longer recipe for StarGAN only, selected with --nodes: resumes from the work dir, adds a version.
    (project / "conf/local/parameters.yml").write_text(json.dumps(params(tmp_path / "work", 3, ["stargan"])))
    run_project(project, monkeypatch, pipeline="victim_training", node_names=["train_stargan"])
    info = card(project, "stargan")
    assert info["steps"] == 3 and info["resumed_from"] == 2
    assert len(versions(project, "data/06_models/victim_training/stargan/200000-G.ckpt")) == 2
    history = pd.read_csv(versions(project, "data/08_reporting/victim_training/stargan_history.csv")[-1])
    assert history["step"].tolist() == [1, 2, 3]
    assert len(versions(project, "data/06_models/victim_training/hisd/gen_00600000.pt")) == 1


def test_a_victim_outside_the_selection_is_refused_before_training(tmp_path):
    settings = params(tmp_path / "work", 2, ["stargan", "hisd"])["victim_training"]
    with pytest.raises(ValueError, match="--nodes train_stargan,train_hisd"):
        train_victim("attgan", training_set(), settings)
    with pytest.raises(ValueError, match=r"unknown architectures \['stargn'\]"):
        train_victim("stargan", training_set(), {**settings, "victims": ["stargn"]})
    with pytest.raises(ValueError, match="sample_every must be in"):
        train_victim("stargan", training_set(), {**settings, "common": {**settings["common"], "sample_every": 5}})
    assert not (tmp_path / "work").exists()


def test_a_changed_recipe_trains_in_a_fresh_work_dir(tmp_path):
    settings = params(tmp_path / "work", 2, ["stargan"])["victim_training"]
    first = train_victim("stargan", training_set(), settings)[1]
    changed = {**settings, "stargan": {**settings["stargan"], "lambda_rec": 5.0}}
    second = train_victim("stargan", training_set(), changed)[1]
    assert second["resumed_from"] is None and second["work_dir"] != first["work_dir"]
    again = train_victim("stargan", training_set(), settings)[1]
    assert again["work_dir"] == first["work_dir"] and again["resumed_from"] == 2
