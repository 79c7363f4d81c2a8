"""Loss terms shared by the WGAN-GP trainers (StarGAN, AttentionGAN, AttGAN)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def gradient_penalty(
    critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, *, alpha_weighs_real: bool = True
) -> Tensor:
    """WGAN-GP: ``mean((||d critic(x_hat) / d x_hat||_2 - 1)^2)`` at ``x_hat`` between ``real`` and ``fake``.

    ``real``/``fake``: ``[N,3,H,W]``; one uniform weight ``alpha`` per sample (global torch RNG) gives
    ``alpha*real + (1-alpha)*fake`` (StarGAN) or, with ``alpha_weighs_real=False``,
    ``real + alpha*(fake-real)`` (AttGAN).
    ``critic`` maps ``[N,3,H,W]`` to adversarial scores of any shape; their gradient is taken with
    all-ones weights (a sum), as in both upstream implementations.
    """
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    real, fake = real.detach(), fake.detach()
    x_hat = alpha * real + (1 - alpha) * fake if alpha_weighs_real else real + alpha * (fake - real)
    x_hat.requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out.float().sum(), x_hat, create_graph=True)
    norm = grad.float().flatten(1).pow(2).sum(1).sqrt()
    return (norm - 1).pow(2).mean()
