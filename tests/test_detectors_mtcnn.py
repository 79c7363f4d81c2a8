"""MTCNN (facenet-pytorch weights) as a Detector: detection on a real portrait, gradients, empty output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from tsdf_pipeline.models.detectors import load_detector
from tsdf_pipeline.models.detectors.mtcnn import MTCNNDetector, pyramid_scales


def _portrait() -> np.ndarray:
    """A real RGB portrait ``[H,W,3]`` uint8: scikit-image's astronaut, else matplotlib's Grace Hopper."""
    try:
        from skimage import data

        return data.astronaut()
    except ImportError:
        import matplotlib.cbook
        from PIL import Image

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
            return np.asarray(Image.open(fh).convert("RGB"))


@pytest.fixture(scope="module")
def mtcnn() -> MTCNNDetector:
    return load_detector("mtcnn")


@pytest.fixture(scope="module")
def face() -> torch.Tensor:
    """The portrait at 256x256 as ``[1,3,256,256]`` RGB in [-1,1]."""
    img = torch.from_numpy(_portrait().copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    return F.interpolate(img, size=(256, 256), mode="area").clamp(-1, 1)


def test_pyramid_matches_mtcnn_rule() -> None:
    scales = pyramid_scales(256, 256)
    assert scales[0] == pytest.approx(0.6) and len(scales) == 8
    assert scales[1] / scales[0] == pytest.approx(0.709)
    assert 256 * scales[-1] >= 12 > 256 * scales[-1] * 0.709


def test_detects_the_face(mtcnn, face) -> None:
    dets = mtcnn.detect(face)
    assert len(dets.boxes) == 1 and dets.scores[0].numel() >= 1
    assert dets.scores[0][0] > 0.9
    x1, y1, x2, y2 = dets.boxes[0][0].tolist()
    assert 0 <= x1 < x2 <= 256 and 0 <= y1 < y2 <= 256 and x2 - x1 > 20


def test_raw_scores_are_differentiable_over_most_pixels(mtcnn, face) -> None:
    x = face.clone().requires_grad_(True)
    out = mtcnn(x)
    # P-Net on a level of side s: conv3 (s-2), ceil-pool /2, conv3, conv3 -> ceil((s-2)/2) - 4 cells.
    n_cells = sum(((int(256 * s + 1) - 1) // 2 - 4) ** 2 for s in pyramid_scales(256, 256))
    assert out.raw.scores.shape == (1, n_cells) and out.raw.boxes.shape == (1, n_cells, 4)
    assert out.raw.logits.shape == (1, n_cells, 2)
    assert [f.shape[1] for f in out.features] == [10, 16, 32]
    best = out.raw.scores[0].argmax()
    assert out.raw.scores[0, best] > 0.9
    (grad,) = torch.autograd.grad(out.raw.scores.sum(), x)
    assert (grad.abs().sum(dim=1) > 0).float().mean() > 0.9


def test_refine_scores_the_detected_box_with_gradient(mtcnn, face) -> None:
    box = mtcnn.detect(face).boxes[0][:1]
    x = face.clone().requires_grad_(True)
    rnet_prob, onet_prob = mtcnn.refine(x, [box])
    assert rnet_prob.shape == onet_prob.shape == (1,)
    assert onet_prob[0] > 0.9
    (grad,) = torch.autograd.grad(onet_prob.sum(), x)
    x1, y1, x2, y2 = box[0].round().int().tolist()
    inside = grad.abs().sum(dim=1)[0, y1:y2, x1:x2]
    assert (inside > 0).float().mean() > 0.5 and grad.abs().sum() > 0


def test_flat_grey_image_gives_no_detection(mtcnn) -> None:
    dets = mtcnn.detect(torch.zeros(2, 3, 128, 128))
    assert [b.shape for b in dets.boxes] == [(0, 4), (0, 4)]
    assert [s.numel() for s in dets.scores] == [0, 0]


def test_preprocess_is_mtcnn_normalisation(mtcnn) -> None:
    x = torch.linspace(-1, 1, 12).view(1, 3, 2, 2)
    torch.testing.assert_close(mtcnn.preprocess(x), ((x + 1) * 127.5 - 127.5) / 128)
