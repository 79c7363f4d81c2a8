"""The attacker's data chain of the simulated retraining: publish protected photos, collect them, crop faces.

One branch per protection (clean, noise, CMUA, TSDF, ...) runs the same code: ``protect`` what the defender
publishes, ``save_photos``/``load_photos`` the published files, ``prepare_crops`` with a face detector (most
confident face above a threshold, margin, square, resize; photos without a face are dropped), then compare a
branch's crops with the clean branch's (``crop_iou``, ``preparation_stats``) and log ``crop_grid``.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid
from tqdm.auto import tqdm

from tsdf_pipeline.data.crops import crop_windows, cut_and_resize
from tsdf_pipeline.metrics import box_iou, quantize_8bit

MISALIGNED_IOU = 0.5
PHOTO_FORMATS = {"png": ("PNG", "png"), "jpeg": ("JPEG", "jpg"), "jpg": ("JPEG", "jpg")}


class _Detections(Protocol):
    boxes: list[Tensor]
    scores: list[Tensor]


class FaceDetector(Protocol):
    """Anything with ``detect(x [N,3,H,W] in [-1,1], score_threshold=...)`` returning per-image boxes/scores."""

    def detect(self, x: Tensor, score_threshold: float = ...) -> _Detections: ...


def _check_images(name: str, images: Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{name}: expected images of shape [N,3,H,W], got {tuple(images.shape)}")


def protected_selection(n: int, fraction: float, seed: int) -> Tensor:
    """``[n]`` bool: which photos get protected, ``round(fraction * n)`` of them drawn by ``seed``.

    Depends only on ``(n, fraction, seed)``, so every branch protects the same photos.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction: expected a share of photos in [0,1], got {fraction}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[order[: math.floor(fraction * n + 0.5)]] = True
    return mask


@torch.no_grad()
def protect(
    images: Tensor, perturbation: Tensor | None, fraction: float = 1.0, *, seed: int
) -> tuple[Tensor, Tensor]:
    """The photos a defender publishes: ``(protected [N,3,H,W] on the 8-bit grid of [-1,1], protected_mask [N])``.

    ``perturbation`` (``[1,3,H,W]`` universal or ``[N,3,H,W]`` per photo) is added to the photos chosen by
    ``protected_selection(N, fraction, seed)``; every photo is then clamped to [-1,1] and quantised to 8 bits.
    With ``perturbation=None`` (the clean branch) nothing is added, but ``protected_mask`` still marks the
    photos the other branches protect, so per-subset statistics line up across branches.
    """
    _check_images("images", images)
    mask = protected_selection(images.shape[0], fraction, seed)
    if perturbation is None:
        return quantize_8bit(images), mask
    if perturbation.dim() != 4 or perturbation.shape[0] not in (1, images.shape[0]) or (
        perturbation.shape[1:] != images.shape[1:]
    ):
        raise ValueError(
            f"perturbation: expected shape [1,{','.join(map(str, images.shape[1:]))}] or "
            f"{list(images.shape)}, got {list(perturbation.shape)}"
        )
    weight = mask.to(device=images.device, dtype=images.dtype).view(-1, 1, 1, 1)
    delta = perturbation.detach().to(device=images.device, dtype=images.dtype)
    return quantize_8bit(images + weight * delta), mask


def _photo_names(ids: Sequence[str | int], n: int, ext: str) -> list[str]:
    if len(ids) != n:
        raise ValueError(f"ids: expected one id per image ({n}), got {len(ids)}")
    names = []
    for photo_id in ids:
        text = str(photo_id)
        if not text or text.startswith(".") or "/" in text or "\\" in text:
            raise ValueError(f"ids: {photo_id!r} is not a plain file name (no folders, not hidden)")
        names.append(f"{Path(text).stem}.{ext}")
    seen: dict[str, str | int] = {}
    for photo_id, name in zip(ids, names, strict=True):
        if name in seen:
            raise ValueError(f"ids: {seen[name]!r} and {photo_id!r} would both be saved as {name}")
        seen[name] = photo_id
    return names


def _swap_in(new: Path, folder: Path) -> None:
    """Put the finished folder ``new`` at ``folder``, replacing an older one only once ``new`` is in place."""
    if not folder.exists():
        new.rename(folder)
        return
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: exists and is not a folder; cannot save photos there")
    old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex}")
    folder.rename(old)
    try:
        new.rename(folder)
    except BaseException:
        old.rename(folder)
        raise
    shutil.rmtree(old)


def save_photos(
    images: Tensor,
    ids: Sequence[str | int],
    folder: str | Path,
    fmt: str = "png",
    jpeg_quality: int | None = None,
) -> list[Path]:
    """Write ``images [N,3,H,W] in [-1,1]`` as 8-bit RGB files ``<folder>/<id stem>.<png|jpg>``, atomically.

    Values are rounded as ``quantize_8bit`` does, so saving quantised images as PNG is lossless. ``fmt="jpeg"``
    needs ``jpeg_quality`` (1-100; Pillow's default 4:2:0 chroma subsampling). All files are written into a
    temporary folder next to ``folder`` that is renamed to ``folder`` at the end (replacing an existing one),
    so a failed run leaves neither a half-written folder nor a damaged older one. Returns the file paths.
    """
    _check_images("images", images)
    if fmt.lower() not in PHOTO_FORMATS:
        raise ValueError(f"fmt: expected one of {sorted(PHOTO_FORMATS)}, got {fmt!r}")
    pil_format, ext = PHOTO_FORMATS[fmt.lower()]
    if pil_format == "JPEG":
        if jpeg_quality is None or not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality: JPEG photos need a quality in 1-100, got {jpeg_quality!r}")
        options: dict[str, int] = {"quality": jpeg_quality}
    elif jpeg_quality is not None:
        raise ValueError(f"jpeg_quality: only applies to fmt='jpeg', got {jpeg_quality!r} with fmt={fmt!r}")
    else:
        options = {}
    names = _photo_names(ids, images.shape[0], ext)
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    levels = torch.floor((images.detach().clamp(-1, 1) + 1) / 2 * 255 + 0.5).to(torch.uint8)
    pixels = levels.permute(0, 2, 3, 1).cpu().numpy()
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        for name, array in zip(names, pixels, strict=True):
            Image.fromarray(array).save(tmp / name, format=pil_format, **options)
        _swap_in(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [folder / name for name in names]


def load_photos(paths: Sequence[str | Path]) -> Tensor:
    """Read same-sized photo files into ``[N,3,H,W]`` float32 on the 8-bit grid of [-1,1]."""
    if not paths:
        raise ValueError("paths: expected at least one photo file")
    out: Tensor | None = None
    for pos, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                array = np.asarray(im.convert("RGB"))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{path}: photo file not found") from exc
        except OSError as exc:
            raise ValueError(f"{path}: cannot be decoded as an image ({exc})") from exc
        if out is None:
            out = torch.empty((len(paths), 3, *array.shape[:2]), dtype=torch.float32)
        elif tuple(array.shape[:2]) != tuple(out.shape[-2:]):
            raise ValueError(
                f"{path}: size {array.shape[1]}x{array.shape[0]} differs from the first photo's "
                f"{out.shape[-1]}x{out.shape[-2]} ({paths[0]})"
            )
        out[pos] = torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255 * 2 - 1
    assert out is not None
    return out


@dataclass
class PreparedSet:
    """The attacker's training crops from ``N`` collected photos.

    ``crops``: ``[K,3,S,S]`` on the 8-bit grid of [-1,1]; ``kept_index``: ``[K]`` long, positions of the
    cropped photos in the input; ``boxes``: ``[N,4]`` the most confident detected face per photo (xyxy pixels);
    ``windows``: ``[N,4]`` the crop window cut around it (whole pixels, may reach past the photo);
    ``scores``: ``[N]`` its score; rows of dropped photos are NaN. ``dropped``: positions without a face.
    """

    crops: Tensor
    kept_index: Tensor
    boxes: Tensor
    windows: Tensor
    scores: Tensor
    dropped: list[int]

    @property
    def n_photos(self) -> int:
        return self.boxes.shape[0]


def _most_confident(boxes: Tensor, scores: Tensor, score_threshold: float) -> tuple[Tensor, float] | None:
    """The highest-scoring finite, non-empty box with ``score > score_threshold``, or None."""
    boxes = boxes.detach().float().cpu().reshape(-1, 4)
    scores = scores.detach().float().cpu().reshape(-1)
    valid = (
        (scores > score_threshold)
        & torch.isfinite(boxes).all(dim=1)
        & (boxes[:, 2] > boxes[:, 0])
        & (boxes[:, 3] > boxes[:, 1])
    )
    if not valid.any():
        return None
    candidates = valid.nonzero()[:, 0]
    best = candidates[scores[candidates].argmax()]
    return boxes[best], float(scores[best])


@torch.no_grad()
def prepare_crops(
    images: Tensor,
    detector: FaceDetector,
    *,
    score_threshold: float,
    margin: float,
    out_size: int,
    square: bool = True,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> PreparedSet:
    """Detect, crop and resize the face in each of ``images [N,3,H,W] in [-1,1]`` (one ``detect`` per batch).

    Per photo the most confident box with score ``> score_threshold`` is kept (photos without one are
    dropped); its window is grown by ``margin`` (fraction of the box size per side), made square if
    ``square``, and cut out with edge replication past the photo border (see ``crops.crop_windows`` and
    ``crops.cut_and_resize``), resized with antialiased bilinear to ``out_size`` and quantised to 8 bits.
    Batches are moved to ``device`` (default: the images' device) for detection; crops are cut from ``images``.
    """
    _check_images("images", images)
    if batch_size < 1 or out_size < 1:
        raise ValueError(f"batch_size and out_size: expected positive integers, got {batch_size}, {out_size}")
    n = images.shape[0]
    boxes = torch.full((n, 4), math.nan)
    scores = torch.full((n,), math.nan)
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc="detect faces", unit="batch", disable=not progress):
        batch = images[start : start + batch_size]
        found = detector.detect(batch.to(device) if device is not None else batch, score_threshold=score_threshold)
        if len(found.boxes) != batch.shape[0] or len(found.scores) != batch.shape[0]:
            raise ValueError(
                f"detector {getattr(detector, 'name', type(detector).__name__)}: returned "
                f"{len(found.boxes)} box lists and {len(found.scores)} score lists for {batch.shape[0]} images"
            )
        for offset, (image_boxes, image_scores) in enumerate(zip(found.boxes, found.scores, strict=True)):
            top = _most_confident(image_boxes, image_scores, score_threshold)
            if top is not None:
                boxes[start + offset], scores[start + offset] = top
    kept = (~torch.isnan(scores)).nonzero()[:, 0]
    windows = torch.full((n, 4), math.nan)
    windows[kept] = crop_windows(boxes[kept], margin, square).float()
    crops = torch.empty((len(kept), 3, out_size, out_size), dtype=images.dtype, device=images.device)
    for row, pos in enumerate(kept.tolist()):
        crops[row] = cut_and_resize(images[pos], windows[pos], out_size)
    dropped = torch.isnan(scores).nonzero()[:, 0].tolist()
    return PreparedSet(quantize_8bit(crops), kept, boxes, windows, scores, dropped)


def crop_iou(prepared_branch: PreparedSet, prepared_clean: PreparedSet) -> Tensor:
    """``[N]`` IoU of each photo's crop window in a branch with its crop window on the clean photos.

    NaN where either side dropped the photo (nothing to compare); ``preparation_stats`` counts those apart.
    """
    if prepared_branch.n_photos != prepared_clean.n_photos:
        raise ValueError(
            f"crop_iou: the branch has {prepared_branch.n_photos} photos, the clean set "
            f"{prepared_clean.n_photos}; both must come from the same photos"
        )
    iou = torch.full((prepared_branch.n_photos,), math.nan)
    both = ~(torch.isnan(prepared_branch.scores) | torch.isnan(prepared_clean.scores))
    for pos in both.nonzero()[:, 0].tolist():
        pair = box_iou(prepared_branch.windows[pos : pos + 1], prepared_clean.windows[pos : pos + 1])
        iou[pos] = pair[0, 0]
    return iou


def preparation_stats(
    prepared: PreparedSet, clean_prepared: PreparedSet, n_photos: int | None = None
) -> dict[str, float]:
    """Summary of a branch's preparation against the clean branch's, for logging.

    ``n_photos`` is how many photos the attacker collected (default: those given to ``prepare_crops``).
    Keys: ``n_photos``, ``kept`` (crops), ``kept_fraction``, ``dropped`` (``n_photos - kept``), ``compared``
    (photos cropped in both branches), ``crop_iou_mean`` / ``crop_iou_median`` over those, ``misaligned_fraction``
    (share of those with IoU < 0.5), ``kept_clean_dropped`` (crops of photos the clean branch found no face in).
    Means and fractions over nothing are NaN.
    """
    total = prepared.n_photos if n_photos is None else n_photos
    if total < prepared.n_photos:
        raise ValueError(f"n_photos: {total} is fewer than the {prepared.n_photos} photos that were prepared")
    iou = crop_iou(prepared, clean_prepared)
    compared = iou[~torch.isnan(iou)].double()
    kept = len(prepared.kept_index)
    clean_dropped = torch.isnan(clean_prepared.scores) & ~torch.isnan(prepared.scores)
    return {
        "n_photos": float(total),
        "kept": float(kept),
        "kept_fraction": kept / total if total else math.nan,
        "dropped": float(total - kept),
        "compared": float(compared.numel()),
        "crop_iou_mean": float(compared.mean()) if compared.numel() else math.nan,
        "crop_iou_median": float(compared.quantile(0.5)) if compared.numel() else math.nan,
        "misaligned_fraction": float((compared < MISALIGNED_IOU).double().mean()) if compared.numel() else math.nan,
        "kept_clean_dropped": float(clean_dropped.sum()),
    }


def crop_grid(prepared: PreparedSet, n: int = 16) -> Tensor:
    """``[3,H,W]`` in [0,1]: the first ``n`` crops tiled in a near-square grid (one black tile if none)."""
    tiles = prepared.crops[:n].detach().cpu()
    if tiles.shape[0] == 0:
        tiles = torch.full((1, *prepared.crops.shape[1:]), -1.0)
    tiles = ((tiles + 1) / 2).clamp(0, 1)
    return make_grid(tiles, nrow=math.ceil(math.sqrt(tiles.shape[0])), padding=2)
