"""Edit teachers for HiSD (``HiSDConfig.teacher_w``): paired edits from frozen label-conditioned victims."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.test_training_engine import tiny_config, tiny_dataset
from tsdf_pipeline.data.attributes import CELEBA_ATTRS
from tsdf_pipeline.models import build_generator, save_generator
from tsdf_pipeline.pipelines.attacker_retraining.nodes import attacker_overrides
from tsdf_pipeline.training.dataset import BatchSampler
from tsdf_pipeline.training.hisd import HiSDTrainer
from tsdf_pipeline.training.teacher import EditTeacher

GENDER_AGE = {"Gender": {"male": {"Male": 1}, "female": {"Male": 0}},
              "Age": {"young": {"Young": 1}, "old": {"Young": 0}}}
STARGAN = {"conv_dim": 8, "c_dim": 2, "repeat_num": 1}


def _stargan_teacher(tmp_path: Path, seed: int) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(seed)
    generator = build_generator("stargan", **STARGAN).eval()
    path = save_generator("stargan", generator, tmp_path / f"teacher{seed}-G.ckpt")
    return generator, {"arch": "stargan", "checkpoint": str(path), "config": STARGAN,
                       "options": {"attrs": ["Male", "Young"], "image_size": 16}}


def test_edit_is_the_mean_label_edit_of_the_teachers(tmp_path: Path) -> None:
    (g1, spec1), (g2, spec2) = _stargan_teacher(tmp_path, 1), _stargan_teacher(tmp_path, 2)
    teacher = EditTeacher([spec1, spec2], GENDER_AGE, torch.device("cpu"))
    ds = tiny_dataset(6)
    x, attrs40 = ds.images, ds.attrs40
    male, young = CELEBA_ATTRS.index("Male"), CELEBA_ATTRS.index("Young")
    c = attrs40[:, [male, young]]
    to_old = c.clone()
    to_old[:, 1] = 0  # tag 1 (Age), attribute 1 (old): Young := 0
    with torch.no_grad():
        expected = sum(g(x, to_old) - g(x, c) for g in (g1, g2)) / 2
    edit = teacher.edit(x, attrs40, 1, 1)
    assert torch.allclose(edit, expected, atol=1e-5)
    # Images that already have the target attribute get no edit; the others do.
    old = c[:, 1] == 0
    assert old.any() and (~old).any()
    assert torch.equal(edit[old], torch.zeros_like(edit[old])) and edit[~old].abs().mean() > 1e-3


def test_teachers_must_edit_every_rule_column_and_be_label_conditioned(tmp_path: Path) -> None:
    _, spec = _stargan_teacher(tmp_path, 1)
    with pytest.raises(ValueError, match=r"tag_rules\['Hair'\]\['blond'\] also sets \['Blond_Hair'\]"):
        EditTeacher([spec], {**GENDER_AGE, "Hair": {"blond": {"Blond_Hair": 1}, "other": {"Blond_Hair": 0}}},
                    torch.device("cpu"))
    with pytest.raises(ValueError, match=r"teachers\[1\]: arch must be one of"):
        EditTeacher([spec, {**spec, "arch": "hisd"}], GENDER_AGE, torch.device("cpu"))
    with pytest.raises(ValueError, match="teachers is empty"):
        HiSDTrainer(tiny_config("hisd", tag_rules=GENDER_AGE, teacher_w=1.0), tiny_dataset(), torch.device("cpu"))


def test_hisd_teacher_w_adds_the_paired_term_to_the_generator_loss(tmp_path: Path) -> None:
    _, spec = _stargan_teacher(tmp_path, 1)
    runs = {}
    for w in (0.0, 1.0, 2.0):
        torch.manual_seed(0)
        trainer = HiSDTrainer(tiny_config("hisd", tag_rules=GENDER_AGE, teacher_w=w, teachers=[spec] if w else []),
                              tiny_dataset(), torch.device("cpu"))
        sampler = BatchSampler(trainer.sampling_pools(), trainer.config.batch_size, seed=0)
        runs[w] = trainer, {k: float(v) for k, v in trainer.train_step(1, sampler).items()}
    assert "G/teacher" not in runs[0.0][1]
    (one, losses_one), (two, losses_two) = runs[1.0], runs[2.0]
    # Same init and draws: the same (unweighted) values, a plausible L1 sum over two translations ...
    assert losses_one == pytest.approx(losses_two) and 0 < losses_one["G/teacher"] < 4
    # ... but the generator updates weigh the term by teacher_w (D's loss does not depend on it).
    params = dict(two.generator.named_parameters())
    assert any(not torch.allclose(p, params[n]) for n, p in one.generator.named_parameters())


def test_the_simulated_attacker_fine_tunes_hisd_without_teachers() -> None:
    assert attacker_overrides("hisd", {"overrides": {"num_iters": 5}}) == {"teacher_w": 0.0, "num_iters": 5}
    assert attacker_overrides("hisd", {"overrides": {"teacher_w": 1.0}}) == {"teacher_w": 1.0}  # explicit wins
    assert attacker_overrides("stargan", {"overrides": None}) == {}
