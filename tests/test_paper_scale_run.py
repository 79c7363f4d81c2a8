"""``kedro run --env celeba`` end to end: the paper-scale configuration as a user runs it, given data and weights.

Everything the paper-scale environment reads is put where ``conf/celeba`` expects it: a CelebA folder in the
official layout (random pixels, 60 images), the four victims at their official sizes and the three optimised
detectors in their official checkpoint formats (random weights, seeded), and HiSD's glasses reference. Runtime parameters (as
``kedro run --params`` would) cut the counts and set what random weights and pixels need (the attacker's score
threshold and batch, below): 2 optimisation images, 2 evaluation images, 28 attacker photos, one batch, one
PGD iteration, one detector step, two fine-tuning iterations. 20 minutes on 2 CPU cores, hence ``slow``:
the demo-size pipeline tests run the same nodes; this one checks the paper-scale wiring (official sizes at 256 px,
every target, the release's detectors, HiSD fine-tuned from its checkpoint).
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.celeba_factory import make_celeba
from tests.kedro_project import make_project, run_project
from tsdf_pipeline.models import build_generator, save_generator
from tsdf_pipeline.models.detectors import build_detector

pytestmark = pytest.mark.slow

VICTIM_FILES = {"stargan": "200000-G.ckpt", "attentiongan": "200000-G.ckpt", "attgan": "weights.199.pth",
                "hisd": "gen_00600000.pt"}
DETECTOR_FILES = {"s3fd": "sfd_face.pth", "dsfd": "dsfd_vgg_0.880.pth", "retinaface": "mobilenet0.25_Final.pth"}
CPU = {"device": "cpu", "progress": False}
SMALL_RUN = {
    "data_ingestion": {"optimisation": {"count": 2}, "evaluation": {"count": 2}, "training": {"start": 2, "count": 28}},
    "interruption": {"tsdf": {"epochs": 1, "batch_size": 2, **CPU}, "cmua": {"batch_size": 2, "iterations": 1, **CPU},
                     "pgd": {"iterations": 1, "batch_size": 1, **CPU}},
    "evaluation": {"batch_size": 2, "examples": 2, "purifications": ["none"], "device": "cpu"},
    "poisoning": {"steps": 1, "epochs": 1, "device": "cpu", "interruption": {"batch_size": 2}},
    # Random RetinaFace weights score no box above 0.9 on random pixels: keep each photo's most confident box.
    # Batch 1: HiSD samples every tag's attribute pools, and 28 random photos hold few blond-only ones.
    "attacker_retraining": {"pool_count": 28, "score_threshold": 0.0, "min_crops": 1, "device": "cpu",
                            "overrides": {"num_iters": 2, "discriminator_warmup_iters": 1, "batch_size": 1,
                                          "checkpoint_every": 1, "sample_every": 0, "log_every": 1}},
}


def paper_scale_workspace(project) -> None:
    """Data and weights at the paths ``conf/celeba`` names, inside ``project``."""
    make_celeba(project / "data/01_raw/celeba", n=60)  # 30 training images: 2 + the 28 photos
    for i, (arch, name) in enumerate(VICTIM_FILES.items()):
        torch.manual_seed(i)
        save_generator(arch, build_generator(arch), project / "data/06_models/official" / arch / name)
    (project / "data/06_models/detectors").mkdir(parents=True)
    for name, file in DETECTOR_FILES.items():
        torch.manual_seed(0)
        torch.save(build_detector(name).state_dict(), project / "data/06_models/detectors" / file)
    (project / "data/01_raw/hisd").mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(project / "data/01_raw/hisd/reference_glasses_2.jpg")


@pytest.fixture
def project(tmp_path):
    """The project copy; its data (≈ 4.5 GB: official-size weights, the attacker's HiSD training states for five
    branches) is removed afterwards, pass or fail, as pytest keeps the last three temporary folders."""
    project = make_project(tmp_path)
    yield project
    shutil.rmtree(project / "data", ignore_errors=True)


def test_default_run_at_paper_scale(project, monkeypatch):
    paper_scale_workspace(project)
    run_project(project, monkeypatch, env="celeba", runtime_params=SMALL_RUN)

    perturbations = torch.load(next((project / "data/07_model_output/perturbations.pt").glob("*/*.pt")),
                               weights_only=True)
    assert perturbations["tsdf"]["w"].shape == (1, 3, 256, 256)
    table = pd.read_csv(next((project / "data/08_reporting/interruption_metrics.csv").glob("*/*.csv")))
    pooled = table[(table["kind"] == "interruption") & (table["target"] == "all")]
    assert set(pooled["victim"]) == {"stargan", "attentiongan", "attgan", "hisd"}
    assert set(pooled["method"]) == {"tsdf", "cmua", "pgd", "noise"}
    targets = set(table[table["victim"] == "hisd"]["target"])
    assert "ref_Eyeglasses" in targets  # the paper's HiSD edit
    assert len(set(table[table["victim"] == "attgan"]["target"]) - {"all"}) == 14

    w2 = torch.load(next((project / "data/07_model_output/w2.pt").glob("*/*.pt")), weights_only=True)
    assert w2["w"].shape == (1, 3, 256, 256)
    poisoning = pd.read_csv(next((project / "data/08_reporting/poisoning_metrics.csv").glob("*/*.csv")))
    assert set(poisoning["detector"].dropna()) == {"retinaface", "s3fd", "dsfd", "mtcnn", "dlib_hog"}
    retrained = torch.load(next((project / "data/06_models/retrained_models.pt").glob("*/*.pt")), weights_only=True)
    assert retrained["arch"] == "hisd" and set(retrained["models"]) == {"clean", "noise", "cmua", "tsdf", "tsdf_w2"}
    persistence = pd.read_csv(next((project / "data/08_reporting/persistence.csv").glob("*/*.csv")))
    assert not persistence.empty
