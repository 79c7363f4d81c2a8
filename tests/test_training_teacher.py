"""Edit teachers for HiSD (``HiSDConfig.teacher_w``): paired edits from frozen label-conditioned victims."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.test_training_engine import read_state, tiny_config, tiny_dataset
from tsdf_pipeline.data.attributes import CELEBA_ATTRS
from tsdf_pipeline.models import build_generator, load_generator, save_generator
from tsdf_pipeline.pipelines.attacker_retraining.nodes import attacker_overrides
from tsdf_pipeline.training import train_gan
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
    off = {"teacher_w": 0.0, "distill_tags": []}
    assert attacker_overrides("hisd", {"overrides": {"num_iters": 5}}) == {**off, "num_iters": 5}
    assert attacker_overrides("hisd", {"overrides": {"teacher_w": 1.0}}) == {**off, "teacher_w": 1.0}  # explicit wins
    assert attacker_overrides("stargan", {"overrides": None}) == {}


def test_edit_distillation_trains_only_the_distilled_tags_and_the_extractor(tmp_path: Path) -> None:
    """``distill_tags``: a fine-tuning run without D whose anchor is the loaded generator; the encoder, decoder and
    other tags keep their weights, a killed run resumes to the same result."""
    _, spec = _stargan_teacher(tmp_path, 1)
    base = dict(tag_rules=GENDER_AGE, distill_tags=["Gender"], teachers=[spec], teacher_w=1.0, num_iters=4,
                checkpoint_every=2, lr_gen_others=1e-2, lr_gen_mappers=1e-2)
    start = HiSDTrainer(tiny_config("hisd", **base), tiny_dataset(), torch.device("cpu"))
    torch.manual_seed(1)
    training_generator = build_generator("hisd", **start.generator_config())
    # The file's 'gen' (training generator) differs from its 'gen_test' (what victims run): the distillation
    # starts from 'gen_test'.
    init = save_generator("hisd", start.generator, tmp_path / "init.pt",
                          extra={"gen": training_generator.state_dict()})
    result = train_gan("hisd", tiny_dataset(), tiny_config("hisd", **base), tmp_path / "run", init_checkpoint=init)
    assert set(result.history[-1][1]) == {"G/distill_edit", "G/distill_rec"}
    state = read_state(result.state_path)["models"]
    before = start.generator.state_dict()
    assert all(torch.equal(v, before[k]) for k, v in state["G_anchor"].items())
    changed = {k.split(".")[0] + "." + k.split(".")[1] for k, v in state["G"].items() if not torch.equal(v, before[k])}
    assert changed == {"extractors.model", "translators.0", "mappers.0"}
    # Interrupted after the checkpoint at step 2 (num_iters 2), then resumed to 4: the same generator.
    train_gan("hisd", tiny_dataset(), tiny_config("hisd", **{**base, "num_iters": 2}), tmp_path / "resumed",
              init_checkpoint=init)
    resumed = train_gan("hisd", tiny_dataset(), tiny_config("hisd", **base), tmp_path / "resumed",
                        init_checkpoint=init)
    assert resumed.resumed_from == 2
    cfg = start.generator_config()
    assert all(torch.equal(a, b) for a, b in zip(load_generator("hisd", result.generator_path, **cfg).state_dict().values(),
                                                 load_generator("hisd", resumed.generator_path, **cfg).state_dict().values(),
                                                 strict=True))


def test_edit_distillation_refuses_unknown_tags_no_edit_weight_a_warmup_and_a_stray_alignment(tmp_path: Path) -> None:
    _, spec = _stargan_teacher(tmp_path, 1)
    base = dict(tag_rules=GENDER_AGE, teachers=[spec], teacher_w=1.0)
    with pytest.raises(ValueError, match=r"distill_tags: unknown tags \['Hair'\]; tag_rules has \['Gender', 'Age'\]"):
        HiSDTrainer(tiny_config("hisd", **base, distill_tags=["Hair"]), tiny_dataset(), torch.device("cpu"))
    with pytest.raises(ValueError, match="teacher_w weighs the distilled edit, expected > 0, got 0.0"):
        HiSDTrainer(tiny_config("hisd", **{**base, "teacher_w": 0.0}, distill_tags=["Gender"]), tiny_dataset(),
                    torch.device("cpu"))
    with pytest.raises(ValueError, match="discriminator_warmup_iters must be 0"):
        HiSDTrainer(tiny_config("hisd", **base, distill_tags=["Gender"], discriminator_warmup_iters=1),
                    tiny_dataset(), torch.device("cpu"))
    with pytest.raises(ValueError, match="style_align_w 1.0 acts in the edit distillation only"):
        HiSDTrainer(tiny_config("hisd", **base, style_align_w=1.0), tiny_dataset(), torch.device("cpu"))
    with pytest.raises(ValueError, match=r"style_align_w 1.0 trains the extractor, which distill_parts \['mappers'\]"):
        HiSDTrainer(tiny_config("hisd", **base, distill_tags=["Gender"], distill_parts=["mappers"], style_align_w=1.0),
                    tiny_dataset(), torch.device("cpu"))


def test_style_alignment_pulls_only_the_extractor_towards_the_detached_mapper(tmp_path: Path) -> None:
    """``style_align_w``: the extracted styles of the real source and reference batches regress onto mapped styles
    of their attributes; the mapper is the detached target, so only the extractor's step changes."""
    _, spec = _stargan_teacher(tmp_path, 1)
    base = dict(tag_rules=GENDER_AGE, distill_tags=["Gender"], teachers=[spec], teacher_w=1.0, num_iters=1)

    def one_step(**extra: float) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        trainer = HiSDTrainer(tiny_config("hisd", **base, **extra), tiny_dataset(), torch.device("cpu"))
        sampler = BatchSampler(trainer.sampling_pools(), trainer.config.batch_size, seed=0)
        losses = {k: float(v) for k, v in trainer.distill_step(1, sampler).items()}
        return losses, {k: v.clone() for k, v in trainer.generator.state_dict().items()}

    (off, g_off), (on, g_on) = one_step(), one_step(style_align_w=1.0)
    assert "G/distill_align" not in off and 0 < on["G/distill_align"] < 10
    assert on["G/distill_edit"] == off["G/distill_edit"] and on["G/distill_rec"] == off["G/distill_rec"]
    moved = {k.split(".")[0] for k in g_on if not torch.equal(g_on[k], g_off[k])}
    assert moved == {"extractors"}


def test_distill_parts_narrow_what_the_distillation_trains(tmp_path: Path) -> None:
    _, spec = _stargan_teacher(tmp_path, 1)
    base = dict(tag_rules=GENDER_AGE, distill_tags=["Gender"], teachers=[spec], teacher_w=1.0, num_iters=2,
                lr_gen_others=1e-2, lr_gen_mappers=1e-2)
    torch.manual_seed(0)
    sizes = HiSDTrainer(tiny_config("hisd", **base), tiny_dataset(), torch.device("cpu")).generator_config()
    init = save_generator("hisd", build_generator("hisd", **sizes), tmp_path / "init.pt")
    before = torch.load(init, weights_only=True)["gen_test"]
    for parts, learn in ((["extractor"], {"extractors.model"}),
                         (["translators", "mappers"], {"translators.0", "mappers.0"})):
        result = train_gan("hisd", tiny_dataset(), tiny_config("hisd", **base, distill_parts=parts),
                           tmp_path / parts[0], init_checkpoint=init)
        state = read_state(result.state_path)["models"]["G"]
        assert {".".join(k.split(".")[:2]) for k, v in state.items() if not torch.equal(v, before[k])} == learn
    with pytest.raises(ValueError, match=r"distill_parts: expected a non-empty subset of \['extractor', 'translators', "
                                         r"'mappers'\], got \['decoder'\]"):
        HiSDTrainer(tiny_config("hisd", **base, distill_parts=["decoder"]), tiny_dataset(), torch.device("cpu"))
