"""Full-reference image quality: PSNR, SSIM (scikit-image compatible), MS-SSIM, and 8-bit quantisation.

Inputs are ``[N,3,H,W]`` tensors in the model space ``[-1,1]``. PSNR, SSIM and MS-SSIM first map them to
``[0,1]`` with :func:`denorm` (``(x+1)/2`` clamped), as TSDF's ``evaluate_fid.compare`` does, and compute in
float64. They return one float64 value per sample, ``[N]``.

TSDF calls ``compare(denorm(gen_adv), denorm(gen_clean))`` for the output metrics and
``compare(denorm(x), denorm(x + w))`` for the watermark metrics, with SSIM at ``win_size=3`` and
``data_range = img1.max() - img1.min()``: here that is ``ssim(gen_adv, gen_clean, 3, "per_image")`` and
``ssim(x, x + w, 3, "per_image")`` (inputs stay in [-1,1]; the functions denormalise).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

DataRange = float | Literal["per_image"]

SSIM_K1 = 0.01
SSIM_K2 = 0.03
# Wang, Simoncelli & Bovik 2003, five scales from full resolution to 1/16.
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_WIN_SIZE = 11
MS_SSIM_SIGMA = 1.5


def _check_pair(img_a: Tensor, img_b: Tensor) -> None:
    if img_a.dim() != 4 or img_a.shape[1] != 3:
        raise ValueError(f"img_a: expected a [N,3,H,W] image tensor, got shape {tuple(img_a.shape)}")
    if img_a.shape != img_b.shape:
        raise ValueError(
            f"img_a and img_b must have the same shape, got {tuple(img_a.shape)} and {tuple(img_b.shape)}"
        )


def denorm(x: Tensor) -> Tensor:
    """Map ``[-1,1]`` to ``[0,1]``: ``((x + 1) / 2).clamp(0, 1)``; any shape."""
    return ((x + 1) / 2).clamp(0, 1)


def quantize_8bit(x: Tensor) -> Tensor:
    """What a user publishes: clamp ``x`` to [-1,1], round to the 8-bit grid, map back to [-1,1].

    Rounding is half-up, ``floor(v * 255 + 0.5)`` with ``v = (x+1)/2``, as ``torchvision.utils.save_image`` does
    before writing a PNG. Same shape and dtype as ``x``; idempotent.
    """
    levels = torch.floor((x.clamp(-1, 1) + 1) / 2 * 255 + 0.5)
    return levels / 255 * 2 - 1


def _resolve_data_range(data_range: DataRange, img_a01: Tensor) -> Tensor:
    """``[N,1,1,1]`` float64 data range: fixed, or ``max - min`` of each ``img_a`` over (C,H,W) (TSDF)."""
    n = img_a01.shape[0]
    if data_range == "per_image":
        flat = img_a01.flatten(1)
        return (flat.amax(dim=1) - flat.amin(dim=1)).view(n, 1, 1, 1)
    if isinstance(data_range, str) or not data_range > 0:
        raise ValueError(f"data_range: expected a positive number or 'per_image', got {data_range!r}")
    return torch.full((n, 1, 1, 1), float(data_range), dtype=img_a01.dtype, device=img_a01.device)


def psnr(img_a: Tensor, img_b: Tensor, data_range: DataRange = 1.0) -> Tensor:
    """PSNR in dB of ``denorm(img_b)`` against ``denorm(img_a)``: ``10 * log10(R^2 / MSE)`` per sample.

    ``MSE`` is taken over (C,H,W). With the default ``R = 1`` this equals skimage's
    ``peak_signal_noise_ratio`` on [0,1] float images (its default range there). Identical images give
    ``+inf`` (no error is raised); callers decide how to aggregate infinite values.

    Args:
        img_a, img_b: ``[N,3,H,W]`` in [-1,1].
        data_range: ``R``; a positive number or ``"per_image"`` (``max - min`` of ``denorm(img_a)``).
    Returns:
        ``[N]`` float64.
    """
    _check_pair(img_a, img_b)
    a = denorm(img_a.double())
    b = denorm(img_b.double())
    err = ((a - b) ** 2).flatten(1).mean(dim=1)
    r = _resolve_data_range(data_range, a).view(-1)
    return 10 * torch.log10(r**2 / err)


def _band_matrix(size: int, kernel: Tensor) -> Tensor:
    """``[size, size-K+1]`` matrix whose column ``j`` holds ``kernel`` at rows ``j..j+K-1`` (valid 1-D filter)."""
    out = size - kernel.numel() + 1
    cols = torch.arange(out, device=kernel.device)
    band = torch.zeros(size, out, dtype=kernel.dtype, device=kernel.device)
    for i, weight in enumerate(kernel):
        band[cols + i, cols] = weight
    return band


def _valid_filter(t: Tensor, kernel: Tensor) -> Tensor:
    """Separable local weighted mean of ``[..., H, W]`` with the 1-D ``kernel`` (weights sum to 1), no padding.

    Output ``[..., H-K+1, W-K+1]``: exactly the pixels whose window lies inside the image, i.e. skimage's
    filtered map cropped by ``(K-1)//2`` per side. Done as two banded matrix products, which is much faster
    than a grouped float64 convolution on CPU.
    """
    h, w = t.shape[-2:]
    return _band_matrix(h, kernel).T @ t @ _band_matrix(w, kernel)


def _ssim_and_cs(a: Tensor, b: Tensor, r: Tensor, kernel: Tensor, cov_norm: float) -> tuple[Tensor, Tensor]:
    """Per-sample-and-channel means of the SSIM map and of its contrast-structure term, ``[N,C]`` each.

    ``a, b``: ``[N,C,H,W]`` float64 in [0,1]; ``r``: ``[N,1,1,1]`` data range; ``kernel``: 1-D window.
    """
    c1 = (SSIM_K1 * r) ** 2
    c2 = (SSIM_K2 * r) ** 2
    ux, uy, uxx, uyy, uxy = _valid_filter(torch.stack([a, b, a * a, b * b, a * b]), kernel).unbind(0)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    cs_map = (2 * vxy + c2) / (vx + vy + c2)
    ssim_map = (2 * ux * uy + c1) / (ux**2 + uy**2 + c1) * cs_map
    return ssim_map.flatten(2).mean(dim=2), cs_map.flatten(2).mean(dim=2)


def ssim(img_a: Tensor, img_b: Tensor, win_size: int = 7, data_range: DataRange = 1.0) -> Tensor:
    """SSIM of ``denorm(img_a)`` and ``denorm(img_b)``, equal to skimage's ``structural_similarity``.

    Matches ``structural_similarity(a, b, channel_axis=-1, win_size=win_size, data_range=...)`` with its
    defaults: uniform ``win_size x win_size`` window, K1 = 0.01, K2 = 0.03, sample covariance
    (``N/(N-1)`` with ``N = win_size^2``), mean over the pixels at least ``(win_size-1)//2`` from the border,
    computed per channel then averaged over channels.
    TSDF uses ``win_size=3, data_range="per_image"``; the common setting is ``win_size=7, data_range=1.0``.

    Args:
        img_a, img_b: ``[N,3,H,W]`` in [-1,1].
        win_size: odd, ``3 <= win_size <= min(H, W)``.
        data_range: a positive number, or ``"per_image"``: ``max - min`` of each ``denorm(img_a)`` over
            (C,H,W), as TSDF passes ``img1.max() - img1.min()``. A constant ``img_a`` then has range 0 and, as
            in skimage, can give NaN.
    Returns:
        ``[N]`` float64.
    """
    _check_pair(img_a, img_b)
    h, w = img_a.shape[-2:]
    if win_size < 3 or win_size % 2 == 0 or win_size > min(h, w):
        raise ValueError(f"win_size: expected an odd integer in [3, min(H, W) = {min(h, w)}], got {win_size}")
    a = denorm(img_a.double())
    b = denorm(img_b.double())
    r = _resolve_data_range(data_range, a)
    n_px = win_size * win_size
    uniform = torch.full((win_size,), 1.0 / win_size, dtype=a.dtype, device=a.device)
    ssim_nc, _ = _ssim_and_cs(a, b, r, uniform, cov_norm=n_px / (n_px - 1))
    return ssim_nc.mean(dim=1)


def _gaussian_kernel(dtype: torch.dtype, device: torch.device) -> Tensor:
    """1-D Gaussian window of MS-SSIM: 11 taps, sigma 1.5, normalised to sum 1."""
    coords = torch.arange(MS_SSIM_WIN_SIZE, dtype=dtype, device=device) - (MS_SSIM_WIN_SIZE - 1) / 2
    g = torch.exp(-(coords**2) / (2 * MS_SSIM_SIGMA**2))
    return g / g.sum()


def _halve(t: Tensor) -> Tensor:
    """2x2 average pooling; an odd side is first extended by replicating its last row/column (ceil size)."""
    h, w = t.shape[-2:]
    if h % 2 or w % 2:
        t = F.pad(t, (0, w % 2, 0, h % 2), mode="replicate")
    return F.avg_pool2d(t, kernel_size=2)


def ms_ssim_num_scales(height: int, width: int) -> int:
    """Scales MS-SSIM uses for an ``height x width`` image: at most 5, each at least 11 px on its short side.

    Scale ``j`` has side ``ceil(side / 2^j)``, so all 5 scales need a short side of at least 161 px.
    """
    side = min(height, width)
    if side < MS_SSIM_WIN_SIZE:
        raise ValueError(
            f"MS-SSIM needs images of at least {MS_SSIM_WIN_SIZE} px per side, got {height}x{width}"
        )
    n = 1
    while n < len(MS_SSIM_WEIGHTS) and math.ceil(side / 2**n) >= MS_SSIM_WIN_SIZE:
        n += 1
    return n


def ms_ssim(img_a: Tensor, img_b: Tensor, data_range: DataRange = 1.0) -> Tensor:
    """Multi-scale SSIM (Wang et al. 2003) of ``denorm(img_a)`` and ``denorm(img_b)``.

    Gaussian 11x11 window (sigma 1.5), K1 = 0.01, K2 = 0.03, population covariance, no padding; 2x2 average
    pooling between scales. Per channel: ``prod_{j<M} relu(cs_j)^w_j * relu(ssim_M)^w_M``, then the mean over
    channels. Images with a short side >= 161 px use the standard 5 scales and weights
    ``(0.0448, 0.2856, 0.3001, 0.2363, 0.1333)``. Smaller images use :func:`ms_ssim_num_scales` scales
    (e.g. 4 at 128 px) and the first weights renormalised to sum to 1; such values are not comparable with
    5-scale ones.

    Args:
        img_a, img_b: ``[N,3,H,W]`` in [-1,1], each side >= 11.
        data_range: a positive number, or ``"per_image"`` (``max - min`` of each ``denorm(img_a)``).
    Returns:
        ``[N]`` float64.
    """
    _check_pair(img_a, img_b)
    n_scales = ms_ssim_num_scales(*img_a.shape[-2:])
    weights = torch.tensor(MS_SSIM_WEIGHTS[:n_scales], dtype=torch.float64, device=img_a.device)
    weights = weights / weights.sum()
    a = denorm(img_a.double())
    b = denorm(img_b.double())
    r = _resolve_data_range(data_range, a)
    gauss = _gaussian_kernel(a.dtype, a.device)
    factors = []
    for scale in range(n_scales):
        ssim_nc, cs_nc = _ssim_and_cs(a, b, r, gauss, cov_norm=1.0)
        last = scale == n_scales - 1
        factors.append((ssim_nc if last else cs_nc).clamp_min(0) ** weights[scale])
        if not last:
            a, b = _halve(a), _halve(b)
    return torch.stack(factors).prod(dim=0).mean(dim=1)
