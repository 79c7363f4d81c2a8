"""TSDF stage 1 on the shipped demo victims beats the uniform-noise control on SR_mask by a clear margin."""

from __future__ import annotations

import torch
import yaml

from tests.kedro_project import PROJECT
from tests.test_demo_victims import FILES
from tsdf_pipeline.data.celeba import read_index
from tsdf_pipeline.data.splits import split_rows
from tsdf_pipeline.data.subsets import build_subset
from tsdf_pipeline.defense.methods import make_perturbation
from tsdf_pipeline.metrics.evaluate_interruption import aggregate_rows, evaluate_interruption
from tsdf_pipeline.models.ensemble import load_victim


def _subset(index, split, count, params):
    subset, _ = build_subset(index, split_rows(index, split)[:count], image_size=params["image_size"],
                             crop_size=params["crop_size"], label_sets={}, progress=False)
    return subset["images"], subset["attrs"]


def test_tsdf_beats_noise_on_the_demo_victims():
    data = yaml.safe_load((PROJECT / "conf/base/parameters_data_ingestion.yml").read_text())["data_ingestion"]
    conf = yaml.safe_load((PROJECT / "conf/base/parameters_model_loading.yml").read_text())["model_loading"]
    index = read_index(PROJECT / data["root"])
    x_opt, a_opt = _subset(index, "train", 16, data)
    x_eval, a_eval = _subset(index, "test", 12, data)
    victims = []
    for name in conf["ensemble"]:
        options = dict(conf["victims"][name]["options"])
        if "reference" in options:
            options["reference"] = str(PROJECT / options["reference"])
        victims.append(load_victim({"name": name, "arch": name,
                                    "checkpoint": str(PROJECT / "data/06_models/demo" / name / FILES[name]),
                                    "config": conf["victims"][name]["config"], "options": options}))
    tsdf = make_perturbation("tsdf", victims, x_opt, a_opt, {"epochs": 6, "batch_size": 8, "device": "cpu",
                                                               "progress": False, "seed": 0})
    noise = make_perturbation("noise", victims, x_opt, a_opt, {"epsilon": 0.05, "seed": 0})
    sr = {}
    for method, p in (("tsdf", tsdf), ("noise", noise)):
        with torch.no_grad():
            rows = evaluate_interruption(victims, x_eval, a_eval, p.w, method=method, batch_size=12)
        pooled = aggregate_rows(rows, by=("method",))[0]
        sr[method] = pooled["sr_mask"]
    assert tsdf.w.abs().max() <= 0.05 + 1e-6
    assert sr["tsdf"] >= sr["noise"] + 0.1, sr
