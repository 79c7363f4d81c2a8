"""Detector construction and strict weight loading: wrappers, clear errors, channel order, gradients."""

from __future__ import annotations

import pytest
import torch

from tests.parity_utils import synth_module, synth_weights
from tsdf_pipeline.models.detectors import (
    DetectorWeightsError,
    build_detector,
    load_detector,
)

RETINA = "retinaface_mobilenet025"


@pytest.fixture(scope="module")
def retina_sd():
    return synth_weights(RETINA)


@pytest.mark.parametrize("name, file_name, upstream", [
    ("s3fd", "sfd_face.pth", "yxlijun/S3FD.pytorch"),
    ("dsfd", "dsfd_vgg_0.880.pth", "yxlijun/DSFD.pytorch"),
    ("retinaface", "mobilenet0.25_Final.pth", "biubug6/Pytorch_Retinaface"),
])
def test_missing_weights_name_the_file_and_its_source(tmp_path, name, file_name, upstream) -> None:
    with pytest.raises(FileNotFoundError) as err:
        load_detector(name, tmp_path)
    assert file_name in str(err.value) and upstream in str(err.value)
    with pytest.raises(FileNotFoundError, match=file_name):
        load_detector(name)


def test_extra_key_is_rejected(tmp_path, retina_sd) -> None:
    sd = dict(retina_sd)
    sd["ClassHead.3.conv1x1.weight"] = torch.zeros(4, 64, 1, 1)
    torch.save(sd, tmp_path / "mobilenet0.25_Final.pth")
    with pytest.raises(DetectorWeightsError, match=r"unexpected keys \['ClassHead\.3\.conv1x1\.weight'\]"):
        load_detector(RETINA, tmp_path)


def test_missing_key_and_wrong_shape_are_rejected(tmp_path, retina_sd) -> None:
    sd = dict(retina_sd)
    del sd["ssh2.conv3X3.1.running_var"]
    sd["BboxHead.0.conv1x1.bias"] = torch.zeros(6)
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    with pytest.raises(DetectorWeightsError) as err:
        load_detector(RETINA, path)
    assert "ssh2.conv3X3.1.running_var" in str(err.value)
    assert "BboxHead.0.conv1x1.bias: checkpoint [6] vs model [8]" in str(err.value)


def test_non_tensor_checkpoint_is_rejected(tmp_path) -> None:
    path = tmp_path / "w.pth"
    torch.save({"conv.weight": [1, 2]}, path)
    with pytest.raises(DetectorWeightsError, match="'conv.weight' is list"):
        load_detector(RETINA, path)


@pytest.mark.parametrize("variant", ["raw", "weight_wrapper", "state_dict_wrapper", "module_prefix_no_nbt"])
def test_official_layout_variants_load_identically(tmp_path, retina_sd, variant) -> None:
    synth = synth_module()
    wrapped = {
        "raw": retina_sd,
        "weight_wrapper": {"epoch": 1, "weight": retina_sd},
        "state_dict_wrapper": {"state_dict": retina_sd},
        "module_prefix_no_nbt": synth.add_prefix(synth.drop_num_batches_tracked(retina_sd)),
    }[variant]
    torch.save(wrapped, tmp_path / "mobilenet0.25_Final.pth")
    detector = load_detector("retinaface", tmp_path)
    loaded = detector.state_dict()
    for key, value in retina_sd.items():
        torch.testing.assert_close(loaded[key], value, msg=key)
    assert not any(p.requires_grad for p in detector.parameters())
    assert not detector.training
    detector.train()
    assert not detector.training and not detector.body.stage1[0][1].training


def test_default_preprocessing_channel_order() -> None:
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    img255 = (x + 1) * 127.5
    rgb_mean = torch.tensor([123.0, 117.0, 104.0]).view(1, 3, 1, 1)
    bgr_mean = torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1)
    for name in ("s3fd", "dsfd"):
        detector = build_detector(name)
        torch.testing.assert_close(detector.preprocess(x), img255 - rgb_mean)
        release = build_detector(name, release_compat=True)
        torch.testing.assert_close(release.preprocess(x), img255[:, [2, 1, 0]] - bgr_mean)
    torch.testing.assert_close(build_detector(RETINA).preprocess(x), img255[:, [2, 1, 0]] - bgr_mean)


def test_outputs_carry_gradient_except_release_retinaface(retina_sd) -> None:
    small = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    s3fd = build_detector("s3fd").requires_grad_(False)
    out = s3fd(small)
    assert [tuple(f.shape) for f in out.features] == [(1, 256, 8, 8), (1, 512, 4, 4), (1, 512, 2, 2)]
    assert out.extras["conv3_3_conf"].shape == (1, 4, 8, 8) and out.raw.scores.shape == (1, 64 + 16 + 4 + 1 + 1 + 1)
    loss = out.raw.scores.sum() + sum(f.sum() for f in out.features) + out.extras["conv3_3_conf"].sum()
    (grad,) = torch.autograd.grad(loss, small)
    assert grad.abs().sum() > 0

    x = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_(True)

    for release_compat, expect_grad in ((False, True), (True, False)):
        retina = build_detector(RETINA, release_compat=release_compat).requires_grad_(False)
        retina.load_state_dict(retina_sd)
        raw = retina.raw(x)
        feats = retina.features(x)
        assert raw.scores.shape == (1, 2 * (64 + 16 + 4)) and raw.logits.shape == (1, 168, 2)
        assert [f.shape[-1] for f in feats] == [8, 4, 2]
        assert raw.scores.requires_grad is expect_grad and feats[0].requires_grad is expect_grad


def test_unknown_detector_and_bad_options() -> None:
    with pytest.raises(ValueError, match="unknown detector 'yolo'"):
        build_detector("yolo")
    with pytest.raises(TypeError, match="unexpected options for s3fd"):
        build_detector("s3fd", min_face_size=20)
