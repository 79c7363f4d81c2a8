"""Per-architecture objectives: finite losses, overfitting, schedules, loss terms and HiSD tag pools."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.test_training_engine import tiny_config, tiny_dataset
from tsdf_pipeline.data.attributes import CELEBA_ATTRS
from tsdf_pipeline.training import HiSDConfig, make_config, train_gan
from tsdf_pipeline.training.attgan import scale_target
from tsdf_pipeline.training.dataset import BatchSampler, random_color_jitter, random_horizontal_flip
from tsdf_pipeline.training.hisd import HiSDTrainer, r1_penalty, tag_pools, update_average
from tsdf_pipeline.training.losses import gradient_penalty
from tsdf_pipeline.training.stargan import StarGANTrainer, classification_loss, linear_decay_lr

EXPECTED_TERMS = {
    "stargan": {"D/loss_real", "D/loss_fake", "D/loss_cls", "D/loss_gp", "G/loss_fake", "G/loss_rec", "G/loss_cls"},
    "attgan": {"D/d_loss", "D/df_loss", "D/df_gp", "D/dc_loss", "G/g_loss", "G/gf_loss", "G/gc_loss", "G/gr_loss"},
    "hisd": {"G/adv", "G/sty", "G/rec", "D/adv"},
}
EXPECTED_TERMS["attentiongan"] = EXPECTED_TERMS["stargan"]


@pytest.mark.parametrize("arch", ["stargan", "attentiongan", "attgan", "hisd"])
def test_every_loss_term_is_logged_and_finite(tmp_path: Path, arch: str) -> None:
    result = train_gan(arch, tiny_dataset(), tiny_config(arch, num_iters=6), tmp_path)
    logged = result.history[-1][1]
    assert set(logged) == EXPECTED_TERMS[arch]
    assert all(math.isfinite(v) for _, values in result.history for v in values.values())


@pytest.mark.parametrize(("arch", "term", "overrides"), [
    ("stargan", "G/loss_rec", {"n_critic": 1, "g_lr": 1e-3}),
    ("attgan", "G/gr_loss", {"n_d": 1, "lr": 1e-3}),
])
def test_reconstruction_loss_falls_when_overfitting_one_batch(tmp_path: Path, arch: str, term: str,
                                                              overrides: dict) -> None:
    ds = tiny_dataset(n=4)  # batch_size 4: every batch is this set
    result = train_gan(arch, ds, tiny_config(arch, num_iters=30, **overrides), tmp_path)
    values = [v[term] for _, v in result.history if term in v]
    assert sum(values[-3:]) / 3 < 0.8 * values[0]


def test_stargan_linear_decay_matches_the_upstream_update_loop() -> None:
    base, num_iters, decay, update = 1e-4, 50, 20, 5
    lr, expected = base, {}
    for i in range(num_iters):  # upstream Solver.train: the decay applies after iteration i+1
        expected[i + 1] = lr
        if (i + 1) % update == 0 and (i + 1) > num_iters - decay:
            lr -= base / decay
    got = {s: linear_decay_lr(base, s, num_iters, decay, update) for s in expected}
    assert got == pytest.approx(expected, abs=1e-12)
    # Three drops (after iterations 35, 40, 45) of base/num_iters_decay each: upstream's quirk.
    assert got[35] == base and got[36] < base and got[50] == pytest.approx(base * (1 - 3 / decay))


def test_random_horizontal_flip_mirrors_each_image_with_probability_half() -> None:
    x = torch.randn(2000, 3, 2, 5)
    torch.manual_seed(0)
    y = random_horizontal_flip(x)
    same = (y == x).flatten(1).all(1)
    mirrored = (y == x.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 0.45 < mirrored.float().mean().item() < 0.55
    torch.manual_seed(0)
    assert torch.equal(random_horizontal_flip(x), y)  # drawn from the global (checkpointed) torch RNG


def test_color_jitter_draws_per_image_factors_from_the_global_rng() -> None:
    gray = torch.zeros(64, 3, 4, 4)  # mid-grey: only brightness acts (contrast, saturation and hue keep grey)
    torch.manual_seed(0)
    out = random_color_jitter(gray, 0.1)
    per_image = out.flatten(1)
    assert torch.equal(per_image, per_image[:, :1].expand_as(per_image))  # each image stays one flat grey
    # brightness factor in [0.9, 1.1] on 0.5 (unit range) -> [-0.1, 0.1] in [-1,1]; an own draw per image
    assert per_image.abs().max() <= 0.1 + 1e-6 and per_image[:, 0].unique().numel() == 64
    torch.manual_seed(0)
    assert torch.equal(random_color_jitter(gray, 0.1), out)
    colour = torch.rand(8, 3, 6, 6) * 2 - 1
    jittered = random_color_jitter(colour, 0.1)
    assert jittered.min() >= -1 and jittered.max() <= 1 and not torch.allclose(jittered, colour, atol=1e-3)
    state = torch.get_rng_state()
    assert random_color_jitter(colour, 0.0) is colour and torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("strength", [0.0, 0.1])
def test_hisd_jitters_real_images_before_the_flip(monkeypatch: pytest.MonkeyPatch, strength: float) -> None:
    """Upstream HiSD's loader: ColorJitter(0.1, 0.1, 0.1, 0.1), then RandomHorizontalFlip (default on)."""
    from tsdf_pipeline.training import hisd

    assert make_config("hisd").color_jitter == 0.1
    seen: list[torch.Tensor] = []
    monkeypatch.setattr(hisd, "random_horizontal_flip", lambda x: seen.append(x.clone()) or x)
    trainer, _ = _hisd_after_one_step(color_jitter=strength)
    originals = trainer.dataset.images.flatten(1)
    nearest = torch.cdist(seen[0].flatten(1), originals, p=float("inf")).min(1).values
    assert bool((nearest == 0).all()) if strength == 0 else bool((nearest > 1e-3).all())


@pytest.mark.parametrize("arch", ["stargan", "attentiongan"])
def test_stargan_family_trains_on_randomly_mirrored_images(arch: str) -> None:
    """Upstream data_loader.get_loader (both repos) uses T.RandomHorizontalFlip() in train mode."""
    from tsdf_pipeline.training import TRAINERS

    ds = tiny_dataset(n=4)
    trainer: StarGANTrainer = TRAINERS[arch](tiny_config(arch), ds, torch.device("cpu"))
    seen: list[torch.Tensor] = []
    trainer.discriminator.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    sampler = BatchSampler({"all": torch.arange(4)}, batch_size=4, seed=0)
    served: list[torch.Tensor] = []
    draw_rows = sampler.next
    sampler.next = lambda pool: served.append(draw_rows(pool)) or served[-1]  # type: ignore[method-assign]
    torch.manual_seed(0)
    n_mirrored = 0
    for step in range(1, 6):
        seen.clear()
        trainer.train_step(step, sampler)
        x_real, originals = seen[0], ds.images[served[-1]]  # D's first input is the real batch
        mirrored = (x_real == originals.flip(3)).flatten(1).all(1)
        assert bool(((x_real == originals).flatten(1).all(1) | mirrored).all())
        n_mirrored += int(mirrored.sum())
    assert 0 < n_mirrored < 20


def test_attgan_lr_drops_tenfold_every_lr_decay_epochs() -> None:
    ds = tiny_dataset(n=8)  # 2 iterations per epoch at batch size 4
    trainer = tiny_trainer("attgan", ds, lr_decay_epochs=3)
    lrs = []
    for step in (1, 6, 7, 13):
        trainer.set_step_lr(step)
        lrs.append(trainer.optimizers["G"].param_groups[0]["lr"])
    assert lrs == pytest.approx([2e-4, 2e-4, 2e-5, 2e-6])


def tiny_trainer(arch: str, ds, **overrides):
    from tsdf_pipeline.training import TRAINERS

    return TRAINERS[arch](tiny_config(arch, **overrides), ds, torch.device("cpu"))


def test_attgan_target_scaling() -> None:
    att_b = torch.tensor([[1.0, 0.0]] * 500)
    assert torch.equal(scale_target(att_b, 0.5, "none"), torch.tensor([[0.5, -0.5]] * 500))
    for dist in ("uniform", "truncated_normal"):
        v = scale_target(att_b, 0.5, dist)
        assert (v[:, 0] >= 0).all() and (v[:, 1] <= 0).all() and v.abs().max() <= 1.0
        assert v[:, 0].std() > 0.05  # actually random
    with pytest.raises(ValueError, match="b_distribution"):
        scale_target(att_b, 0.5, "gaussian")


@pytest.mark.parametrize("arch", ["stargan", "attgan"])
def test_gradient_penalty_runs_in_float32_under_autocast(monkeypatch: pytest.MonkeyPatch, arch: str) -> None:
    """On CUDA the D step runs under bf16 autocast; the penalty's double backward must not (upstream is fp32).
    Forced here through CPU bf16 autocast, which the trainers use the same way."""
    import importlib

    module = importlib.import_module(f"tsdf_pipeline.training.{arch}")
    seen: list[tuple[bool, torch.dtype, torch.dtype, torch.dtype]] = []

    def recording_penalty(critic, real, fake, **kwargs):
        gp = gradient_penalty(critic, real, fake, **kwargs)
        seen.append((torch.is_autocast_enabled("cpu"), real.dtype, fake.dtype, gp.dtype))
        return gp

    monkeypatch.setattr(module, "gradient_penalty", recording_penalty)
    trainer = tiny_trainer(arch, tiny_dataset(n=4))
    trainer.use_amp = True
    with trainer.autocast():
        assert torch.is_autocast_enabled("cpu")  # the D step around the penalty does run in bf16
    trainer.train_step(1, BatchSampler({"all": torch.arange(4)}, batch_size=4, seed=0), update_generator=False)
    assert seen == [(False, torch.float32, torch.float32, torch.float32)]


def test_gradient_penalty_of_a_linear_critic() -> None:
    w = torch.full((1, 3, 2, 2), 0.5)  # ||w|| = sqrt(12 * 0.25)
    real, fake = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    for alpha_weighs_real in (True, False):
        gp = gradient_penalty(lambda x: (x * w).flatten(1).sum(1), real, fake, alpha_weighs_real=alpha_weighs_real)
        assert gp.item() == pytest.approx((math.sqrt(3.0) - 1) ** 2, rel=1e-6)


def test_r1_penalty_and_classification_loss() -> None:
    x = torch.randn(3, 2, requires_grad=True)
    assert r1_penalty((x**2).sum(1), x).item() == pytest.approx((4 * x.detach() ** 2).sum(1).mean().item())
    logit, target = torch.zeros(4, 5), torch.ones(4, 5)
    assert classification_loss(logit, target).item() == pytest.approx(5 * math.log(2))  # summed over labels


def test_hisd_tag_pools_follow_the_celeba_hq_rules() -> None:
    col = {name: i for i, name in enumerate(CELEBA_ATTRS)}
    attrs = torch.zeros(4, 40)
    attrs[0, [col["Bangs"], col["Black_Hair"]]] = 1
    attrs[1, [col["Blond_Hair"], col["Brown_Hair"]]] = 1  # two hair colours: not used for HairColor
    attrs[2, [col["Eyeglasses"], col["Brown_Hair"]]] = 1
    attrs[3, [col["Gray_Hair"]]] = 1  # gray is not a HiSD hair colour
    pools = tag_pools(attrs, HiSDConfig().tag_rules)
    as_lists = {k: v.tolist() for k, v in pools.items()}
    assert as_lists == {(0, 0): [0], (0, 1): [1, 2, 3], (1, 0): [2], (1, 1): [0, 1, 3],
                        (2, 0): [0], (2, 1): [], (2, 2): [2]}
    with pytest.raises(ValueError, match=r"tag_rules\['Smile'\]\['yes'\]: unknown CelebA attribute 'Smile'"):
        tag_pools(attrs, {"Smile": {"yes": {"Smile": 1}, "no": {"Smiling": 0}}})
    with pytest.raises(ValueError, match="at least two attributes"):
        tag_pools(attrs, {"Bangs": {"with": {"Bangs": 1}}})


def test_hisd_optimiser_groups_and_ema() -> None:
    trainer = tiny_trainer("hisd", tiny_dataset())
    groups = trainer.optimizers["G"].param_groups
    assert [g["lr"] for g in groups] == [1e-4, 1e-4, 1e-4, 1e-4, 1e-6]
    assert groups[0]["betas"] == (0.0, 0.99)
    mapper_ids = {id(p) for p in trainer.generator.mappers.parameters()}
    assert {id(p) for p in groups[4]["params"]} == mapper_ids
    target, source = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    expected = 0.99 * target.weight.detach() + 0.01 * source.weight.detach()
    update_average(target, source, 0.99)
    assert torch.allclose(target.weight, expected)
    assert isinstance(trainer, HiSDTrainer)


def _hisd_after_one_step(**overrides) -> tuple[HiSDTrainer, dict[str, float]]:
    torch.manual_seed(0)
    trainer = tiny_trainer("hisd", tiny_dataset(), **overrides)
    sampler = BatchSampler(trainer.sampling_pools(), trainer.config.batch_size, seed=0)
    return trainer, {k: float(v) for k, v in trainer.train_step(1, sampler).items()}


def test_hisd_r1_weight_scales_only_the_r1_term_of_the_discriminator_loss() -> None:
    hinge, upstream, tripled = (_hisd_after_one_step(r1_w=w)[1]["D/adv"] for w in (0.0, 1.0, 3.0))
    assert make_config("hisd").r1_w == 1.0  # upstream: R1 added with weight 1
    assert upstream > hinge
    assert tripled - hinge == pytest.approx(3 * (upstream - hinge), rel=1e-4)


def test_hisd_ali_w_scales_only_the_extractor_gradient_of_the_real_pair_term() -> None:
    upstream, upstream_losses = _hisd_after_one_step()
    assert make_config("hisd").ali_w == 1.0  # upstream: G's real-pair loss reaches the extractor in full
    extractors = {}
    for ali_w in (0.0, 0.5):
        trainer, losses = _hisd_after_one_step(ali_w=ali_w)
        assert losses == pytest.approx(upstream_losses)  # same values, other gradients
        params = dict(trainer.generator.named_parameters())
        for name, p in upstream.generator.named_parameters():
            if not name.startswith("extractors."):
                assert torch.allclose(p, params[name], atol=1e-6), (ali_w, name)
        extractors[ali_w] = torch.cat([p.flatten() for n, p in params.items() if n.startswith("extractors.")])
    full = torch.cat([p.flatten() for n, p in upstream.generator.named_parameters() if n.startswith("extractors.")])
    assert not torch.allclose(extractors[0.0], full) and not torch.allclose(extractors[0.5], full)
    assert not torch.allclose(extractors[0.0], extractors[0.5])


def test_hisd_ref_w_adds_a_reference_guided_term_and_is_off_by_default() -> None:
    upstream, upstream_losses = _hisd_after_one_step()
    assert make_config("hisd").ref_w == 0.0 and "G/ref" not in upstream_losses
    trainer, losses = _hisd_after_one_step(ref_w=1.0)
    # The upstream terms see the same draws (the reference batch is drawn after them) ...
    for key in ("G/adv", "G/sty", "G/rec"):
        assert losses[key] == pytest.approx(upstream_losses[key])
    # ... and the reference term adds its own gradient to G and its own fake to D.
    assert torch.isfinite(torch.tensor(losses["G/ref"])) and losses["D/adv"] != pytest.approx(upstream_losses["D/adv"])
    params = dict(trainer.generator.named_parameters())
    assert any(not torch.allclose(p, params[n]) for n, p in upstream.generator.named_parameters()
               if n.startswith("extractors."))


def test_hisd_mismatch_w_adds_a_real_wrong_attribute_term_to_the_discriminator_only() -> None:
    upstream, upstream_losses = _hisd_after_one_step()
    assert make_config("hisd").mismatch_w == 0.0
    trainer, losses = _hisd_after_one_step(mismatch_w=1.0)
    # G's step comes first and sees the same draws; the reference batch for the mismatch is drawn after it.
    for key in ("G/adv", "G/sty", "G/rec"):
        assert losses[key] == pytest.approx(upstream_losses[key])
    params = dict(trainer.generator.named_parameters())
    assert all(torch.equal(p, params[n]) for n, p in upstream.generator.named_parameters())
    # D's loss gains relu(1 + D(x, s_ref)[j_trg]) >= 0 (> 0 for an untrained D), and D moves differently.
    assert losses["D/adv"] > upstream_losses["D/adv"]
    dis = dict(trainer.discriminator.named_parameters())
    assert any(not torch.allclose(p, dis[n]) for n, p in upstream.discriminator.named_parameters())


def test_hisd_dis_head_kernel_builds_a_position_aware_discriminator_for_the_image_size() -> None:
    assert make_config("hisd").dis_head_kernel == 1  # upstream: pooled 1x1 heads
    trainer, losses = _hisd_after_one_step(dis_head_kernel=4)  # tiny D: 2 downsamplings of 16 px -> 4x4
    assert trainer.discriminator.fcs[0][0].weight.shape[2:] == (4, 4)
    assert all(math.isfinite(v) for v in losses.values())
    with pytest.raises(ValueError, match="dis_head_kernel 2 with 3 dis_channels needs image_size 8, got 16"):
        tiny_trainer("hisd", tiny_dataset(), dis_head_kernel=2)


def test_hisd_cls_w_adds_an_auxiliary_attribute_classifier_to_both_losses() -> None:
    upstream, _ = _hisd_after_one_step()
    assert make_config("hisd").cls_w == 0.0 and upstream.discriminator.cls is None
    with pytest.raises(ValueError, match="built without classifier=True"):
        upstream.discriminator.classify(torch.zeros(1, 3, 16, 16), 0)
    (one, losses_one), (two, losses_two) = (_hisd_after_one_step(cls_w=w) for w in (1.0, 2.0))
    assert [head.out_channels for head in one.discriminator.cls] == [len(a) for a in one.config.tag_rules.values()]
    # Same init and draws, so the same loss values (the cross-entropies are logged unweighted) ...
    assert losses_one == pytest.approx(losses_two) and 0 < losses_one["G/cls"] < 5 and 0 < losses_one["D/cls"] < 5
    # ... but both updates weigh them by cls_w.
    for a, b in ((one.generator, two.generator), (one.discriminator, two.discriminator)):
        params = dict(b.named_parameters())
        assert any(not torch.allclose(p, params[n]) for n, p in a.named_parameters())


def test_config_defaults_and_overrides() -> None:
    star = make_config("stargan")
    assert (star.lambda_cls, star.lambda_rec, star.lambda_gp, star.n_critic, star.g_lr, star.beta1) == \
        (1.0, 10.0, 10.0, 5, 1e-4, 0.5)
    att = make_config("attgan", attrs=["Bald", "Bangs"])
    assert att.attrs == ("Bald", "Bangs") and (att.lambda_1, att.lambda_2, att.lambda_3, att.n_d) == (100, 10, 1, 5)
    with pytest.raises(TypeError, match=r"unknown config keys \['lambda_typo'\]"):
        make_config("hisd", lambda_typo=1)
    with pytest.raises(TypeError, match=r"HiSDConfig.lr_gen_mappers must be float, got '1e-4' \(str\)"):
        make_config("hisd", lr_gen_mappers="1e-4")
    with pytest.raises(TypeError, match=r"StarGANConfig.n_critic must be int, got 2.5"):
        make_config("stargan", n_critic=2.5)
    with pytest.raises(TypeError, match=r"HiSDConfig.progress must be bool, got 0"):
        make_config("hisd", progress=0)
    with pytest.raises(TypeError, match=r"StarGANConfig.g_lr must be float, got True"):
        make_config("stargan", g_lr=True)
    assert make_config("stargan", g_lr=1).g_lr == 1  # ints are numbers too
    with pytest.raises(TypeError, match="needs a StarGANConfig"):
        train_gan("stargan", tiny_dataset(), make_config("attentiongan"), "unused")


@pytest.mark.parametrize("arch", ["stargan", "attentiongan"])
def test_stargan_lambda_id_adds_the_identity_term_to_the_generator_step_only(arch: str) -> None:
    def one_step(**extra: float) -> tuple[StarGANTrainer, dict[str, float]]:
        torch.manual_seed(0)
        trainer = tiny_trainer(arch, tiny_dataset(), n_critic=1, **extra)
        sampler = BatchSampler(trainer.sampling_pools(), trainer.config.batch_size, seed=0)
        return trainer, {k: float(v) for k, v in trainer.train_step(1, sampler).items()}

    (upstream, off), (trainer, on) = one_step(), one_step(lambda_id=10.0)
    assert make_config(arch).lambda_id == 0.0 and "G/loss_id" not in off
    assert on["G/loss_id"] > 0 and {k: v for k, v in on.items() if k != "G/loss_id"} == pytest.approx(off)
    assert all(torch.equal(p, q) for p, q in zip(upstream.discriminator.parameters(),
                                                 trainer.discriminator.parameters(), strict=True))
    assert any(not torch.equal(p, q) for p, q in zip(upstream.generator.parameters(),
                                                     trainer.generator.parameters(), strict=True))
