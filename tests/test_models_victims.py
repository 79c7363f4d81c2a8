"""Victim wrappers on small random generators (32 px): batching, gradients, norm modes, targets, shapes."""

from __future__ import annotations

import pytest
import torch

from tsdf_pipeline.data.attributes import ATTGAN_ATTRS, STARGAN_ATTRS, attr_indices
from tsdf_pipeline.models.attentiongan import AttentionGANGenerator
from tsdf_pipeline.models.attgan import AttGANGenerator
from tsdf_pipeline.models.hisd import HiSDGenerator
from tsdf_pipeline.models.stargan import StarGANGenerator
from tsdf_pipeline.models.targets import attgan_targets, stargan_targets
from tsdf_pipeline.models.victims import EditTargets, Victim, make_victim

SIZE = 32
N = 2
ARCHS = ("stargan", "attentiongan", "attgan", "hisd")
HISD_SMALL = {
    "new_size": SIZE, "style_dim": 16, "noise_dim": 8, "encoder": [8, 16, 16], "decoder": [16, 16, 8],
    "extractors": [8, 16, 16], "translators": [8, 8, 8], "mappers_pre": [16, 16], "mappers_post": [16, 16],
}


def _generator(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if arch == "stargan":
        return StarGANGenerator(conv_dim=8, c_dim=5, repeat_num=1)
    if arch == "attentiongan":
        return AttentionGANGenerator(conv_dim=8, c_dim=5, repeat_num=1)
    if arch == "attgan":
        gen = AttGANGenerator(enc_dim=8, enc_layers=3, dec_dim=8, dec_layers=3, n_attrs=13, img_size=SIZE)
        for m in gen.modules():  # non-trivial running stats, so batch statistics would give other outputs
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        return gen
    return HiSDGenerator(**HISD_SMALL)


def _victim(arch: str) -> Victim:
    options = {}
    if arch == "hisd":
        rng = torch.Generator().manual_seed(5)
        options["reference"] = torch.rand(1, 3, SIZE, SIZE, generator=rng) * 2 - 1
    return make_victim(arch, _generator(arch), **options)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    rng = torch.Generator().manual_seed(1)
    x = torch.rand(N, 3, SIZE, SIZE, generator=rng) * 2 - 1
    attrs40 = torch.randint(0, 2, (N, 40), generator=rng)
    return x, attrs40


def _loop_edit(victim: Victim, x: torch.Tensor, t: EditTargets) -> torch.Tensor:
    """Per-target calls of the raw generator, the way the official code runs them."""
    gen = victim.generator
    outs = []
    for name, cond in zip(t.names, t.cond):
        if victim.arch == "stargan":
            outs.append(gen(x, cond))
        elif victim.arch == "attentiongan":
            outs.append(gen(x, cond)[0])
        elif victim.arch == "attgan":
            outs.append(gen(x, cond))
        else:
            tag = gen.tag_names.index(name.split("_")[1])
            outs.append(gen.decode(gen.translate(gen.encode(x), cond, tag)))
    return torch.stack(outs)


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_edit_equals_per_target_loop(arch):
    victim = _victim(arch)
    x, attrs40 = _batch()
    t = victim.targets(attrs40, "all")
    with torch.no_grad():
        edits = victim.edit(x, t)
        expected = _loop_edit(victim, x, t)
    assert edits.shape == (len(t), N, 3, SIZE, SIZE)
    torch.testing.assert_close(edits, expected, atol=1e-4, rtol=1e-4)  # batched vs looped float32 sums
    # Different targets really produce different edits (the condition reaches the generator).
    assert (edits[0] - edits[-1]).abs().max() > 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_gradient_reaches_x_but_not_the_generator(arch):
    victim = _victim(arch)
    x, attrs40 = _batch()
    t = victim.targets(attrs40, "all")
    x = x.requires_grad_(True)
    edits, feat = victim.edit_with_feature(x, t)
    (edits.square().mean() + feat.square().mean()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in victim.generator.parameters())


@pytest.mark.parametrize("arch", ARCHS)
def test_channels_last_path_equals_the_contiguous_one(arch):
    """The CUDA layout (channels-last weights and inputs: layout-native norms, pooling, upsampling) gives the
    same edits, features and input gradients as the contiguous path, and keeps the channels-last layout."""
    x, attrs40 = _batch()
    results = []
    for channels_last in (False, True):
        victim = _victim(arch)
        inp = x.clone()
        if channels_last:
            victim.to(memory_format=torch.channels_last)
            inp = inp.contiguous(memory_format=torch.channels_last)
        inp.requires_grad_(True)
        t = victim.targets(attrs40, "all")
        edits, feat = victim.edit_with_feature(inp, t)
        (edits.square().mean() + feat.square().mean()).backward()
        results.append((edits.detach(), feat.detach(), inp.grad))
    for contiguous, channels_last in zip(*results, strict=True):
        assert channels_last.dim() == 5 or channels_last.is_contiguous(memory_format=torch.channels_last)
        # float32 sums in another order. Tolerance relative to the largest value: random HiSD edits reach |27|
        # (no tanh), and the thread count alone moves its input gradient by 1e-4 of the largest one.
        torch.testing.assert_close(channels_last, contiguous, atol=3e-4 * contiguous.abs().max().item(), rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_train_call_keeps_the_official_inference_mode(arch):
    victim = _victim(arch)
    x, attrs40 = _batch()
    t = victim.targets(attrs40, "all")
    buffers = {k: v.clone() for k, v in victim.generator.state_dict().items()}
    with torch.no_grad():
        before = victim.edit(x, t)
        victim.train()
        assert victim.training
        assert not any(m.training for m in victim.generator.modules())
        after = victim.edit(x, t)
    assert torch.equal(before, after)
    for k, v in victim.generator.state_dict().items():  # no running-stat updates either
        assert torch.equal(v, buffers[k]), k


def test_attgan_victim_uses_batchnorm_running_stats():
    victim = _victim("attgan")
    x, attrs40 = _batch()
    t = victim.targets(attrs40, "train")
    with torch.no_grad():
        edits = victim.edit(x, t)
        victim.generator.train()  # batch statistics: a different function
        train_mode = victim.generator(x, t.cond[0])
    assert (edits[0] - train_mode).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("arch", "shape"),
    [
        ("stargan", (6, N, 32, SIZE // 4, SIZE // 4)),  # main[8]: 4*conv_dim channels at H/4
        ("attentiongan", (6, N, 32, SIZE // 4, SIZE // 4)),
        ("attgan", (14, N, 32, SIZE // 8, SIZE // 8)),  # deepest encoder map (3 layers)
        ("hisd", (8, N, 16, SIZE // 4, SIZE // 4)),  # encode(x)
    ],
)
def test_feature_shapes_and_consistency(arch, shape):
    victim = _victim(arch)
    x, attrs40 = _batch()
    t = victim.targets(attrs40, "all")
    with torch.no_grad():
        feat = victim.feature(x, t)
        _, feat_from_edit = victim.edit_with_feature(x, t)
    assert feat.shape == shape
    torch.testing.assert_close(feat, feat_from_edit, atol=1e-5, rtol=1e-5)
    gen = victim.generator
    with torch.no_grad():
        if arch in ("stargan", "attentiongan"):
            expected = torch.stack([gen.forward_with_feature(x, c)[1] for c in t.cond])
        elif arch == "attgan":
            expected = gen.encode(x)[-1].expand(len(t), *feat.shape[1:])
        else:
            expected = gen.encode(x).expand(len(t), *feat.shape[1:])
    torch.testing.assert_close(feat, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("arch", "all_names", "train_names"),
    [
        ("stargan", ["recon", *STARGAN_ATTRS], ["recon"]),
        ("attentiongan", ["recon", *STARGAN_ATTRS], ["recon"]),
        ("attgan", ["recon", *ATTGAN_ATTRS], ["recon"]),
        (
            "hisd",
            ["ref_Eyeglasses", "latent_Bangs_with", "latent_Bangs_without", "latent_Eyeglasses_with",
             "latent_Eyeglasses_without", "latent_HairColor_black", "latent_HairColor_blond",
             "latent_HairColor_brown"],
            ["ref_Eyeglasses"],
        ),
    ],
)
def test_target_names_and_counts_per_mode(arch, all_names, train_names):
    victim = _victim(arch)
    _, attrs40 = _batch()
    for mode, names in (("all", all_names), ("train", train_names)):
        t = victim.targets(attrs40, mode)
        assert t.names == names == victim.target_names(mode)
        assert t.cond.shape[:2] == (len(names), N)
    assert len(victim.target_names("all")) == {"stargan": 6, "attentiongan": 6, "attgan": 14, "hisd": 8}[arch]


@pytest.mark.parametrize("arch", ["stargan", "attentiongan"])
def test_label_conditions_follow_create_labels(arch):
    victim = _victim(arch)
    _, attrs40 = _batch()
    c_org = attrs40[:, attr_indices(STARGAN_ATTRS)].float()
    all_t = victim.targets(attrs40, "all")
    assert torch.equal(all_t.cond[0], c_org)
    assert torch.equal(all_t.cond[1:], stargan_targets(c_org, STARGAN_ATTRS))
    assert torch.equal(victim.targets(attrs40, "train").cond, c_org[None])
    # the label columns travel with the victim as a buffer that no checkpoint holds
    assert victim.label_columns.tolist() == attr_indices(STARGAN_ATTRS)
    assert not any("label_columns" in key for key in victim.state_dict())


def test_attgan_conditions_follow_official_vectors():
    victim = _victim("attgan")
    _, attrs40 = _batch()
    att_a = attrs40[:, attr_indices(ATTGAN_ATTRS)].float()
    assert torch.equal(victim.targets(attrs40, "all").cond, attgan_targets(att_a, ATTGAN_ATTRS, 0.5, 1.0))
    assert torch.equal(victim.targets(attrs40, "train").cond, ((att_a * 2 - 1) * 0.5)[None])


def test_hisd_styles_reference_and_seeded_latents():
    victim = _victim("hisd")
    gen = victim.generator
    _, attrs40 = _batch()
    t = victim.targets(attrs40, "all")
    with torch.no_grad():
        ref_style = gen.extract(victim.reference, 1)
        torch.testing.assert_close(t.cond[0], ref_style.expand(N, -1))
        z = torch.randn(7, 1, gen.noise_dim, generator=torch.Generator().manual_seed(0))
        pairs = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]
        for k, (i, j) in enumerate(pairs):
            torch.testing.assert_close(t.cond[1 + k], gen.map(z[k], i, j).expand(N, -1))
    again = _victim("hisd").targets(attrs40, "all")
    assert torch.equal(t.cond, again.cond)
    other_seed = make_victim("hisd", gen, reference=victim.reference, latent_seed=3).targets(attrs40, "all")
    assert not torch.equal(t.cond[1:], other_seed.cond[1:])
    assert torch.equal(t.cond[0], other_seed.cond[0])


def test_hisd_edits_a_subset_of_targets_in_any_order():
    victim = _victim("hisd")
    x, attrs40 = _batch()
    t = victim.targets(attrs40, "all")
    order = [5, 0, 2]
    sub = EditTargets([t.names[i] for i in order], t.cond[order])
    with torch.no_grad():
        torch.testing.assert_close(victim.edit(x, sub), victim.edit(x, t)[order], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown target 'ref_Bangs'"):
        victim.edit(x, EditTargets(["ref_Bangs"], t.cond[:1]))


@pytest.mark.parametrize("arch", ARCHS)
def test_victim_is_frozen_and_describes_itself(arch):
    victim = _victim(arch)
    assert not victim.training
    assert all(not p.requires_grad for p in victim.parameters())
    card = victim.describe()
    assert card["arch"] == arch and card["name"] == arch
    assert card["image_size"] == (SIZE if arch in ("attgan", "hisd") else 256)  # generator's size / option
    assert card["num_params"] == sum(p.numel() for p in victim.generator.parameters()) > 0
    assert card["target_names"] == {"all": victim.target_names("all"), "train": victim.target_names("train")}
    assert card["output_range"] == ("[-1, 1]" if arch in ("stargan", "attgan") else "unbounded")
    assert card["attrs"] == {
        "stargan": list(STARGAN_ATTRS), "attentiongan": list(STARGAN_ATTRS), "attgan": list(ATTGAN_ATTRS),
        "hisd": ["Bangs", "Eyeglasses", "HairColor"],
    }[arch]


def test_custom_attrs_and_name():
    attrs = ["Gray_Hair", "Black_Hair", "Smiling", "Male", "Young"]
    victim = make_victim(
        "stargan", _generator("stargan"), attrs=attrs, name="stargan_custom", image_size=SIZE
    )
    _, attrs40 = _batch()
    t = victim.targets(attrs40, "all")
    assert t.names == ["recon", *attrs]
    assert torch.equal(t.cond[0], attrs40[:, attr_indices(attrs)].float())
    assert victim.describe()["name"] == "stargan_custom"


def test_bad_inputs_give_clear_errors():
    gen = _generator("stargan")
    with pytest.raises(ValueError, match="unknown victim arch 'stylegan'"):
        make_victim("stylegan", gen)
    with pytest.raises(TypeError, match="AttGANGenerator"):
        make_victim("attgan", gen)
    with pytest.raises(TypeError, match="unknown option"):
        make_victim("stargan", gen, thres_int=0.5)
    with pytest.raises(ValueError, match="c_dim is 5"):
        make_victim("stargan", gen, attrs=["Male", "Young"])
    with pytest.raises(KeyError, match="Hair_Colour"):
        make_victim("stargan", gen, attrs=["Hair_Colour", "Blond_Hair", "Brown_Hair", "Male", "Young"])
    with pytest.raises(ValueError, match="reference"):
        make_victim("hisd", _generator("hisd"))
    with pytest.raises(ValueError, match="tag 7"):
        make_victim("hisd", _generator("hisd"), reference=torch.zeros(1, 3, SIZE, SIZE), tag=7)
    victim = make_victim("stargan", gen)
    x, attrs40 = _batch()
    with pytest.raises(ValueError, match=r"attrs40 must be \[N, 40\]"):
        victim.targets(attrs40[:, :5])
    with pytest.raises(ValueError, match="unknown target mode 'some'"):
        victim.targets(attrs40, "some")
    t = victim.targets(attrs40)
    with pytest.raises(ValueError, match="batch of 2 images, x has 1"):
        victim.edit(x[:1], t)
    with pytest.raises(ValueError, match="T = len"):
        EditTargets(["recon"], t.cond)
