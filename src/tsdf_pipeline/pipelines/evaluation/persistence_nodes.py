"""Persistence evaluation: does each protection still disrupt the victim after the attacker retrained it?

Per branch ``b`` (protection ``w_b``): disruption of ``w_b`` against the original victim (``before``), against the
model fine-tuned on ``b``'s prepared data (``after``) and, as a control, against the model fine-tuned on the clean
branch's data (``after_clean``). Per model: its quality on clean inputs (reconstruction error, edit strength,
face-detection rate of its outputs with the attacker's detector, gender-edit flip rate with the classifier that
labelled the demo set).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from tsdf_pipeline.devices import resolve_device
from tsdf_pipeline.metrics.attribute_classifier import male_probability
from tsdf_pipeline.metrics.disruption import edit_mask
from tsdf_pipeline.metrics.evaluate_interruption import aggregate_rows, evaluate_interruption
from tsdf_pipeline.models.ensemble import load_victim
from tsdf_pipeline.models.victims import Victim
from tsdf_pipeline.pipelines.attacker_retraining.nodes import CLEAN, branch_protections
from tsdf_pipeline.pipelines.detector_specs import load_detectors
from tsdf_pipeline.pipelines.mlflow_utils import as_mlflow_metrics
from tsdf_pipeline.pipelines.reporting import markdown_table

DISRUPTION = ("sr_mask", "l2_mask", "ssim_out_w3", "ssim_out_w7", "psnr_out")
QUALITY = ("recon_error", "edit_mask_coverage", "output_face_rate", "gender_flip_rate")
GENDER_TARGET = "Male"


def _retrained_victim(spec: dict[str, Any], checkpoint: Any, folder: Path, name: str) -> Victim:
    path = folder / f"{name}.pt"
    torch.save(checkpoint, path)
    return load_victim({**spec, "checkpoint": str(path), "sha256": None})


@torch.no_grad()
def model_quality(victim: Victim, images: torch.Tensor, attrs: torch.Tensor, detector: Any, batch_size: int,
                  male_before: np.ndarray | None, center_crop: int | None) -> dict[str, float]:
    """Clean-input quality: mean |G(x, recon) - x|, mean edit-mask coverage of the other targets, the share of
    edited outputs in which the detector finds a face, and how often the gender edit flips the decision of the
    demo labels' gender classifier (``male_before``: its ``p_male`` on the inputs; NaN without a gender edit)."""
    recon, coverage, faces, outputs, gender = [], [], 0, 0, []
    device = next(victim.parameters()).device
    for start in range(0, images.shape[0], batch_size):
        x, a = images[start:start + batch_size].to(device), attrs[start:start + batch_size].to(device)
        t = victim.targets(a, mode="all")
        out = victim.edit(x, t)
        edits = [i for i, n in enumerate(t.names) if n != "recon"]
        if "recon" in t.names:
            recon.append((out[t.names.index("recon")] - x).abs().mean(dim=(1, 2, 3)))
        coverage += [edit_mask(out[i], x).mean(dim=(1, 2, 3)) for i in edits]
        if GENDER_TARGET in t.names:
            gender.append(male_probability(out[t.names.index(GENDER_TARGET)], center_crop))
        found = detector.detect(out[edits].reshape(-1, *x.shape[1:]).clamp(-1, 1))
        faces += sum(int(b.shape[0] > 0) for b in found.boxes)
        outputs += len(edits) * x.shape[0]
    return {"recon_error": float(torch.cat(recon).mean()) if recon else float("nan"),
            "edit_mask_coverage": float(torch.cat(coverage).mean()), "output_face_rate": faces / max(outputs, 1),
            "gender_flip_rate": float(((np.concatenate(gender) > 0.5) != (male_before > 0.5)).mean())
            if gender else float("nan")}


def evaluate_persistence(retrained_models: dict[str, Any], evaluation_set: dict[str, Any],
                         perturbations: dict[str, Any], poisoned_perturbation: dict[str, Any],
                         attacker_params: dict[str, Any], params: dict[str, Any], detector_registry: dict[str, Any],
                         data_params: dict[str, Any]) -> tuple[pd.DataFrame, str, dict[str, dict[str, float]], Figure]:
    """The persistence table (protection × {before, after, after_clean} × metric), its markdown and plot."""
    spec = retrained_models["victim"]
    images, attrs = evaluation_set["images"], evaluation_set["attrs"]
    batch_size = int(params["batch_size"])
    device = resolve_device(params.get("device", "cpu"))
    detector = load_detectors([attacker_params["detector"]], detector_registry,
                              device=str(device))[attacker_params["detector"]]
    protections = branch_protections(list(retrained_models["models"]), perturbations, poisoned_perturbation)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        models = {"original": load_victim(spec).to(device)}
        models |= {f"retrained_{b}": _retrained_victim(spec, ckpt, Path(tmp), b).to(device)
                   for b, ckpt in retrained_models["models"].items()}
    crop = data_params.get("crop_size")
    needs_classifier = any(GENDER_TARGET in v.target_names("all") for v in models.values())
    male_before = male_probability(images, crop) if needs_classifier else None
    for name, victim in models.items():
        rows.append({"kind": "quality", "model": name,
                     **model_quality(victim, images, attrs, detector, batch_size, male_before, crop)})
    for branch, w in protections.items():
        if w is None:
            continue
        phases = {"before": "original", "after": f"retrained_{branch}"}
        if f"retrained_{CLEAN}" in models:
            phases["after_clean"] = f"retrained_{CLEAN}"
        for phase, model in phases.items():
            with torch.no_grad():
                method_rows = evaluate_interruption([models[model]], images, attrs, w, method=branch,
                                                    batch_size=batch_size, target_mode=params.get("target_mode", "all"),
                                                    device=device)
            pooled = aggregate_rows(method_rows)[0]
            rows.append({"kind": "disruption", "protection": branch, "phase": phase, "model": model,
                         **{k: pooled[k] for k in DISRUPTION}})
    table = pd.DataFrame(rows)
    return table, _markdown(table, spec["name"]), _metrics(table), _plot(table, spec["name"])


def _markdown(table: pd.DataFrame, victim: str) -> str:
    disruption = table[table["kind"] == "disruption"]
    wide = disruption.pivot_table(index="protection", columns="phase", values=["sr_mask", "ssim_out_w3"],
                                  sort=False)
    wide.columns = [f"{metric}_{phase}" for metric, phase in wide.columns]
    wide = wide.reset_index()
    quality = table[table["kind"] == "quality"]
    return "\n".join([
        f"# Persistence under attacker retraining ({victim})", "",
        "Each protection against the original victim (before), the victim fine-tuned on that protection's "
        "prepared photos (after) and the victim fine-tuned on the clean photos (after_clean, a control). "
        "SSIM between disrupted and clean outputs is the quantity of the paper's Fig. 1 (higher = weaker "
        "protection); SR_mask as CMUA.", "",
        markdown_table(wide, list(wide.columns)), "",
        "## Quality of each model on clean inputs", "",
        markdown_table(quality, ("model", *QUALITY)), "",
    ])


def _metrics(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    values: dict[str, float] = {}
    for row in table[table["kind"] == "disruption"].itertuples(index=False):
        for field in DISRUPTION:
            values[f"persistence.{row.protection}.{row.phase}.{field}"] = getattr(row, field)
    for row in table[table["kind"] == "quality"].itertuples(index=False):
        for field in QUALITY:
            values[f"persistence.{row.model}.{field}"] = getattr(row, field)
    return as_mlflow_metrics(values)


def _plot(table: pd.DataFrame, victim: str) -> Figure:
    disruption = table[table["kind"] == "disruption"]
    fig = Figure(figsize=(8, 3.2), dpi=100)
    for k, metric in enumerate(("sr_mask", "ssim_out_w3")):
        ax = fig.add_subplot(1, 2, k + 1)
        disruption.pivot_table(index="protection", columns="phase", values=metric, sort=False).plot.bar(ax=ax, rot=0)
        ax.set_title(f"{victim}: {metric}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
