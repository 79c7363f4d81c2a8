"""Interruption evaluation: how much a protection breaks the victims' edits (TSDF §2.1, decision 6).

For every batch of clean images ``x`` ``[B,3,H,W]`` in [-1,1] the published image is
``p = quantize_8bit(clamp(x + w, -1, 1))`` (decision 9), optionally purified by the attacker (JPEG, blur).
Each victim edits the clean ``x`` once for all its targets (``G(x)``, shared by every method and purification)
and each purified ``p`` once for all targets (``G(p)``); the metrics of ``tsdf_pipeline.metrics.disruption`` and
``image_quality`` compare ``G(p)`` with ``G(x)`` per sample and are aggregated into rows (plain dicts). A per-target
perturbation (Ruiz's per-class PGD) publishes one image per target instead, each edited with its own target.
LPIPS and FID need the user's backbone weights (:class:`PerceptualModels`) and are computed only when given.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tsdf_pipeline.metrics.disruption import edit_mask, l1, l2_mask, mse, ruiz_success, success_rate_mask
from tsdf_pipeline.metrics.fid import FIDInception, frechet_distance
from tsdf_pipeline.metrics.grids import amplified_difference, image_rows
from tsdf_pipeline.metrics.image_quality import denorm, ms_ssim, psnr, ssim
from tsdf_pipeline.metrics.lpips import LPIPS
from tsdf_pipeline.metrics.purification import apply_purification, check_purifications, protect
from tsdf_pipeline.models.victims import RECON, EditTargets, Victim

KIND_INTERRUPTION = "interruption"
KIND_WATERMARK = "watermark"
KIND_FID = "fid"
# Row fields averaged over samples (weight n_samples) and over valid samples (weight n_valid).
_SAMPLE_MEANS = ("mse", "l1", "psnr_out", "ssim_out_w3", "ssim_out_w7")
_OPTIONAL_SAMPLE_MEANS = ("lpips_out",)  # present when LPIPS weights are given
_VALID_MEANS = ("l2_mask",)
_COUNTS = ("n_samples", "n_valid", "n_empty_mask", "n_success", "n_ruiz_success")
_RATES = ("sr_mask", "sr_mask_all", "ruiz_sr")
_METRIC_FIELDS = frozenset(_SAMPLE_MEANS + _OPTIONAL_SAMPLE_MEANS + _VALID_MEANS + _COUNTS + _RATES)


@dataclass(frozen=True)
class PerceptualModels:
    """The learnt metrics the user has weights for (``None``: not computed), already on the evaluation device.

    ``lpips`` adds ``lpips_out`` (``G(p)`` vs ``G(x)``, per sample) to the interruption rows and
    ``watermark_lpips`` (``p`` vs ``x``) to the watermark rows; ``fid`` adds one ``kind="fid"`` row per method
    and victim: FID between all clean edits and all edits of the unpurified published images, every target
    pooled (a distance between sets, so no per-target or per-purification value at evaluation sizes).
    """

    lpips: LPIPS | None = None
    fid: FIDInception | None = None


def check_inputs(
    images: Tensor, attrs40: Tensor | None, perturbation: Tensor | Mapping[str, Tensor] | None, batch_size: int
) -> None:
    """Validate evaluation inputs (``None`` skips a check); errors name the argument and expected shape.

    ``perturbation``: universal ``[1,3,H,W]``, per image ``[N,3,H,W]`` or per target ``{victim: [T,N,3,H,W]}``.
    """
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise ValueError(
            f"images: expected a non-empty [N,3,H,W] tensor in [-1,1], got {tuple(images.shape)}"
        )
    n, _, h, w = images.shape
    if attrs40 is not None and (attrs40.dim() != 2 or attrs40.shape[0] != n or attrs40.shape[1] != 40):
        raise ValueError(
            f"attrs40: expected [{n},40] CelebA labels for the {n} images, got {tuple(attrs40.shape)}"
        )
    if isinstance(perturbation, Mapping):
        for name, w_v in perturbation.items():
            if w_v.dim() != 5 or w_v.shape[1] != n or w_v.shape[2:] != (3, h, w):
                raise ValueError(f"perturbation[{name!r}]: expected [T,{n},3,{h},{w}] (one per edit target and "
                                 f"image), got {tuple(w_v.shape)}")
    elif perturbation is not None and (
        perturbation.dim() != 4 or perturbation.shape[0] not in (1, n) or perturbation.shape[1:] != (3, h, w)
    ):
        raise ValueError(
            f"perturbation: expected [1,3,{h},{w}] (universal) or [{n},3,{h},{w}] (per image), "
            f"got {tuple(perturbation.shape)}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")


def perturbation_slice(perturbation: Tensor | Mapping[str, Tensor], start: int, stop: int
                       ) -> Tensor | dict[str, Tensor]:
    """Rows of ``perturbation`` for images ``start:stop``: itself if universal ``[1,...]``, else a slice (per
    target: of every victim's ``[T,N,...]``)."""
    if isinstance(perturbation, Mapping):
        return {name: w_v[:, start:stop] for name, w_v in perturbation.items()}
    return perturbation if perturbation.shape[0] == 1 else perturbation[start:stop]


def _check_per_target(label: str, perturbation: Mapping[str, Tensor], names: Mapping[str, list[str]]) -> None:
    """A per-target perturbation must cover exactly the victims and, for each, its ``names`` targets."""
    if set(perturbation) != set(names):
        raise ValueError(f"{label}: per-target perturbations for victims {sorted(perturbation)}, but the evaluation "
                         f"runs {sorted(names)}")
    for victim, targets in names.items():
        if perturbation[victim].shape[0] != len(targets):
            raise ValueError(f"{label}: {perturbation[victim].shape[0]} per-target perturbations for {victim}, "
                             f"which the evaluation edits with {len(targets)} targets {targets}: make them for "
                             f"the targets of the evaluation's target_mode")


def _published(x: Tensor, perturbation: Tensor | Mapping[str, Tensor], victim: str | None) -> Tensor:
    """``protect(x, w)``: ``[B,3,H,W]``; per target (``victim`` given): ``[T,B,3,H,W]``, one per target."""
    if isinstance(perturbation, Mapping):
        return torch.stack([protect(x, w_t) for w_t in perturbation[victim]])
    return protect(x, perturbation)


def _edit_each(victim: Victim, xs: Tensor, t: EditTargets) -> Tensor:
    """``[T,B,3,H,W]``: target i's edit of its own input ``xs[i]``."""
    return torch.stack([victim.edit(xs[i], EditTargets([name], t.cond[i:i + 1]))[0]
                        for i, name in enumerate(t.names)])


def _per_sample(x: Tensor, clean: Tensor, adv: Tensor, lpips: LPIPS | None) -> dict[str, Tensor]:
    """Per-(target, image) values ``[T,B]`` (on CPU) of ``adv`` vs ``clean`` edits ``[T,B,3,H,W]``.

    Computed one target at a time so that the float64 SSIM buffers stay at ``B`` images.
    """
    per_target: dict[str, list[Tensor]] = {}
    for c, a in zip(clean, adv, strict=True):
        l2, valid = l2_mask(a, c, edit_mask(c, x))
        values = {
            "l2": l2,
            "valid": valid,
            "mse": mse(a, c),
            "l1": l1(a, c),
            "psnr_out": psnr(a, c),
            "ssim_out_w3": ssim(a, c, 3, "per_image"),
            "ssim_out_w7": ssim(a, c, 7, 1.0),
        }
        if lpips is not None:
            values["lpips_out"] = lpips(a, c)
        for k, v in values.items():
            per_target.setdefault(k, []).append(v.detach().cpu())
    return {k: torch.stack(v) for k, v in per_target.items()}


def _mean(v: Tensor) -> float:
    return float(v.double().mean()) if v.numel() else math.nan


def _interruption_metrics(values: dict[str, Tensor]) -> dict[str, Any]:
    """Aggregate the per-sample ``[n]`` values of one (victim, target, purification) into row fields."""
    sr = success_rate_mask(values["l2"], values["valid"])
    ruiz = ruiz_success(values["mse"])
    return {
        "n_samples": sr["n_samples"],
        "n_valid": sr["n_valid"],
        "n_empty_mask": sr["n_empty_mask"],
        "n_success": sr["n_success"],
        "sr_mask": sr["sr_mask"],
        "sr_mask_all": sr["sr_mask_all"],
        "l2_mask": _mean(values["l2"][values["valid"]]),
        "mse": _mean(values["mse"]),
        "n_ruiz_success": int(ruiz.sum()),
        "ruiz_sr": _mean(ruiz),
        "l1": _mean(values["l1"]),
        "psnr_out": _mean(values["psnr_out"]),
        "ssim_out_w3": _mean(values["ssim_out_w3"]),
        "ssim_out_w7": _mean(values["ssim_out_w7"]),
        **{k: _mean(values[k]) for k in _OPTIONAL_SAMPLE_MEANS if k in values},
    }


def _watermark_values(x: Tensor, published: Tensor, lpips: LPIPS | None) -> dict[str, Tensor]:
    """Per-image imperceptibility of ``published`` against ``x`` (both ``[B,3,H,W]`` in [-1,1])."""
    values = {
        "watermark_psnr": psnr(x, published).cpu(),
        "watermark_ssim_w3": ssim(x, published, 3, "per_image").cpu(),
        "watermark_ssim_w7": ssim(x, published, 7, 1.0).cpu(),
        "watermark_ms_ssim": ms_ssim(x, published).cpu(),
        "watermark_linf": (published - x).abs().flatten(1).amax(dim=1).cpu(),
    }
    if lpips is not None:
        values["watermark_lpips"] = lpips(x, published).cpu()
    return values


def _check_victims(victims: Sequence[Victim]) -> None:
    if not victims:
        raise ValueError("victims: expected at least one Victim")
    names = [v.name for v in victims]
    if len(set(names)) != len(names):
        raise ValueError(f"victims: names must be unique (rows are keyed by them), got {names}")


@torch.no_grad()
def evaluate_interruption(
    victims: Sequence[Victim],
    images: Tensor,
    attrs40: Tensor,
    perturbation: Tensor,
    *,
    method: str,
    batch_size: int,
    purifications: Sequence[str] = ("none",),
    target_mode: str = "all",
    device: torch.device | str | None = None,
    perceptual: PerceptualModels | None = None,
) -> list[dict[str, Any]]:
    """Interruption rows of one protection ``method`` against ``victims``: :func:`evaluate_interruption_methods`
    with ``{method: perturbation}`` (arguments and rows as there)."""
    return evaluate_interruption_methods(victims, images, attrs40, {method: perturbation}, batch_size=batch_size,
                                         purifications=purifications, target_mode=target_mode, device=device,
                                         perceptual=perceptual)


def evaluate_interruption_methods(
    victims: Sequence[Victim],
    images: Tensor,
    attrs40: Tensor,
    perturbations: Mapping[str, Tensor],
    *,
    batch_size: int,
    purifications: Sequence[str] = ("none",),
    target_mode: str = "all",
    device: torch.device | str | None = None,
    perceptual: PerceptualModels | None = None,
) -> list[dict[str, Any]]:
    """Interruption rows of several protections against ``victims``, the clean edits computed once for all.

    Args:
        victims: victims already on ``device``; each edits with every target of ``victim.targets(attrs40,
            target_mode)`` in one forward per batch.
        images: ``[N,3,H,W]`` in [-1,1], the clean images (8-bit values, as loaded from files).
        attrs40: ``[N,40]`` CelebA labels in {0,1}.
        perturbations: method name -> ``[1,3,H,W]`` (universal), ``[N,3,H,W]`` (per image) or ``{victim name:
            [T,N,3,H,W]}`` (per target: target i of that victim edits its own protected image) in [-1,1] units.
        batch_size: images per forward pass.
        purifications: keys of ``PURIFICATIONS`` applied to the published image before editing.
        target_mode: ``"all"`` (every official target + reconstruction) or ``"train"``.
        device: where the victims run and the metrics are computed; ``None`` = ``images.device``.
        perceptual: LPIPS / FID models (see :class:`PerceptualModels`); ``None``: neither is computed.

    Returns:
        Per method (in the mapping's order), rows with ``kind="interruption"``, one per (victim, target,
        purification) in that order, fields:

        - ``method, victim, arch, target, purification``;
        - counts ``n_samples, n_valid, n_empty_mask, n_success, n_ruiz_success``;
        - ``sr_mask`` = successes / valid samples; ``sr_mask_all`` = successes / all samples (CMUA's
          ``prop_dist``); ``l2_mask``: mean over valid samples;
        - ``mse``, ``l1``: unmasked, [-1,1] scale; ``ruiz_sr``: fraction with unmasked MSE > 0.05;
        - ``psnr_out``: dB on [0,1], mean over samples (``inf`` if any edit pair is identical);
        - ``ssim_out_w3``: TSDF's SSIM, 3x3 window, data range = max - min of each ``denorm(G(p))``;
        - ``ssim_out_w7``: standard 7x7 window, data range 1 on [0,1] (i.e. 2 on [-1,1]).

        Then the method's ``kind="watermark"`` row (``victim``, ``arch``, ``target`` None;
        ``purification="none"``) with the means over published images (per target: every victim's and target's
        of each photo) of ``watermark_psnr``, ``watermark_ssim_w3``,
        ``watermark_ssim_w7``, ``watermark_ms_ssim`` of ``p`` against ``x`` (same conventions; MS-SSIM with
        fewer scales below 161 px) and ``watermark_linf``, the largest ``|p - x|`` over all images ([-1,1] units).
        With LPIPS: ``lpips_out`` in every interruption row and ``watermark_lpips`` in the watermark row. With
        FID: after the watermark row, per victim a ``kind="fid"`` row (``target="all"``,
        ``purification="none"``, ``n_samples``, ``fid_out``).
    """
    if not perturbations:
        raise ValueError("perturbations: expected at least one method name -> perturbation")
    for method, perturbation in perturbations.items():
        try:
            check_inputs(images, attrs40, perturbation, batch_size)
        except ValueError as err:
            raise ValueError(f"{method}: {err}") from None
    _check_victims(victims)
    purifications = tuple(purifications)
    if not purifications:
        raise ValueError("purifications: expected at least one name, e.g. ('none',)")
    check_purifications(purifications)
    dev = torch.device(device) if device is not None else images.device
    names = {v.name: v.target_names(target_mode) for v in victims}
    for method, perturbation in perturbations.items():
        if isinstance(perturbation, Mapping):
            _check_per_target(method, perturbation, names)
    samples: dict[tuple[str, str, int, str], dict[str, list[Tensor]]] = {}
    watermark: dict[str, dict[str, list[Tensor]]] = {m: {} for m in perturbations}
    models = perceptual or PerceptualModels()
    fid_features: dict[tuple[str | None, str], list[Tensor]] = {}  # (method or None = clean, victim) -> [k,2048]
    n = images.shape[0]
    too_few = [v for v, t in names.items() if n * len(t) < 2]
    if models.fid is not None and too_few:
        raise ValueError(f"FID needs at least 2 edits per victim (images x targets); {too_few} would have "
                         f"{n} image(s) x 1 target: evaluate more images or drop the FID weights")
    if models.fid is not None and "none" not in purifications:
        raise ValueError(f"FID compares the edits of the unpurified protected images: purifications {purifications} "
                         "lack 'none'")

    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        x = images[start:stop].to(dev)
        a40 = attrs40[start:stop].to(dev)
        batch = {m: {k: w.to(dev) for k, w in perturbation_slice(w_m, start, stop).items()}
                 if isinstance(w_m, Mapping) else perturbation_slice(w_m, start, stop).to(dev)
                 for m, w_m in perturbations.items()}
        attacked: dict[tuple[str, str], Tensor] = {}  # (method, purification) -> [B,3,H,W], one image per photo
        for method, w_m in batch.items():
            if isinstance(w_m, Mapping):
                continue  # per target: published per victim below
            published = _published(x, w_m, None)
            for key, v in _watermark_values(x, published, models.lpips).items():
                watermark[method].setdefault(key, []).append(v)
            attacked |= {(method, p): apply_purification(p, published) for p in purifications}
        for victim in victims:
            t = victim.targets(a40, target_mode)
            clean = victim.edit(x, t)  # shared by every method and purification
            if models.fid is not None:
                fid_features.setdefault((None, victim.name), []).append(models.fid(clean.flatten(0, 1)).cpu())
            for method, p in ((m, p) for m in batch for p in purifications):
                if (method, p) in attacked:
                    adv = victim.edit(attacked[(method, p)], t)
                else:
                    published = _published(x, batch[method], victim.name)  # [T,B,3,H,W]
                    if p == purifications[0]:
                        for key, v in _watermark_values(x.repeat(len(t), 1, 1, 1), published.flatten(0, 1),
                                                        models.lpips).items():
                            watermark[method].setdefault(key, []).append(v)
                    purified = apply_purification(p, published.flatten(0, 1)).unflatten(0, published.shape[:2])
                    adv = _edit_each(victim, purified, t)
                values = _per_sample(x, clean, adv, models.lpips)
                if models.fid is not None and p == "none":
                    fid_features.setdefault((method, victim.name), []).append(models.fid(adv.flatten(0, 1)).cpu())
                for i in range(len(t)):
                    acc = samples.setdefault((method, victim.name, i, p), {})
                    for key, v in values.items():
                        acc.setdefault(key, []).append(v[i])

    rows: list[dict[str, Any]] = []
    for method in perturbations:
        for victim in victims:
            for i, target in enumerate(names[victim.name]):
                for p in purifications:
                    per_sample = {k: torch.cat(v) for k, v in samples[(method, victim.name, i, p)].items()}
                    rows.append({
                        "kind": KIND_INTERRUPTION, "method": method, "victim": victim.name, "arch": victim.arch,
                        "target": target, "purification": p, **_interruption_metrics(per_sample),
                    })
        wm = {k: torch.cat(v) for k, v in watermark[method].items()}
        rows.append({
            "kind": KIND_WATERMARK, "method": method, "victim": None, "arch": None, "target": None,
            "purification": "none", "n_samples": wm["watermark_psnr"].numel(),
            **{k: _mean(v) for k, v in wm.items() if k != "watermark_linf"},
            "watermark_linf": float(wm["watermark_linf"].max()),
        })
        if models.fid is not None:
            for victim in victims:
                clean_f, adv_f = (torch.cat(fid_features[(m, victim.name)]) for m in (None, method))
                rows.append({"kind": KIND_FID, "method": method, "victim": victim.name, "arch": victim.arch,
                             "target": "all", "purification": "none", "n_samples": adv_f.shape[0],
                             "fid_out": frechet_distance(clean_f, adv_f)})
    return rows


def _weighted_mean(rows: Sequence[dict[str, Any]], field: str, weight: str) -> float:
    """Mean of ``field`` weighted by ``weight``; rows of weight 0 are skipped (their value may be NaN)."""
    pairs = [(r[field], r[weight]) for r in rows if r[weight] > 0]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else math.nan


def aggregate_rows(
    rows: Iterable[dict[str, Any]], by: Sequence[str] = ("method", "victim", "purification")
) -> list[dict[str, Any]]:
    """Pool ``kind="interruption"`` rows (e.g. all targets of a victim) into one row per ``by`` group.

    Pooling is over samples, not a mean of means: counts are summed; ``sr_mask = sum n_success /
    sum n_valid``, ``sr_mask_all = sum n_success / sum n_samples``, ``ruiz_sr = sum n_ruiz_success /
    sum n_samples``; ``l2_mask`` is the mean weighted by ``n_valid`` and ``mse, l1, psnr_out, ssim_out_w3,
    ssim_out_w7`` (and ``lpips_out`` when every row has it) are means weighted by ``n_samples``. A sample here
    is one (image, target) pair. Other fields keep their value when the whole group shares it and become
    ``"all"`` otherwise (e.g. ``target``).
    ``n_rows`` counts the pooled rows. Rows of another kind (watermark, fid) are ignored. Groups appear in the
    order of their first row.
    """
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("kind") != KIND_INTERRUPTION:
            continue
        missing = [k for k in by if k not in row]
        if missing:
            raise KeyError(f"aggregate_rows: row lacks the group key(s) {missing}; row keys: {sorted(row)}")
        groups.setdefault(tuple(row[k] for k in by), []).append(row)

    out: list[dict[str, Any]] = []
    for group in groups.values():
        merged: dict[str, Any] = {}
        for key in group[0]:
            if key in _METRIC_FIELDS:
                continue
            values = {r.get(key) for r in group}
            merged[key] = values.pop() if len(values) == 1 else "all"
        counts = {k: sum(r[k] for r in group) for k in _COUNTS}
        merged.update(counts)
        merged["n_rows"] = len(group)
        merged["sr_mask"] = counts["n_success"] / counts["n_valid"] if counts["n_valid"] else math.nan
        samples = counts["n_samples"]
        merged["sr_mask_all"] = counts["n_success"] / samples if samples else math.nan
        merged["ruiz_sr"] = counts["n_ruiz_success"] / samples if samples else math.nan
        for field in _VALID_MEANS:
            merged[field] = _weighted_mean(group, field, "n_valid")
        for field in _SAMPLE_MEANS + tuple(f for f in _OPTIONAL_SAMPLE_MEANS if all(f in r for r in group)):
            merged[field] = _weighted_mean(group, field, "n_samples")
        out.append(merged)
    return out


def example_target(victim: Victim, target_mode: str = "all") -> int:
    """Index of the first target that is not the reconstruction (or 0 when that is the only target)."""
    target_names = victim.target_names(target_mode)
    return next((i for i, name in enumerate(target_names) if name != RECON), 0)


@torch.no_grad()
def collect_examples(
    victims: Sequence[Victim],
    images: Tensor,
    attrs40: Tensor,
    perturbation: Tensor | Mapping[str, Tensor],
    n: int = 4,
    *,
    target_mode: str = "all",
    device: torch.device | str | None = None,
) -> dict[str, Tensor]:
    """Example grids per victim for the first ``n`` images.

    Each row is one image: original | published ``p`` | ``G(x)`` | ``G(p)`` | ``|G(p) - G(x)| x 10``, for the
    target :func:`example_target` picks. Inputs as :func:`evaluate_interruption`.

    Returns:
        ``{victim.name: [3, n*(H+2)+2, 5*(W+2)+2]}`` in [0,1].
    """
    check_inputs(images, attrs40, perturbation, 1)
    _check_victims(victims)
    if n < 1:
        raise ValueError(f"n: expected a positive number of examples, got {n}")
    n = min(n, images.shape[0])
    dev = torch.device(device) if device is not None else images.device
    x = images[:n].to(dev)
    if isinstance(perturbation, Mapping):
        _check_per_target("perturbation", perturbation, {v.name: v.target_names(target_mode) for v in victims})
    w = perturbation_slice(perturbation, 0, n)
    grids: dict[str, Tensor] = {}
    for victim in victims:
        all_targets = victim.targets(attrs40[:n].to(dev), target_mode)
        i = example_target(victim, target_mode)
        t = EditTargets([all_targets.names[i]], all_targets.cond[i : i + 1])
        published = protect(x, (w[victim.name][i] if isinstance(w, Mapping) else w).to(dev))
        clean = victim.edit(x, t)[0]
        adv = victim.edit(published, t)[0]
        grids[victim.name] = image_rows(
            [denorm(x), denorm(published), denorm(clean), denorm(adv), amplified_difference(adv, clean)]
        )
    return grids
