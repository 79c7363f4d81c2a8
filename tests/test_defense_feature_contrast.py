"""Feature-contrast enhancement against a hand computation, and the ensemble feature maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx

from tsdf_pipeline.defense.feature_contrast import (
    bilinear_resize,
    enhance_feature_contrast,
    summed_feature_map,
)


def _hand_enhance(clean: np.ndarray, adv: np.ndarray, temperature: float, alpha: float) -> np.ndarray:
    """Element-by-element float64 version of TSDF_METHOD.md §1.3 (stats along dim 1, unbiased std)."""
    b, h, w = clean.shape
    eps = 1e-7

    def stats(x):
        mean = np.array([[x[i, :, j].mean() for j in range(w)] for i in range(b)])[:, None, :]
        std = np.array([[x[i, :, j].std(ddof=1) for j in range(w)] for i in range(b)])[:, None, :]
        return mean, std

    def attention(x):
        flat = x.reshape(b, -1)
        d = flat.shape[1]
        scores = np.array([[flat[i] @ flat[k] for k in range(b)] for i in range(b)]) / (math.sqrt(d) + eps)
        probs = np.exp(scores - scores.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        return (probs @ flat).reshape(x.shape)

    cm, cs = stats(clean)
    am, as_ = stats(adv)
    cn, an = (clean - cm) / (cs + eps), (adv - am) / (as_ + eps)
    d_loc, d_glob, d_str = an - cn, (am - cm) / (cs + eps), attention(an) - attention(cn)
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    e = sum(sig(np.abs(d).mean(1, keepdims=True)) * d for d in (d_loc, d_glob, d_str))
    enhanced = adv + alpha * np.exp(np.abs(e).mean(1, keepdims=True) / temperature) * e
    em, es = stats(enhanced)
    return (enhanced - em) * (as_ / (es + eps)) + am


def test_enhancement_matches_hand_computation():
    rng = np.random.default_rng(0)
    clean = rng.normal(size=(3, 4, 5))
    adv = clean + 0.3 * rng.normal(size=(3, 4, 5))
    expected = _hand_enhance(clean, adv, 0.1, 0.4)
    got = enhance_feature_contrast(torch.tensor(clean), torch.tensor(adv), temperature=0.1, alpha=0.4)
    assert got.shape == (3, 4, 5) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=2e-4, atol=2e-4)


def test_enhancement_keeps_adv_column_statistics_and_is_differentiable_in_both_inputs():
    gen = torch.Generator().manual_seed(1)
    clean = torch.randn(2, 6, 6, generator=gen, requires_grad=True)
    adv = (clean.detach() + 0.5 * torch.randn(2, 6, 6, generator=gen)).requires_grad_(True)
    out = enhance_feature_contrast(clean, adv)
    torch.testing.assert_close(out.mean(1), adv.mean(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.std(1), adv.std(1), atol=1e-4, rtol=1e-4)
    F.mse_loss(out, adv).backward()
    assert clean.grad.abs().sum() > 0 and adv.grad.abs().sum() > 0


def test_enhancement_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[B,H,W\]"):
        enhance_feature_contrast(torch.zeros(2, 3, 3), torch.zeros(2, 3, 4))


def test_summed_map_equals_resize_then_channel_sum_and_averages_targets():
    feat = torch.randn(2, 3, 5, 8, 8, generator=torch.Generator().manual_seed(2))
    expected = bilinear_resize(feat, 4).sum(2).mean(0)
    torch.testing.assert_close(summed_feature_map(feat, 4), expected, atol=1e-5, rtol=1e-5)
    up = summed_feature_map(feat[:1, :, :, :2, :2], 4)
    assert up.shape == (3, 4, 4)


@pytest.mark.parametrize(("h", "w", "size"), [(64, 64, 32), (8, 8, 32), (5, 7, 4), (32, 32, 32), (3, 3, 1)])
def test_bilinear_resize_equals_interpolate_with_its_gradient(h, w, size):
    x = torch.randn(2, 3, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(h + w)).requires_grad_()
    probe = torch.randn(2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(size))
    ours = bilinear_resize(x, size)
    (grad,) = torch.autograd.grad((ours * probe).sum(), x)
    ref = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    (ref_grad,) = torch.autograd.grad((ref * probe).sum(), x)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(grad, ref_grad, atol=1e-12, rtol=1e-12)


def test_bilinear_resize_keeps_dtype_under_autocast_and_traces_without_upsample_ops():
    feat = torch.randn(1, 2, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert summed_feature_map(feat, 4).dtype == torch.float32  # the summed map stays fp32
        assert bilinear_resize(feat.bfloat16(), 4).dtype == torch.bfloat16

    def grad_of_resize(x):
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(bilinear_resize(x, 4).square().sum(), x)

    bilinear_resize(feat, 4)  # the weights exist before tracing (the clean pass makes them in a run)
    targets = {str(n.target) for n in make_fx(grad_of_resize)(feat).graph.nodes}
    assert not any("upsample" in t for t in targets), targets  # two matrix products, no upsample kernel
