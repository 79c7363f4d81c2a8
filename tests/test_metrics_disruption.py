"""Interruption metrics: CMUA's mask quirk, masked L2 with empty masks, success rates, unmasked norms."""

from __future__ import annotations

import math

import pytest
import torch

from tsdf_pipeline.metrics import (
    edit_mask,
    l0_norm,
    l1,
    l2_mask,
    lneg_inf_norm,
    mse,
    ruiz_success,
    success_rate_mask,
)


def _cmua_sample(gen: torch.Tensor, gen_noattack: torch.Tensor, img_a: torch.Tensor) -> tuple[float, bool]:
    """CMUA ``evaluate.py`` per-sample statements on a batch of one, re-expressed."""
    mask = abs(gen_noattack - img_a)
    mask = mask[0, 0] + mask[0, 1] + mask[0, 2]
    mask[mask > 0.5] = 1
    mask[mask < 0.5] = 0
    value = ((gen * mask - gen_noattack * mask) ** 2).sum() / (mask.sum() * 3)
    return float(value), bool(value > 0.05)


def test_edit_mask_thresholds_and_keeps_exact_half() -> None:
    x = torch.zeros(1, 3, 1, 3)
    gen_clean = torch.zeros(1, 3, 1, 3)
    gen_clean[0, :, 0, 0] = torch.tensor([0.25, 0.25, 0.0])  # sum exactly 0.5 -> stays 0.5
    gen_clean[0, :, 0, 1] = torch.tensor([0.3, -0.3, 0.0])  # |.| sums to 0.6 -> 1
    gen_clean[0, :, 0, 2] = torch.tensor([0.2, 0.2, 0.0])  # 0.4 -> 0
    mask = edit_mask(gen_clean, x)
    assert mask.shape == (1, 1, 1, 3)
    assert mask.flatten().tolist() == [0.5, 1.0, 0.0]


def test_l2_mask_with_all_ones_mask_is_plain_mse() -> None:
    gen_adv = torch.rand(4, 3, 8, 8) * 2 - 1
    gen_clean = torch.rand(4, 3, 8, 8) * 2 - 1
    values, valid = l2_mask(gen_adv, gen_clean, torch.ones(4, 1, 8, 8))
    assert valid.all()
    torch.testing.assert_close(values, mse(gen_adv, gen_clean))


def test_l2_mask_hand_value_with_half_pixel() -> None:
    gen_clean = torch.zeros(1, 3, 2, 2)
    gen_adv = torch.zeros(1, 3, 2, 2)
    gen_adv[0, :, 0, 0] = 0.4  # inside the mask (1)
    gen_adv[0, :, 0, 1] = 0.2  # half-weight pixel (0.5)
    gen_adv[0, :, 1, 1] = 0.9  # outside the mask (0)
    mask = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]]])
    values, valid = l2_mask(gen_adv, gen_clean, mask)
    expected = 3 * (0.4**2 + (0.2 * 0.5) ** 2) / (3 * 1.5)
    assert bool(valid[0])
    assert values[0].item() == pytest.approx(expected, rel=1e-6)


def test_l2_mask_empty_mask_is_invalid_not_division_by_zero() -> None:
    gen_adv = torch.rand(3, 3, 4, 4)
    gen_clean = torch.rand(3, 3, 4, 4)
    mask = torch.ones(3, 1, 4, 4)
    mask[1] = 0
    values, valid = l2_mask(gen_adv, gen_clean, mask)
    assert valid.tolist() == [True, False, True]
    assert math.isnan(values[1].item())
    assert torch.isfinite(values[[0, 2]]).all()


def test_l2_mask_rejects_rgb_mask() -> None:
    t = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="mask"):
        l2_mask(t, t, torch.ones(2, 3, 4, 4))


def test_l2_mask_matches_cmua_loop_on_random_batch() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 16, 16, generator=g) * 2 - 1
    gen_clean = (x + 0.4 * torch.randn(5, 3, 16, 16, generator=g)).clamp(-1, 1)
    gen_adv = (gen_clean + 0.3 * torch.randn(5, 3, 16, 16, generator=g)).clamp(-1, 1)
    values, valid = l2_mask(gen_adv, gen_clean, edit_mask(gen_clean, x))
    success = values > 0.05
    for i in range(5):
        ref_value, ref_success = _cmua_sample(gen_adv[i : i + 1], gen_clean[i : i + 1], x[i : i + 1])
        assert bool(valid[i])
        assert values[i].item() == pytest.approx(ref_value, rel=1e-5)
        assert bool(success[i]) == ref_success


def test_success_rate_mask_excludes_empty_masks_and_is_strict() -> None:
    l2 = torch.tensor([0.10, 0.03, math.nan, 0.06, 0.05])
    valid = torch.tensor([True, True, False, True, True])
    out = success_rate_mask(l2, valid)
    assert out["n_success"] == 2  # 0.10 and 0.06; exactly 0.05 is not a success
    assert out["n_valid"] == 4
    assert out["n_empty_mask"] == 1
    assert out["n_samples"] == 5
    assert out["sr_mask"] == pytest.approx(2 / 4)
    assert out["sr_mask_all"] == pytest.approx(2 / 5)


def test_success_rate_mask_all_empty_gives_nan_rate() -> None:
    out = success_rate_mask(torch.full((2,), math.nan), torch.zeros(2, dtype=torch.bool))
    assert math.isnan(out["sr_mask"])
    assert out["n_empty_mask"] == 2
    assert out["n_success"] == 0


def test_unmasked_norms_on_hand_made_difference() -> None:
    gen_clean = torch.zeros(2, 3, 2, 2)
    gen_adv = torch.zeros(2, 3, 2, 2)
    gen_adv[0, 0, 0, 0] = 0.8
    gen_adv[0, 1, 1, 1] = -0.4
    gen_adv[1] = 0.1  # every entry differs by 0.1
    torch.testing.assert_close(mse(gen_adv, gen_clean), torch.tensor([(0.64 + 0.16) / 12, 0.01]))
    torch.testing.assert_close(l1(gen_adv, gen_clean), torch.tensor([1.2 / 12, 0.1]))
    assert l0_norm(gen_adv, gen_clean).tolist() == [2.0, 12.0]
    torch.testing.assert_close(lneg_inf_norm(gen_adv, gen_clean), torch.tensor([0.0, 0.1]))


def test_ruiz_success_is_strict_threshold_on_mse() -> None:
    assert ruiz_success(torch.tensor([0.049, 0.05, 0.051])).tolist() == [False, False, True]
