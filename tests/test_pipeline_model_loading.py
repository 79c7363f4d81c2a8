"""``model_loading`` on tiny official-format checkpoints: model cards, and clear failures."""

from __future__ import annotations

import json

import pytest

from tests.celeba_factory import make_celeba
from tests.kedro_project import make_project, run_project
from tests.tiny_models import SIZE, catalog_overrides, model_loading_params, save_tiny_checkpoints


def _project(tmp_path, paths, ensemble=None):
    root, _ = make_celeba(tmp_path / "celeba", n=8)
    params = {
        "data_ingestion": {"root": str(root), "image_size": SIZE, "optimisation": {"split": "train", "count": 2},
                           "evaluation": {"split": "test", "count": 2}, "training": {"split": "train", "start": 0}},
        "model_loading": model_loading_params(root / "img_align_celeba" / "000001.jpg", ensemble),
    }
    return make_project(tmp_path, params, catalog_overrides(paths))


def test_model_cards_for_every_victim(tmp_path, monkeypatch):
    paths = save_tiny_checkpoints(tmp_path / "models")
    project = _project(tmp_path, paths)
    run_project(project, monkeypatch, to_nodes=["validate_victims"])
    cards = json.loads(next((project / "data/08_reporting/model_cards.json").glob("*/*.json")).read_text())
    assert set(cards) == {"stargan", "attentiongan", "attgan", "hisd"}
    for name, card in cards.items():
        assert card["checkpoint"] == str(paths[name]) and len(card["sha256"]) == 64
        assert card["num_params"] > 0 and card["validation"]["finite"]
        assert card["validation"]["forward_ms_per_image_target"] > 0
    assert cards["stargan"]["target_names"]["all"][0] == "recon"
    ensemble = json.loads(next((project / "data/06_models/victim_ensemble.json").glob("*/*.json")).read_text())
    assert [v["name"] for v in ensemble] == ["stargan", "attentiongan", "attgan", "hisd"]


def test_missing_checkpoint_names_path_and_source(tmp_path, monkeypatch):
    paths = save_tiny_checkpoints(tmp_path / "models")
    paths["attgan"].unlink()
    project = _project(tmp_path, paths, ensemble=["stargan", "attgan"])
    with pytest.raises(Exception, match=r"checkpoint of victim 'attgan' not found: expected .*weights.199.pth; "
                                        r"it comes from tiny test attgan"):
        run_project(project, monkeypatch, to_nodes=["validate_victims"])
