"""S3FD / DSFD / RetinaFace reproduce the official-code fixtures (tests/fixtures/parity) through load_detector.

The fixtures were made with the TSDF release, which feeds B,G,R input: parity is checked with
``release_compat=True``. Each detector is loaded from a synthetic checkpoint saved in an official layout
variant (``{'weight': sd}`` wrapper, raw dict, ``module.`` prefix without ``num_batches_tracked``).
S3FD and DSFD (slow on CPU) run on the first fixture image only, RetinaFace on both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
import torch

from tests.parity_utils import assert_matches, fixture_record, load_fixture, synth_module, synth_weights
from tsdf_pipeline.models.detectors import OFFICIAL_WEIGHTS, load_detector
from tsdf_pipeline.models.detectors.anchor import AnchorDetector, HeadOutputs

NAMES = ("s3fd", "dsfd", "retinaface_mobilenet025")
FEATURE_KEYS = {
    "s3fd": ("feat_l2norm3_3", "feat_l2norm4_3", "feat_l2norm5_3"),
    "dsfd": ("feat_l2norm_of1", "feat_l2norm_of2", "feat_l2norm_of3"),
    "retinaface_mobilenet025": ("feat_ssh1", "feat_ssh2", "feat_ssh3"),
}
IMAGES_RUN = {"s3fd": 1, "dsfd": 1, "retinaface_mobilenet025": 2}
Run = tuple[AnchorDetector, HeadOutputs, torch.Tensor]


def _checkpoint(name: str) -> object:
    synth = synth_module()
    sd = synth_weights(name)
    if name == "s3fd":
        return {"epoch": 3, "weight": sd}
    if name == "retinaface_mobilenet025":
        return synth.add_prefix(synth.drop_num_batches_tracked(sd))
    return synth.wrap(name, sd)


@pytest.fixture(scope="module")
def run_detector(tmp_path_factory) -> Callable[[str], Run]:
    """``name`` -> (detector loaded from its checkpoint, head outputs on the fixture input, network input)."""
    cache: dict[str, Run] = {}

    def run(name: str) -> Run:
        if name not in cache:
            path = tmp_path_factory.mktemp(name) / OFFICIAL_WEIGHTS[name].file_name
            torch.save(_checkpoint(name), path)
            detector = load_detector(name, path.parent, release_compat=True)
            x = load_fixture(name)["inputs"]["x"][: IMAGES_RUN[name]]
            with torch.no_grad():
                net_input = detector.preprocess(x)
                cache[name] = (detector, detector.heads(net_input), net_input)
        return cache[name]

    return run


def _assert_first_images(tensor: torch.Tensor, record: Mapping[str, Any], n: int, name: str) -> None:
    """Like ``assert_matches`` for a batch holding only the first ``n`` fixture images (stats need all)."""
    if n == record["shape"][0]:
        assert_matches(tensor, record, atol=1e-4, rtol=1e-4, name=name)
        return
    h, w = tensor.shape[-2:]
    views = {"full": tensor, "s4": tensor[..., ::4, ::4], "crop": tensor[..., h // 2 - 8:h // 2 + 8, w // 2 - 8:w // 2 + 8]}
    checked = [k for k in views if k in record]
    assert checked, f"{name}: record has no elementwise view"
    for key in checked:
        torch.testing.assert_close(views[key], record[key][:n].to(tensor.dtype), atol=1e-4, rtol=1e-4,
                                   msg=lambda m, k=key: f"{name}[{k}]: {m}")


@pytest.mark.parametrize("name", NAMES)
def test_heads_priors_and_features_match_official(run_detector, name: str) -> None:
    detector, heads, net_input = run_detector(name)
    fx = load_fixture(name)
    got = {"net_input": net_input, "loc": heads.loc, "conf_logits": heads.logits}
    got.update(zip(FEATURE_KEYS[name], heads.features, strict=True))
    if name == "retinaface_mobilenet025":
        got["conf_softmax"] = torch.softmax(heads.logits, dim=-1)
        got["landms"] = heads.extras["landmarks"]
    if name == "s3fd":
        got["conv3_3_raw_conf"] = heads.extras["conv3_3_conf"]
    for key, tensor in got.items():
        _assert_first_images(tensor, fixture_record(fx, key), IMAGES_RUN[name], f"{name}.{key}")
    if name != "retinaface_mobilenet025":
        priors = detector.priors((256, 256), heads.feature_sizes)
        assert_matches(priors, fixture_record(fx, "priors"), atol=1e-4, name=f"{name}.priors")


@pytest.mark.parametrize("name", ["s3fd", "dsfd"])
def test_detections_match_official_post_nms(run_detector, name: str) -> None:
    detector, heads, _ = run_detector(name)
    fx = load_fixture(name)["outputs"]
    dets = detector.postprocess(detector.decode(heads, (256, 256)).raw, 0.5, 0.3, 750)
    for image in range(IMAGES_RUN[name]):
        want_boxes = fx[f"det{image}_boxes"]["full"] * 256  # the fixture holds normalised xyxy
        assert dets.boxes[image].shape == want_boxes.shape
        torch.testing.assert_close(dets.boxes[image], want_boxes, atol=1e-3, rtol=0)
        torch.testing.assert_close(dets.scores[image], fx[f"det{image}_scores"]["full"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_raw_boxes_are_decoded_priors_in_pixels(run_detector, name: str) -> None:
    detector, heads, _ = run_detector(name)
    raw = detector.decode(heads, (256, 256)).raw
    n, n_priors = heads.loc.shape[:2]
    assert raw.scores.shape == (n, n_priors) and raw.boxes.shape == (n, n_priors, 4)
    assert raw.logits is heads.logits
    torch.testing.assert_close(raw.scores, torch.softmax(heads.logits, -1)[..., 1])
    zero_loc = HeadOutputs(torch.zeros_like(heads.loc), heads.logits, heads.feature_sizes, [])
    boxes = detector.decode(zero_loc, (256, 256)).raw.boxes[0]
    centre_size = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], dim=1)
    priors = detector.priors((256, 256), heads.feature_sizes)
    torch.testing.assert_close(centre_size, priors * 256, atol=1e-4, rtol=1e-5)


def test_s3fd_default_channel_order_is_rgb_and_differs_from_release(run_detector) -> None:
    release, _, net_input = run_detector("s3fd")
    default = type(release)()
    default.load_state_dict(release.state_dict())
    x = load_fixture("s3fd")["inputs"]["x"][:1]
    with torch.no_grad():
        # R,G,B minus (123,117,104) is the release's B,G,R minus (104,117,123) with the channels reversed.
        torch.testing.assert_close(default.preprocess(x), net_input[:1, [2, 1, 0]])
        patch = x[..., 96:160, 96:160]
        diff = (default.conv3_3_conf(patch) - release.conv3_3_conf(patch)).abs().max()
    assert diff > 0.1
