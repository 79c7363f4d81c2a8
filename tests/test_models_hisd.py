"""HiSD generator / discriminator: official key layout and parity with the official-code fixture."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.parity_utils import (
    assert_matches,
    fixture_record,
    load_fixture,
    load_manifest,
    synth_module,
    synth_weights,
)
from tsdf_pipeline.models import load_generator
from tsdf_pipeline.models.hisd import (
    CONFIG_128,
    DEFAULT_CONFIG,
    DIS_DEFAULT_CONFIG,
    HiSDDiscriminator,
    HiSDGenerator,
    avg_pool_2x2,
    std_instance_norm,
    upsample_nearest_2x,
)

# Recorded (tag, attribute) pairs of ``map_all`` (fixture meta ``outputs``).
MAP_PAIRS = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]
# E and T reach |16|; the README asks for rtol 1e-4 on them (thread count alone moves T by 3e-5).
RTOL = {"E": 1e-4, "T": 1e-4}

TINY_TAGS = [{"name": "A", "attributes": ["x", "y"]}, {"name": "B", "attributes": ["p", "q", "r"]}]
TINY = {
    "new_size": 32, "style_dim": 8, "noise_dim": 4, "encoder": [8, 16], "decoder": [16, 8],
    "extractors": [8, 16, 16, 16], "translators": [8, 8, 8], "mappers_pre": [16, 16],
    "mappers_post": [16, 16], "tags": TINY_TAGS,
}


def _meta_shapes(module_cls, **config) -> dict[str, list[int]]:
    with torch.device("meta"):
        module = module_cls(**config)
    assert not list(module.buffers())
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def test_state_dict_equals_manifest_256():
    manifest = load_manifest("hisd")
    shapes = _meta_shapes(HiSDGenerator)
    assert shapes == {k: list(v) for k, v in manifest["state_dict"].items()}
    assert sum(torch.Size(s).numel() for s in shapes.values()) == manifest["config"]["n_params"]


def test_config_128_differs_only_in_extractor():
    manifest = {k: list(v) for k, v in load_manifest("hisd")["state_dict"].items()}
    shapes = _meta_shapes(HiSDGenerator, **CONFIG_128)
    ext = "extractors.model."
    assert {k: v for k, v in shapes.items() if not k.startswith(ext)} == {
        k: v for k, v in manifest.items() if not k.startswith(ext)}
    # Conv 3->64, DownBlocks 1..5 (64 -> 2048), pooling at 6 (no keys), head 7 (2048 -> 3 tags * 256).
    assert {k[len(ext):].split(".")[0] for k in shapes if k.startswith(ext)} == {"0", "1", "2", "3", "4", "5", "7"}
    assert shapes[ext + "0.weight"] == [64, 3, 1, 1]
    assert shapes[ext + "5.conv2.weight"] == [2048, 1024, 3, 3]
    assert shapes[ext + "5.sc.weight"] == [2048, 1024, 1, 1]
    assert shapes[ext + "7.weight"] == [768, 2048, 1, 1]
    with torch.device("meta"):
        assert HiSDGenerator(**CONFIG_128).image_size == 128


@pytest.fixture(scope="module")
def hisd_outputs(tmp_path_factory) -> dict[str, torch.Tensor]:
    """Every recorded call, run on the synthetic checkpoint loaded from its ``'gen_test'`` entry."""
    fx = load_fixture("hisd")
    synth = synth_module()
    seed = int(fx["meta"]["seed"])
    sd = synth_weights("hisd")  # asserts the fixture digest
    decoy = synth_weights("hisd", seed=seed + 1)
    assert synth.state_dict_digest(decoy) == fx["meta"]["decoy_gen_digest"]
    path = tmp_path_factory.mktemp("hisd") / "gen_00600000.pt"
    torch.save(synth.wrap("hisd", sd, gen=decoy), path)

    gen = load_generator("hisd", path)  # must read 'gen_test', not the decoy under 'gen'
    assert isinstance(gen, HiSDGenerator) and gen.config == DEFAULT_CONFIG
    x, ref, z = (fx["inputs"][k] for k in ("x", "ref", "z"))
    with torch.no_grad():
        e = gen.encode(x)
        style_ref = gen.extract(ref, 1)
        t = gen.translate(e, style_ref, 1)
        return {
            "E": e, "style_ref": style_ref, "T": t, "decode": gen.decode(t),
            "style_ref_all_tags": torch.stack([gen.extract(ref, i) for i in range(3)]),
            "style_x": gen.extract(x, 1),
            "map_all": torch.stack([gen.map(z, i, j) for i, j in MAP_PAIRS]),
            "decode_latent": gen.decode(gen.translate(e, gen.map(z, 0, 0), 0)),
            "decode_E": gen.decode(e),
        }


@pytest.mark.parametrize("name", ["E", "style_ref", "T", "decode", "style_ref_all_tags", "style_x", "map_all",
                                  "decode_latent", "decode_E"])
def test_parity_with_official_fixture(hisd_outputs, name):
    record = fixture_record(load_fixture("hisd"), name)
    assert_matches(hisd_outputs[name], record, atol=1e-4, rtol=RTOL.get(name, 0.0), name=name)


@pytest.fixture(scope="module")
def tiny() -> HiSDGenerator:
    torch.manual_seed(0)
    return HiSDGenerator(**TINY)


def test_tiny_config_shapes_and_style_broadcast(tiny):
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    e = tiny.encode(x)
    assert e.shape == (3, 16, 16, 16)
    s = tiny.extract(x, 1)
    assert s.shape == (3, 8)
    assert tiny.map(torch.randn(3, 4), 1, 2).shape == (3, 8)
    # 2 MiddleBlocks of 8 -> 8 channels: 2 * (8 + 8) AdaIN parameters each.
    assert tiny.translators[0].style_to_params.out_features == 64
    y = tiny.decode(tiny.translate(e, s, 1))
    assert y.shape == x.shape
    # One style [1, style_dim] applies to the whole batch, as in the CMUA reference edit.
    one = tiny.translate(e, s[:1], 0)
    assert torch.allclose(one, tiny.translate(e, s[:1].expand(3, -1), 0), atol=1e-6)
    assert not torch.allclose(one, tiny.translate(e, s[1:2], 0))


def test_outputs_differentiable_in_input_and_mode_independent(tiny):
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    ref = torch.rand(1, 3, 32, 32) * 2 - 1
    y = tiny.decode(tiny.translate(tiny.encode(x), tiny.extract(ref, 0), 0))
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        tiny.train()
        y_train = tiny.decode(tiny.encode(x))
        tiny.eval()
        assert torch.equal(y_train, tiny.decode(tiny.encode(x)))


def test_bad_config_and_inputs_raise_clear_errors(tiny):
    with pytest.raises(TypeError, match="unknown config keys \\['encoder_channels'\\]"):
        HiSDGenerator(encoder_channels=[64, 128, 256])
    with pytest.raises(ValueError, match="decoder\\[0\\] \\(128\\) must equal encoder\\[-1\\] \\(16\\)"):
        HiSDGenerator(**{**TINY, "decoder": [128, 8]})
    with pytest.raises(ValueError, match="tags\\[0\\]"):
        HiSDGenerator(**{**TINY, "tags": [{"name": "A"}]})
    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match="tag index 2 out of range; valid: 0=A, 1=B"):
        tiny.extract(x, 2)
    with pytest.raises(ValueError, match="attribute \\(tag A\\) index 2"):
        tiny.map(torch.zeros(1, 4), 0, 2)
    with pytest.raises(ValueError, match="expected \\[N,C,H,W\\] images with 3 channels"):
        tiny.encode(torch.zeros(1, 4, 32, 32))
    with pytest.raises(ValueError, match="style batch 2 must be 1 or the code batch 3"):
        tiny.translate(torch.zeros(3, 16, 16, 16), torch.zeros(2, 8), 0)


def test_discriminator_layout_matches_upstream_dis():
    """Official ``Dis`` trunk = extractor trunk (same channel list), heads ``fcs.<tag>.0``."""
    shapes = _meta_shapes(HiSDDiscriminator)
    manifest = {k: list(v) for k, v in load_manifest("hisd")["state_dict"].items()}
    trunk = {"conv." + k[len("extractors.model."):]: v for k, v in manifest.items()
             if k.startswith("extractors.model.") and not k.startswith("extractors.model.8.")}
    heads = {}
    for i, tag in enumerate(DIS_DEFAULT_CONFIG["tags"]):
        heads[f"fcs.{i}.0.weight"] = [2 * len(tag["attributes"]), 512 + 256 + 2, 1, 1]
        heads[f"fcs.{i}.0.bias"] = [2 * len(tag["attributes"])]
    assert shapes == {**trunk, **heads}


def test_discriminator_runs_on_small_config():
    torch.manual_seed(0)
    dis = HiSDDiscriminator(style_dim=8, channels=[8, 16, 16],
                            tags=[{**TINY_TAGS[0], "tag_irrelevant_conditions_dim": 1}, TINY_TAGS[1]])
    x = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_(True)
    s = torch.randn(2, 8)
    out0 = dis(x, s, torch.ones(2, 1), 0)
    out1 = dis(x, s, torch.zeros(2, 2), 1)  # tag B uses the default tag-irrelevant dim 2
    assert out0.shape == (2, 2, 2) and out1.shape == (2, 2, 3)
    (grad,) = torch.autograd.grad(out1[:, 0, 1].sum(), x)  # the R1 penalty needs this gradient
    assert grad.abs().sum() > 0
    assert not torch.allclose(out0, dis(x, -s, torch.ones(2, 1), 0))
    with pytest.raises(ValueError, match="with 1 channels/features"):
        dis(x, s, torch.zeros(2, 2), 0)


def test_discriminator_position_aware_head_replaces_the_pool() -> None:
    """``head_kernel`` k > 1 (not upstream): no pool, k x k heads over the final k x k map; same key names;
    inputs of another size are refused."""
    torch.manual_seed(0)
    tags = [{**TINY_TAGS[0], "tag_irrelevant_conditions_dim": 1}]
    pooled = HiSDDiscriminator(style_dim=8, channels=[8, 16, 16], tags=tags)
    position = HiSDDiscriminator(style_dim=8, channels=[8, 16, 16], tags=tags, head_kernel=4)
    assert isinstance(pooled.conv[-1], torch.nn.AdaptiveAvgPool2d) and isinstance(position.conv[-1], torch.nn.Identity)
    assert pooled.fcs[0][0].weight.shape[2:] == (1, 1) and position.fcs[0][0].weight.shape[2:] == (4, 4)
    assert set(pooled.state_dict()) == set(position.state_dict())
    s, y = torch.randn(2, 8), torch.zeros(2, 1)
    assert position(torch.rand(2, 3, 16, 16) * 2 - 1, s, y, 0).shape == (2, 2, 2)
    with pytest.raises(ValueError, match=r"head_kernel 4 needs 16x16 images, got \(32, 32\)"):
        position(torch.zeros(2, 3, 32, 32), s, y, 0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_layout_native_pool_upsample_and_norm_equal_the_reference_ops(channels_last):
    """Pooling, upsampling and HiSD's norm give the reference values and gradients in either layout; a
    contiguous input takes exactly the reference ops, a channels-last one stays channels-last."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8, 6) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(2, 5, 1), torch.randn(1, 5, 1)

    def reference_norm(v):
        flat = v.reshape(2, 5, 48)
        return ((flat - flat.mean(-1, keepdim=True)) / (flat.std(-1, keepdim=True) + 1e-5) * weight + bias
                ).view(2, 5, 8, 6)

    cases = [(avg_pool_2x2, lambda v: F.avg_pool2d(v, 2)),
             (upsample_nearest_2x, lambda v: F.interpolate(v, scale_factor=2, mode="nearest")),
             (lambda v: std_instance_norm(v, weight, bias), reference_norm)]
    for fast, reference in cases:
        a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        out, expected = fast(a), reference(b)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        (expected * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        if channels_last:
            assert out.is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)
        else:
            assert torch.equal(out, expected) and torch.equal(a.grad, b.grad)
