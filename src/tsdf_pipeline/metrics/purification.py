"""What a user publishes, and what an attacker may do to it before editing (input purification).

All images are ``[N,3,H,W]`` in ``[-1,1]``. :func:`protect` builds the published image (decision 9:
``clamp(x + w, -1, 1)`` on the 8-bit grid); :data:`PURIFICATIONS` holds the transforms the evaluation applies
to it. Every registered purification returns an image on the 8-bit grid again, as the attacker saves it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2.functional import gaussian_blur as tv_gaussian_blur

from tsdf_pipeline.metrics.grids import to_uint8
from tsdf_pipeline.metrics.image_quality import quantize_8bit


def _check_images(name: str, x: Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name}: expected [N,3,H,W] images in [-1,1], got shape {tuple(x.shape)}")


def protect(x: Tensor, w: Tensor) -> Tensor:
    """Published protected image ``quantize_8bit(clamp(x + w, -1, 1))``.

    Args:
        x: ``[N,3,H,W]`` in [-1,1].
        w: perturbation ``[1,3,H,W]`` (universal, broadcast) or ``[N,3,H,W]``, in [-1,1] units.
    Returns:
        ``[N,3,H,W]`` in [-1,1], on the 8-bit grid.
    """
    _check_images("protect: x", x)
    if w.dim() != 4 or w.shape[0] not in (1, x.shape[0]) or w.shape[1:] != x.shape[1:]:
        raise ValueError(
            f"protect: perturbation must be [1,{x.shape[1]},{x.shape[2]},{x.shape[3]}] or "
            f"[{x.shape[0]},{x.shape[1]},{x.shape[2]},{x.shape[3]}], got {tuple(w.shape)}"
        )
    return quantize_8bit((x + w.to(x)).clamp(-1, 1))


def jpeg(x: Tensor, quality: int) -> Tensor:
    """Real JPEG round trip through PIL, per image (PIL defaults otherwise: 4:2:0 chroma subsampling).

    Args:
        x: ``[N,3,H,W]`` in [-1,1] (converted to 8 bits first).
        quality: PIL JPEG quality, 1..100.
    Returns:
        ``[N,3,H,W]`` in [-1,1] on the 8-bit grid, same dtype and device as ``x``.
    """
    _check_images("jpeg: x", x)
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"jpeg: quality must be in 1..100, got {quality}")
    pixels = to_uint8(x.detach()).permute(0, 2, 3, 1).cpu().numpy()
    decoded = []
    for img in pixels:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        with Image.open(buf) as dec:
            decoded.append(np.asarray(dec.convert("RGB")))
    out = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2)
    return (out.to(device=x.device, dtype=x.dtype) / 255) * 2 - 1


def gaussian_blur(x: Tensor, sigma: float = 1.0) -> Tensor:
    """Gaussian blur of ``[N,3,H,W]`` with kernel side ``2*ceil(3*sigma)+1`` (torchvision, reflect padding).

    Returns ``[N,3,H,W]``, same range and dtype as ``x`` (not re-quantised; :data:`PURIFICATIONS` does that).
    """
    _check_images("gaussian_blur: x", x)
    if not sigma > 0:
        raise ValueError(f"gaussian_blur: sigma must be > 0, got {sigma}")
    k = 2 * math.ceil(3 * sigma) + 1
    return tv_gaussian_blur(x, kernel_size=[k, k], sigma=[float(sigma), float(sigma)])


PURIFICATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "none": lambda x: x,
    "jpeg90": lambda x: jpeg(x, 90),
    "jpeg75": lambda x: jpeg(x, 75),
    "blur1": lambda x: quantize_8bit(gaussian_blur(x, 1.0)),
}


def check_purifications(names: tuple[str, ...] | list[str]) -> None:
    """Raise ``ValueError`` naming any entry of ``names`` that is not a key of :data:`PURIFICATIONS`."""
    unknown = [n for n in names if n not in PURIFICATIONS]
    if unknown:
        raise ValueError(f"unknown purification(s) {unknown}; expected some of {list(PURIFICATIONS)}")


def apply_purification(name: str, x: Tensor) -> Tensor:
    """Apply the purification ``name`` (a key of :data:`PURIFICATIONS`) to ``[N,3,H,W]`` in [-1,1]."""
    check_purifications([name])
    _check_images(f"apply_purification({name!r}): x", x)
    return PURIFICATIONS[name](x)
