"""Image-quality metrics: PSNR/SSIM against scikit-image, MS-SSIM, 8-bit quantisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.utils import save_image

from tsdf_pipeline.metrics import denorm, ms_ssim, ms_ssim_num_scales, psnr, quantize_8bit, ssim

skm = pytest.importorskip("skimage.metrics", reason="scikit-image is a dev dependency (cross-checks)")


def _pair(n: int, h: int, w: int, noise: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random images in [-1,1] and a noisy copy, float64."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(n, 3, h // 5 + 1, w // 5 + 1, generator=g), size=(h, w), mode="bilinear")
    a = (base * 2 - 1).double()
    b = (a + noise * torch.randn(n, 3, h, w, generator=g).double()).clamp(-1, 1)
    return a, b


def _hwc(t: torch.Tensor) -> np.ndarray:
    return denorm(t).permute(1, 2, 0).numpy()


def test_psnr_known_value_20db() -> None:
    a = torch.zeros(2, 3, 8, 8)
    b = a + 0.2  # 0.1 apart on the [0,1] scale -> MSE 0.01
    torch.testing.assert_close(psnr(a, b), torch.full((2,), 20.0, dtype=torch.float64))


def test_psnr_identical_is_inf_without_error() -> None:
    a, _ = _pair(2, 16, 16, 0.0)
    out = psnr(a, a)
    assert out.shape == (2,)
    assert torch.isinf(out).all() and (out > 0).all()


def test_psnr_clamps_after_denorm() -> None:
    a = torch.ones(1, 3, 4, 4)
    torch.testing.assert_close(psnr(a, a + 0.5), psnr(a, a.clone()))  # 1.5 clamps to 1 -> identical


@pytest.mark.parametrize("data_range", [1.0, "per_image"])
def test_psnr_matches_skimage(data_range: float | str) -> None:
    a, b = _pair(3, 24, 20, 0.1)
    out = psnr(a, b, data_range=data_range)
    for i in range(3):
        x, y = _hwc(a[i]), _hwc(b[i])
        r = x.max() - x.min() if data_range == "per_image" else None
        assert out[i].item() == pytest.approx(skm.peak_signal_noise_ratio(x, y, data_range=r), abs=1e-5)


@pytest.mark.parametrize(("win_size", "data_range"), [(3, "per_image"), (7, 1.0), (3, 1.0), (7, "per_image")])
def test_ssim_matches_skimage(win_size: int, data_range: float | str) -> None:
    a, b = _pair(3, 40, 50, 0.15)
    out = ssim(a, b, win_size=win_size, data_range=data_range)
    for i in range(3):
        x, y = _hwc(a[i]), _hwc(b[i])
        r = x.max() - x.min() if data_range == "per_image" else data_range
        ref = skm.structural_similarity(x, y, channel_axis=-1, win_size=win_size, data_range=r)
        assert out[i].item() == pytest.approx(ref, abs=1e-5)


def test_ssim_float32_input_matches_skimage_on_float32() -> None:
    a, b = _pair(2, 32, 32, 0.2)
    a, b = a.float(), b.float()
    out = ssim(a, b, win_size=3, data_range="per_image")
    for i in range(2):
        x, y = _hwc(a[i]), _hwc(b[i])
        ref = skm.structural_similarity(x, y, channel_axis=-1, win_size=3, data_range=x.max() - x.min())
        assert out[i].item() == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize("win_size", [3, 7])
def test_ssim_identical_is_one(win_size: int) -> None:
    a, _ = _pair(2, 20, 20, 0.0)
    torch.testing.assert_close(ssim(a, a, win_size, "per_image"), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(ssim(a, a, win_size, 1.0), torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("win_size", [2, 1, 9])
def test_ssim_rejects_bad_window(win_size: int) -> None:
    a = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="win_size"):
        ssim(a, a, win_size=win_size)


def test_data_range_rejects_bad_value() -> None:
    a = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="data_range"):
        psnr(a, a, data_range=0.0)
    with pytest.raises(ValueError, match="data_range"):
        ssim(a, a, data_range="max")


@pytest.mark.parametrize(
    ("side", "scales"), [(256, 5), (161, 5), (160, 4), (128, 4), (41, 3), (21, 2), (11, 1)]
)
def test_ms_ssim_num_scales(side: int, scales: int) -> None:
    assert ms_ssim_num_scales(side, side + 7) == scales


def test_ms_ssim_rejects_tiny_image() -> None:
    with pytest.raises(ValueError, match="11 px"):
        ms_ssim_num_scales(10, 64)


def test_ms_ssim_identical_is_one_at_full_scale() -> None:
    a, _ = _pair(2, 161, 170, 0.0)
    torch.testing.assert_close(ms_ssim(a, a), torch.ones(2, dtype=torch.float64))


def test_ms_ssim_decreases_with_noise() -> None:
    a, _ = _pair(1, 64, 64, 0.0)
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(1), dtype=a.dtype)
    values = [ms_ssim(a, (a + s * noise).clamp(-1, 1)).item() for s in (0.02, 0.1, 0.4)]
    assert values[0] > values[1] > values[2]
    assert 0 < values[2] < 1


def _skimage_gauss_ssim(x: np.ndarray, y: np.ndarray, k1: float = 0.01) -> float:
    """Single-channel Gaussian SSIM as in Wang et al.: sigma 1.5 (11x11), population covariance."""
    return skm.structural_similarity(
        x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, K1=k1
    )


def test_ms_ssim_single_scale_is_gaussian_ssim_of_skimage() -> None:
    a, b = _pair(2, 16, 18, 0.1)  # 16 px -> one scale
    out = ms_ssim(a, b)
    for i in range(2):
        x, y = _hwc(a[i]), _hwc(b[i])
        ref = np.mean([_skimage_gauss_ssim(x[..., c], y[..., c]) for c in range(3)])
        assert out[i].item() == pytest.approx(ref, abs=1e-5)


def test_ms_ssim_two_scales_combines_cs_and_ssim_with_renormalised_weights() -> None:
    a, b = _pair(1, 32, 32, 0.1)  # 32 px -> two scales
    w0, w1 = 0.0448 / (0.0448 + 0.2856), 0.2856 / (0.0448 + 0.2856)
    x, y = _hwc(a[0]), _hwc(b[0])
    x2 = x.reshape(16, 2, 16, 2, 3).mean(axis=(1, 3))
    y2 = y.reshape(16, 2, 16, 2, 3).mean(axis=(1, 3))
    per_channel = []
    for c in range(3):
        # A huge K1 makes the luminance factor 1, leaving the contrast-structure term cs.
        cs0 = _skimage_gauss_ssim(x[..., c], y[..., c], k1=1e6)
        ssim1 = _skimage_gauss_ssim(x2[..., c], y2[..., c])
        per_channel.append(cs0**w0 * ssim1**w1)
    assert ms_ssim(a, b)[0].item() == pytest.approx(float(np.mean(per_channel)), abs=1e-5)


def test_quantize_8bit_is_idempotent_on_grid_and_clamped() -> None:
    x = torch.cat([torch.linspace(-1.3, 1.3, 997), torch.tensor([-1.0, 1.0])]).view(1, 1, 1, -1)
    q = quantize_8bit(x)
    torch.testing.assert_close(quantize_8bit(q), q, rtol=0, atol=1e-6)
    levels = (q + 1) / 2 * 255
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)
    assert q.min().item() == -1.0 and q.max().item() == 1.0
    inside = x.abs() <= 1
    assert (q - x)[inside].abs().max().item() <= 1 / 255 + 1e-6


def test_quantize_8bit_equals_a_published_png(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(1, 3, 16, 16, generator=g) * 2.4 - 1.2).clamp(-1.5, 1.5)
    path = tmp_path / "protected.png"
    save_image(denorm(x), path)
    loaded = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None]
    torch.testing.assert_close(quantize_8bit(x), loaded.float() / 255 * 2 - 1, rtol=0, atol=1e-6)
