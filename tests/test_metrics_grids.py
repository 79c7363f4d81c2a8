"""Figure helpers: 8-bit conversion, difference maps, row grids, box drawing."""

from __future__ import annotations

import pytest
import torch

from tsdf_pipeline.metrics.grids import amplified_difference, draw_boxes, image_rows, to_uint8
from tsdf_pipeline.metrics.image_quality import quantize_8bit


def test_to_uint8_matches_quantize_8bit():
    x = torch.rand(2, 3, 8, 8) * 2.4 - 1.2
    u8 = to_uint8(x)
    assert u8.dtype == torch.uint8
    assert torch.allclose(u8.float() / 255 * 2 - 1, quantize_8bit(x), atol=1e-6)


def test_amplified_difference():
    a = torch.zeros(1, 3, 4, 4)
    b = a.clone()
    b[..., 0, 0] = 0.02  # 0.01 on [0,1]
    d = amplified_difference(a, b, factor=10)
    assert d[..., 0, 0] == pytest.approx(0.1) and d[..., 1:, 1:].abs().max() == 0
    assert amplified_difference(a, a + 1.0).max() == 1  # clamped


def test_image_rows_layout():
    cols = [torch.full((3, 3, 4, 5), float(j) / 4) for j in range(4)]
    grid = image_rows(cols, padding=1)
    assert grid.shape == (3, 3 * 5 + 1, 4 * 6 + 1)
    assert grid[0, 1, 1 + 2 * 6] == pytest.approx(0.5)  # row 0, column 2
    with pytest.raises(ValueError, match="column 1"):
        image_rows([cols[0], torch.zeros(3, 3, 4, 4)])


def test_draw_boxes_colours_and_clipping():
    img = torch.zeros(3, 20, 20)  # mid grey in [-1,1]
    out = draw_boxes(img, [(torch.tensor([[2.0, 2.0, 10.0, 10.0]]), "red"),
                           (torch.tensor([[12.0, -5.0, 40.0, 15.0]]), "green")])
    assert out.shape == (3, 20, 20) and out.min() >= 0 and out.max() <= 1
    assert torch.allclose(out[:, 2, 5], torch.tensor([1.0, 0.0, 0.0]))  # red top edge
    assert out[1, 0, 15] > 0.4 and out[0, 0, 15] == 0  # green edge clipped onto row 0
    assert torch.allclose(out[:, 6, 6], torch.full((3,), 128 / 255))  # inside untouched
    assert torch.equal(draw_boxes(img, [(torch.zeros(0, 4), "red")]), to_uint8(img).float() / 255)
