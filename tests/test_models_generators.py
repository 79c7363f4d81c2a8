"""StarGAN / AttentionGAN / AttGAN generators: official layouts, exact parity with the official code, norm rules."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.parity_utils import (
    assert_matches,
    fixture_record,
    load_fixture,
    load_manifest,
    select_record,
    synth_module,
    synth_weights,
)
from tsdf_pipeline.models import build_discriminator, build_generator, default_config, load_generator

OFFICIAL_FILES = {"stargan": "200000-G.ckpt", "attentiongan": "200000-G.ckpt", "attgan": "weights.199.pth"}
SMALL = {"stargan": {"conv_dim": 8, "c_dim": 3, "repeat_num": 2},
         "attentiongan": {"conv_dim": 8, "c_dim": 3, "repeat_num": 2},
         "attgan": {"enc_dim": 8, "enc_layers": 3, "dec_dim": 8, "dec_layers": 3, "n_attrs": 4, "img_size": 32}}


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("arch", ["stargan", "attentiongan", "attgan"])
def test_default_generator_matches_manifest(arch):
    manifest = load_manifest(arch)
    shapes = _shapes(build_generator(arch))
    optional = set(manifest["optional_keys"])
    assert {k: v for k, v in shapes.items() if k not in optional} == {
        k: v for k, v in manifest["state_dict"].items() if k not in optional}
    assert set(shapes) - set(manifest["state_dict"]) <= optional
    assert sum(p.numel() for p in build_generator(arch).parameters()) == manifest["config"]["n_params"]


def test_stargan_discriminator_matches_manifest():
    assert _shapes(build_discriminator("stargan")) == load_manifest("stargan")["discriminator_state_dict_256"]


def test_attgan_discriminator_upstream_layout():
    shapes = _shapes(build_discriminator("attgan"))
    expected = {}
    n_in = 3
    for i, n_out in enumerate([64, 128, 256, 512, 1024]):
        expected[f"conv.{i}.layers.0.weight"] = [n_out, n_in, 4, 4]
        expected[f"conv.{i}.layers.1.weight"] = [n_out]
        expected[f"conv.{i}.layers.1.bias"] = [n_out]
        n_in = n_out
    for head, n_out in (("fc_adv", 1), ("fc_cls", 13)):
        expected.update({f"{head}.0.layers.0.weight": [1024, 1024 * 8 * 8], f"{head}.0.layers.0.bias": [1024],
                         f"{head}.1.layers.0.weight": [n_out, 1024], f"{head}.1.layers.0.bias": [n_out]})
    assert shapes == expected


def test_discriminator_forward_shapes_small():
    d = build_discriminator("stargan", image_size=32, conv_dim=4, c_dim=3, repeat_num=3)
    src, cls = d(torch.zeros(2, 3, 32, 32))
    assert src.shape == (2, 1, 4, 4) and cls.shape == (2, 3)
    d = build_discriminator("attgan", dim=4, n_layers=3, fc_dim=16, n_attrs=5, img_size=32)
    adv, cls = d(torch.zeros(2, 3, 32, 32))
    assert adv.shape == (2, 1) and cls.shape == (2, 5)


def test_small_configs_scale_the_official_shapes():
    sg = _shapes(build_generator("stargan", **SMALL["stargan"]))
    assert sg["main.0.weight"] == [8, 6, 7, 7] and sg["main.11.weight"] == [32, 16, 4, 4]
    assert sum(k.endswith(".main.0.weight") for k in sg) == 2 and sg["main.17.weight"] == [3, 8, 7, 7]
    assert _shapes(build_generator("attentiongan", **SMALL["attentiongan"]))["main.17.weight"] == [4, 8, 7, 7]
    # The 128 px setting has the 256 px shapes; inject_layers=1 widens dec_layers.1 by n_attrs (13).
    assert _shapes(build_generator("attgan", img_size=128)) == _shapes(build_generator("attgan"))
    assert _shapes(build_generator("attgan", inject_layers=1))["dec_layers.1.layers.0.weight"] == [1549, 512, 4, 4]
    ag = _shapes(build_generator("attgan", **SMALL["attgan"]))
    assert ag["dec_layers.0.layers.0.weight"] == [32 + 4, 32, 4, 4] and ag["dec_layers.1.layers.0.weight"] == [48, 16, 4, 4]


def test_default_config_is_a_fresh_copy():
    cfg = default_config("attgan")
    cfg["n_attrs"] = 1
    assert default_config("attgan")["n_attrs"] == 13
    with pytest.raises(ValueError, match="unknown generator config key"):
        build_generator("stargan", n_attrs=3)


def test_small_generators_forward_shapes_and_feature():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    c = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    sg = build_generator("stargan", **SMALL["stargan"]).eval()
    y, feat = sg.forward_with_feature(x, c)
    assert y.shape == x.shape and feat.shape == (2, 32, 8, 8) and y.abs().max() <= 1
    assert torch.equal(y, sg(x, c))
    ag = build_generator("attentiongan", **SMALL["attentiongan"]).eval()
    (result, attention, content), feat = ag.forward_with_feature(x, c)
    assert result.shape == attention.shape == content.shape == x.shape and feat.shape == (2, 32, 8, 8)
    assert torch.allclose(result, content * attention + x * (1 - attention))
    assert torch.equal(attention[:, 0], attention[:, 2]) and bool(((attention > 0) & (attention < 1)).all())
    at = build_generator("attgan", **SMALL["attgan"]).eval()
    zs = at.encode(x)
    assert [tuple(z.shape) for z in zs] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4)]
    a = torch.full((2, 4), 0.5)
    assert torch.equal(at(x, a), at.decode(zs, a)) and torch.equal(at(zs, a, mode="dec"), at(x, a))
    with pytest.raises(ValueError, match="attribute vector"):
        at(x)


def _with_random_running_stats(module: torch.nn.Module) -> torch.nn.Module:
    other = copy.deepcopy(module)
    gen = torch.Generator().manual_seed(7)
    for name, buf in other.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(torch.randn(buf.shape, generator=gen) * 3)
        elif name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape, generator=gen) * 5 + 0.1)
    return other


@pytest.mark.parametrize("arch", ["stargan", "attentiongan"])
def test_instance_norm_uses_input_statistics_in_every_mode(arch):
    torch.manual_seed(1)
    g = build_generator(arch, **SMALL[arch])
    x, c = torch.rand(2, 3, 16, 16) * 2 - 1, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    buffers = {k: v.clone() for k, v in g.named_buffers()}
    out_train = g.train()(x, c)
    out_eval = g.eval()(x, c)
    out_random_stats = _with_random_running_stats(g).eval()(x, c)
    first = (lambda o: o[0]) if arch == "attentiongan" else (lambda o: o)
    assert torch.equal(first(out_train), first(out_eval))
    assert torch.equal(first(out_eval), first(out_random_stats))
    assert all(torch.equal(v, buffers[k]) for k, v in g.named_buffers())
    # Reference: a per-sample forward gives the same result (statistics are per instance, not per batch).
    assert torch.allclose(first(g(x[:1], c[:1])), first(out_eval)[:1], atol=1e-6)


def test_attgan_batchnorm_uses_running_statistics_in_eval():
    torch.manual_seed(2)
    g = build_generator("attgan", **SMALL["attgan"]).eval()
    x, a = torch.rand(2, 3, 32, 32) * 2 - 1, torch.full((2, 4), -0.5)
    out = g(x, a)
    assert not torch.allclose(out, _with_random_running_stats(g).eval()(x, a), atol=1e-3)
    assert not torch.allclose(out, copy.deepcopy(g).train()(x, a), atol=1e-3)
    assert torch.allclose(g(x[:1], a[:1]), out[:1], atol=1e-6)  # eval BN: samples independent


@pytest.fixture(scope="module", params=["stargan", "attentiongan", "attgan"])
def official(request, tmp_path_factory):
    """(arch, fixture, synthetic state dict, generator loaded from it in the official wrapper and file name)."""
    arch = request.param
    sd = synth_weights(arch)
    path = tmp_path_factory.mktemp(arch) / OFFICIAL_FILES[arch]
    torch.save(synth_module().wrap(arch, sd), path)
    return arch, load_fixture(arch), sd, load_generator(arch, path)


def test_legacy_layout_variants_load_identically(official, tmp_path):
    """PyTorch-0.3 saves (no num_batches_tracked) and, for AttGAN, DataParallel ``module.`` keys."""
    arch, _, sd, generator = official
    synth = synth_module()
    reference = generator.state_dict()
    assert not generator.training
    assert all(torch.equal(reference[k], v) for k, v in sd.items())
    variants = {"nbt_dropped": synth.drop_num_batches_tracked(sd)}
    if arch == "attgan":
        variants["module_prefix"] = synth.add_prefix(synth.drop_num_batches_tracked(sd))
    for name, variant in variants.items():
        path = tmp_path / name / OFFICIAL_FILES[arch]
        path.parent.mkdir()
        torch.save(synth.wrap(arch, variant), path)
        loaded = load_generator(arch, path).state_dict()
        assert loaded.keys() == reference.keys(), name
        assert all(torch.equal(loaded[k], reference[k]) for k in reference), name


def test_parity_fast(official):
    """Recorded call on two images: image 0 with its original labels, image 1 with the 4th target.

    StarGAN/AttentionGAN target 3 = Male flipped; AttGAN list index 8 = Male flipped (index 0 = reconstruction).
    """
    arch, fx, _, g = official
    x = fx["inputs"]["x"]
    with torch.no_grad():
        if arch in ("stargan", "attentiongan"):
            c = torch.cat([fx["inputs"]["c_org"][:1], fx["inputs"]["c_trg"][3][1:]])
            out, feat = g.forward_with_feature(x, c)
            assert_matches(feat[0], select_record(fixture_record(fx, "feature_main8"), 0), name="feature_main8")
            if arch == "stargan":
                assert_matches(out[0], select_record(fixture_record(fx, "out_c_org"), 0), name="out_c_org")
                assert_matches(out[1], select_record(select_record(fixture_record(fx, "out"), 3), 1), name="out[3]")
                return
            result, attention, content = out
            assert_matches(result[0], select_record(fixture_record(fx, "result_c_org"), 0), name="result_c_org")
            for key, t in (("result", result), ("attention_mask_1ch", attention[:, :1]), ("content_mask", content)):
                assert_matches(t[1], select_record(select_record(fixture_record(fx, key), 3), 1), name=key)
        else:
            zs = g.encode(x)
            for i, z in enumerate(zs):
                assert_matches(z, fixture_record(fx, f"enc{i}"), name=f"enc{i}")
            att = fx["inputs"]["att_b_"]
            out = g.decode(zs, torch.cat([att[0][:1], att[8][1:]]))
            record = fixture_record(fx, "out")
            assert_matches(out[0], select_record(select_record(record, 0), 0), name="out[0] (reconstruction)")
            assert_matches(out[1], select_record(select_record(record, 8), 1), name="out[8] (Male flipped)")


@pytest.mark.slow
def test_parity_full_recorded_call(official):
    arch, fx, _, g = official
    x = fx["inputs"]["x"]
    with torch.no_grad():
        if arch == "attgan":
            assert_matches(torch.stack([g(x, a) for a in fx["inputs"]["att_b_"]]), fixture_record(fx, "out"))
            for i, z in enumerate(g(x, mode="enc")):
                assert_matches(z, fixture_record(fx, f"enc{i}"), name=f"enc{i}")
            return
        outs = [g(x, c) for c in fx["inputs"]["c_trg"]]
        if arch == "stargan":
            assert_matches(torch.stack(outs), fixture_record(fx, "out"), name="out")
            return
        for j, key in enumerate(("result", "attention_mask_1ch", "content_mask")):
            t = torch.stack([o[j][:, :1] if key == "attention_mask_1ch" else o[j] for o in outs])
            assert_matches(t, fixture_record(fx, key), name=key)
