"""Interruption (output-disruption) metrics of CMUA-Watermark / TSDF, per sample.

All image tensors are ``[N,3,H,W]`` in the model space ``[-1,1]``: ``x`` the clean input, ``gen_clean = G(x)``
and ``gen_adv = G(x + w)``. Every function returns one value per sample so that callers aggregate (mean over
samples, success rates) themselves.
"""

from __future__ import annotations

import torch
from torch import Tensor

L2_MASK_SUCCESS_THRESHOLD = 0.05
RUIZ_MSE_SUCCESS_THRESHOLD = 0.05


def _check_images(name: str, t: Tensor) -> None:
    if t.dim() != 4 or t.shape[1] != 3:
        raise ValueError(f"{name}: expected a [N,3,H,W] image tensor, got shape {tuple(t.shape)}")


def _check_pair(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    _check_images(name_a, a)
    _check_images(name_b, b)
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def edit_mask(gen_clean: Tensor, x: Tensor, threshold: float = 0.5) -> Tensor:
    """Region the edit changed, exactly as CMUA/TSDF compute it.

    ``m = sum_c |gen_clean - x|``; entries ``> threshold`` become 1 and entries ``< threshold`` become 0. Entries
    exactly equal to ``threshold`` are left untouched (they stay 0.5 for the default), because the reference code
    assigns ``m[m > 0.5] = 1`` then ``m[m < 0.5] = 0`` and nothing handles equality. Such pixels count half in
    :func:`l2_mask`.

    Args:
        gen_clean: ``[N,3,H,W]`` in [-1,1], edited output of the clean image.
        x: ``[N,3,H,W]`` in [-1,1], clean input.
    Returns:
        ``[N,1,H,W]`` mask with values in {0, threshold, 1}.
    """
    _check_pair("gen_clean", gen_clean, "x", x)
    m = (gen_clean - x).abs().sum(dim=1, keepdim=True)
    m = torch.where(m > threshold, torch.ones_like(m), m)
    return torch.where(m < threshold, torch.zeros_like(m), m)


def l2_mask(gen_adv: Tensor, gen_clean: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Masked MSE ``sum(((adv - clean) * mask)^2) / (3 * sum(mask))`` per sample ([-1,1] scale).

    A sample whose mask sums to 0 (the edit changed nothing) has no defined value: it gets NaN and
    ``valid = False`` instead of the reference code's 0/0.

    Args:
        gen_adv, gen_clean: ``[N,3,H,W]`` in [-1,1].
        mask: ``[N,1,H,W]`` from :func:`edit_mask` (broadcast over the 3 channels, hence the factor 3).
    Returns:
        ``(values [N] float, valid [N] bool)``.
    """
    _check_pair("gen_adv", gen_adv, "gen_clean", gen_clean)
    n, _, h, w = gen_adv.shape
    if mask.shape != (n, 1, h, w):
        raise ValueError(
            f"mask: expected shape {(n, 1, h, w)} (one channel, broadcast over RGB), got {tuple(mask.shape)}"
        )
    mask = mask.to(gen_adv.dtype)
    sq = (((gen_adv - gen_clean) * mask) ** 2).flatten(1).sum(dim=1)
    area = mask.flatten(1).sum(dim=1)
    valid = area > 0
    values = torch.where(valid, sq / (3 * area.clamp_min(torch.finfo(sq.dtype).tiny)), torch.nan)
    return values, valid


def success_rate_mask(
    l2: Tensor, valid: Tensor, threshold: float = L2_MASK_SUCCESS_THRESHOLD
) -> dict[str, float | int]:
    """SR_mask: fraction of valid samples whose :func:`l2_mask` value exceeds ``threshold`` (strict ``>``).

    Samples with an empty mask are excluded from the denominator, counted in ``n_empty_mask`` and never count as
    successes. ``sr_mask_all`` divides the same successes by all samples, which is what CMUA's ``prop_dist`` and
    TSDF's ``SR_mask`` report (there ``NaN > 0.05`` is False but the sample stays in the denominator).

    Args:
        l2, valid: ``[N]`` outputs of :func:`l2_mask`.
    Returns:
        ``{"sr_mask", "sr_mask_all", "n_success", "n_valid", "n_empty_mask", "n_samples"}``; rates are NaN when
        their denominator is 0.
    """
    if l2.shape != valid.shape or l2.dim() != 1:
        raise ValueError(
            f"l2 and valid must be 1-D tensors of equal length, got {tuple(l2.shape)} and {tuple(valid.shape)}"
        )
    valid = valid.bool()
    n_samples = int(l2.numel())
    n_valid = int(valid.sum())
    n_success = int(((l2 > threshold) & valid).sum())
    return {
        "sr_mask": n_success / n_valid if n_valid else float("nan"),
        "sr_mask_all": n_success / n_samples if n_samples else float("nan"),
        "n_success": n_success,
        "n_valid": n_valid,
        "n_empty_mask": n_samples - n_valid,
        "n_samples": n_samples,
    }


def mse(gen_adv: Tensor, gen_clean: Tensor) -> Tensor:
    """Unmasked MSE over ``(C,H,W)`` per sample (CMUA's "L2 error"); ``[N]``, [-1,1] scale."""
    _check_pair("gen_adv", gen_adv, "gen_clean", gen_clean)
    return ((gen_adv - gen_clean) ** 2).flatten(1).mean(dim=1)


def l1(gen_adv: Tensor, gen_clean: Tensor) -> Tensor:
    """Mean absolute difference over ``(C,H,W)`` per sample (CMUA's "L1 error"); ``[N]``, [-1,1] scale."""
    _check_pair("gen_adv", gen_adv, "gen_clean", gen_clean)
    return (gen_adv - gen_clean).abs().flatten(1).mean(dim=1)


def ruiz_success(mse_values: Tensor, threshold: float = RUIZ_MSE_SUCCESS_THRESHOLD) -> Tensor:
    """Ruiz et al. 2020 disruption success: unmasked :func:`mse` ``> threshold``; ``[N]`` bool."""
    return mse_values > threshold


def l0_norm(gen_adv: Tensor, gen_clean: Tensor) -> Tensor:
    """CMUA's "L0 error": number of entries of ``gen_adv - gen_clean`` that are not exactly 0, per sample.

    Counted over all ``3*H*W`` entries (``torch.norm(d, 0)``); returned as float ``[N]``.
    """
    _check_pair("gen_adv", gen_adv, "gen_clean", gen_clean)
    return (gen_adv != gen_clean).flatten(1).sum(dim=1).to(gen_adv.dtype)


def lneg_inf_norm(gen_adv: Tensor, gen_clean: Tensor) -> Tensor:
    """CMUA's "L_-inf error": ``torch.norm(d, -inf)`` = the SMALLEST absolute entry of ``d``, per sample.

    This is not the usual L-infinity (largest) norm; it is near 0 for any real output and is kept only so that
    CMUA's printed numbers can be reproduced. ``[N]``.
    """
    _check_pair("gen_adv", gen_adv, "gen_clean", gen_clean)
    return (gen_adv - gen_clean).abs().flatten(1).amin(dim=1)
