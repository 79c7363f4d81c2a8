"""Published image (clamp + 8-bit) and the attacker's purifications (JPEG, Gaussian blur)."""

from __future__ import annotations

import pytest
import torch

from tsdf_pipeline.metrics.image_quality import quantize_8bit
from tsdf_pipeline.metrics.purification import PURIFICATIONS, apply_purification, gaussian_blur, jpeg, protect


def _smooth_image(n: int = 2, size: int = 32) -> torch.Tensor:
    """Smooth colour gradients with a little texture (JPEG-friendly, not constant), on the 8-bit grid."""
    ramp = torch.linspace(-0.8, 0.8, size)
    img = torch.stack([ramp[None, :].expand(size, size), ramp[:, None].expand(size, size),
                       0.3 * torch.sin(ramp[None, :] * 9) * torch.cos(ramp[:, None] * 7)])
    rng = torch.Generator().manual_seed(0)
    return quantize_8bit(img.expand(n, -1, -1, -1) + 0.05 * torch.rand(n, 3, size, size, generator=rng))


def _on_8bit_grid(x: torch.Tensor) -> bool:
    levels = (x + 1) / 2 * 255
    return bool(torch.allclose(levels, levels.round(), atol=1e-4))


def test_protect_clamps_and_quantises():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.99]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    w = torch.full((1, 3, 2, 2), 0.05)
    p = protect(x, w)
    assert p.max() <= 1 and _on_8bit_grid(p)
    assert torch.equal(p, quantize_8bit((x + w).clamp(-1, 1)))
    with pytest.raises(ValueError, match="perturbation"):
        protect(x, torch.zeros(1, 3, 3, 3))


def test_jpeg_changes_image_and_quality_matters():
    x = _smooth_image()
    j90, j75 = jpeg(x, 90), jpeg(x, 75)
    assert j90.shape == x.shape and j90.dtype == x.dtype
    assert _on_8bit_grid(j90) and _on_8bit_grid(j75)
    assert j90.min() >= -1 and j90.max() <= 1
    err90 = (j90 - x).abs().mean()
    err75 = (j75 - x).abs().mean()
    assert err90 > 0 and not torch.equal(j90, j75)
    assert err75 > err90  # lower quality loses more
    assert err90 < 0.1  # a real codec round trip, not noise
    with pytest.raises(ValueError, match="quality"):
        jpeg(x, 0)


def test_blur_of_constant_is_constant_and_blur_smooths():
    const = torch.full((2, 3, 16, 16), 0.25)
    assert torch.allclose(gaussian_blur(const, 1.0), const, atol=1e-6)
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 2.0 - 1.0
    x = checker.expand(1, 3, 16, 16).clone()
    blurred = gaussian_blur(x, 1.0)
    assert blurred.abs().max() < 0.5  # alternating +-1 averages out
    assert float(blurred.mean()) == pytest.approx(float(x.mean()), abs=0.05)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(x, 0.0)


def test_registry():
    assert set(PURIFICATIONS) == {"none", "jpeg90", "jpeg75", "blur1"}
    x = _smooth_image()
    assert torch.equal(apply_purification("none", x), x)
    assert torch.equal(apply_purification("jpeg90", x), jpeg(x, 90))
    blurred = apply_purification("blur1", x)
    assert _on_8bit_grid(blurred) and torch.equal(blurred, quantize_8bit(gaussian_blur(x, 1.0)))
    with pytest.raises(ValueError, match="unknown purification"):
        apply_purification("jpeg50", x)
