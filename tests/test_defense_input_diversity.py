"""Input diversity as a gather: identical to the release's resize/pad/resize, draw statistics, shapes."""

from __future__ import annotations

import pytest
import torch

from tsdf_pipeline.defense.input_diversity import (
    _axis_table,
    apply_diversity,
    diversity_range,
    diversity_reference,
    sample_diversity,
)


def test_range_is_the_release_at_256_and_scaled_elsewhere():
    r = diversity_range(256)
    assert (r.low, r.high, r.pad) == (256, 289, 290)
    r = diversity_range(32)
    assert (r.low, r.high, r.pad) == (32, 35, 36)
    r = diversity_range(128)
    assert (r.low, r.high, r.pad) == (128, 144, 145)
    assert diversity_range(32, low=30, high=33, pad=40).high == 33
    with pytest.raises(ValueError, match="low <= high < pad"):
        diversity_range(32, low=32, high=36, pad=36)


@pytest.mark.parametrize("size", [32, 256])
def test_gather_equals_release_ops_for_every_size_and_some_offsets(size):
    rng = diversity_range(size)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    sizes = range(rng.low, rng.high + 1) if size == 32 else (256, 271, 289)
    for r in sizes:
        rem = rng.pad - r
        for top, left in {(0, 0), (rem - 1, 0), (0, rem - 1), (rem // 2, (rem - 1) // 3)}:
            rows, row_ok = _axis_table(size, r, top, rng.pad)
            cols, col_ok = _axis_table(size, r, left, rng.pad)
            index, valid = torch.stack([rows, cols]), torch.stack([row_ok, col_ok])
            assert torch.equal(apply_diversity(x, index, valid), diversity_reference(x, r, top, left, rng.pad))


def test_gradient_matches_release_ops():
    rng = diversity_range(32)
    rows, row_ok = _axis_table(32, 34, 1, rng.pad)
    cols, col_ok = _axis_table(32, 34, 0, rng.pad)
    index, valid = torch.stack([rows, cols]), torch.stack([row_ok, col_ok])
    weight = torch.randn(1, 3, 32, 32)
    grads = []
    for fn in (lambda x: apply_diversity(x, index, valid), lambda x: diversity_reference(x, 34, 1, 0, rng.pad)):
        x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
        (fn(x) * weight).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1])  # same terms; the scatter-add order may differ


def test_draw_shapes_probability_and_determinism():
    rng = diversity_range(32)
    draw = sample_diversity(400, rng, 0.5, torch.Generator().manual_seed(0))
    assert draw.index.shape == (400, 2, 32) and draw.valid.shape == (400, 2, 32)
    identity = torch.arange(32)
    applied = ~((draw.index == identity).all(-1).all(-1) & (draw.valid == 1).all(-1).all(-1))
    # an applied draw never is the identity: the padded side (> S) is always resampled back to S
    assert 0.42 < applied.float().mean().item() < 0.58
    again = sample_diversity(400, rng, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(draw.index, again.index) and torch.equal(draw.valid, again.valid)
    never = sample_diversity(50, rng, 0.0, torch.Generator().manual_seed(1))
    assert (never.index == identity).all() and (never.valid == 1).all()
    always = sample_diversity(50, rng, 1.0, torch.Generator().manual_seed(1))
    assert not ((always.index == identity).all(-1).all(-1) & (always.valid == 1).all(-1).all(-1)).any()
    x = torch.randn(3, 3, 32, 32)
    assert apply_diversity(x, always.index[0], always.valid[0]).shape == x.shape
