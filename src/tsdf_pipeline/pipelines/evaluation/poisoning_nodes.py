"""Evaluation of stage 2: face-detector degradation (TSDF ``evaluate_perturbation.py``) and what the poison
costs the interruption (``w2`` vs ``w1``)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from tsdf_pipeline.devices import resolve_device
from tsdf_pipeline.metrics.evaluate_detection import detection_examples, evaluate_detection
from tsdf_pipeline.metrics.evaluate_interruption import aggregate_rows, evaluate_interruption
from tsdf_pipeline.models.ensemble import load_ensemble
from tsdf_pipeline.pipelines.detector_specs import load_detectors
from tsdf_pipeline.pipelines.evaluation.nodes import perturbation_for
from tsdf_pipeline.pipelines.mlflow_utils import as_mlflow_metrics
from tsdf_pipeline.pipelines.reporting import image_figure, markdown_table

DETECTION_COLUMNS = ("detector", "perturbation", "precision", "recall", "f1", "duq", "confidence_change",
                     "box_change_pct", "detection_rate_before", "detection_rate_after", "n_images")
W2 = "tsdf_w2"


def _compared_perturbations(perturbations: dict[str, Any], poisoned: dict[str, Any], ids: list[str],
                            names: list[str]) -> dict[str, torch.Tensor | None]:
    """``{"clean": None, <method>: w, "tsdf_w2": w2}`` for the names asked for (``clean`` and ``tsdf_w2`` are
    special; others are interruption methods)."""
    out: dict[str, torch.Tensor | None] = {}
    for name in names:
        if name == "clean":
            out[name] = None
        elif name == W2:
            out[name] = poisoned["w"]
        elif name in perturbations and perturbations[name]["kind"] == "per_target":
            raise ValueError(f"evaluation.detection.perturbations: {name!r} holds one perturbation per edit target "
                             "(pgd mode per_target); the detection evaluation needs one protected image per photo")
        elif name in perturbations:
            out[name] = perturbation_for(perturbations[name], ids, name)
        else:
            raise KeyError(f"evaluation.detection.perturbations names {name!r}; available: clean, {W2}, "
                           f"{', '.join(sorted(perturbations))}")
    return out


def evaluate_poisoning(victim_ensemble: list[dict[str, Any]], evaluation_set: dict[str, Any],
                       perturbations: dict[str, Any], poisoned_perturbation: dict[str, Any],
                       interruption_table: pd.DataFrame, params: dict[str, Any], detector_registry: dict[str, Any]
                       ) -> tuple[pd.DataFrame, str, dict[str, dict[str, float]], dict[str, Figure]]:
    """Detector metrics for clean / noise / w1 / w2 (and any listed method), and SR_mask of w2 vs w1."""
    det_params = params["detection"]
    images, ids = evaluation_set["images"], evaluation_set["image_ids"]
    compared = _compared_perturbations(perturbations, poisoned_perturbation, ids, det_params["perturbations"])
    device = resolve_device(params.get("device", "cpu"))
    detectors = load_detectors(det_params["detectors"], detector_registry, device=str(device))
    rows: list[dict[str, Any]] = []
    figures: dict[str, Figure] = {}
    for name, detector in detectors.items():
        thresholds = {"min_score": 0.7, "detect_threshold": 0.5, **dict((det_params.get("thresholds") or {})
                                                                       .get(name) or {})}
        rows += evaluate_detection({name: detector}, images, compared, batch_size=int(params["batch_size"]),
                                   iou_thr=float(det_params.get("iou_threshold", 0.7)), device=device,
                                   **thresholds)
        grid = detection_examples(detector, images[: params.get("examples", 4)], compared,
                                  n=params.get("examples", 4), device=device, **thresholds)
        figures[f"detections_{name}.png"] = image_figure(
            grid, f"{name}: green = clean detections, red = detections on the protected image; columns: "
                  + " | ".join(compared))
    detection = pd.DataFrame(rows)

    victims = load_ensemble(victim_ensemble, device=device)
    with torch.no_grad():
        w2_rows = evaluate_interruption(victims, images, evaluation_set["attrs"], poisoned_perturbation["w"],
                                        method=W2, batch_size=int(params["batch_size"]),
                                        target_mode=params.get("target_mode", "all"),
                                        device=device)
    pooled_w2 = pd.DataFrame([{**r, "target": "all"} for r in aggregate_rows(w2_rows)])
    pooled = interruption_table[(interruption_table["kind"] == "interruption")
                                & (interruption_table["target"] == "all")
                                & (interruption_table["purification"] == "none")
                                & (interruption_table["method"] == "tsdf")]
    cost = pooled_w2[["victim", "sr_mask", "l2_mask"]].merge(
        pooled[["victim", "sr_mask", "l2_mask"]], on="victim", suffixes=("_w2", "_w1"))
    cost["sr_mask_change"] = cost["sr_mask_w2"] - cost["sr_mask_w1"]
    cost["l2_mask_change"] = cost["l2_mask_w2"] - cost["l2_mask_w1"]
    watermark = [r for r in w2_rows if r["kind"] == "watermark"][0]

    summary = "\n".join([
        "# Poisoning: face-detector degradation (TSDF evaluate_perturbation.py protocol)", "",
        "Boxes with score > min_score (0.7 for the probabilistic detectors), greedy one-to-one matching at "
        "IoU >= 0.7 between clean and protected detections; DUQ = (TP - FP) / |clean boxes| (lower = stronger "
        "poison). Protected images are clamped and 8-bit quantised. Detectors here are the upstream-correct "
        f"variants; stage 2 was optimised with release_compat={poisoned_perturbation['config']['release_compat']} "
        "(with True, these numbers measure transfer from the release's variants).", "",
        markdown_table(detection, DETECTION_COLUMNS), "",
        "## What the poison costs the interruption (all targets pooled, no purification)", "",
        markdown_table(cost, ("victim", "sr_mask_w1", "sr_mask_w2", "sr_mask_change", "l2_mask_w1", "l2_mask_w2",
                              "l2_mask_change")), "",
        f"w2 watermark PSNR {watermark['watermark_psnr']:.2f} dB, SSIM (7x7) {watermark['watermark_ssim_w7']:.4f}.",
        "",
    ])
    metrics: dict[str, float] = {}
    for row in detection.itertuples(index=False):
        for field in ("precision", "recall", "f1", "duq", "confidence_change", "box_change_pct"):
            metrics[f"detection.{row.detector}.{row.perturbation}.{field}"] = getattr(row, field)
    for row in cost.itertuples(index=False):
        metrics[f"{W2}.{row.victim}.sr_mask"] = row.sr_mask_w2
        metrics[f"{W2}.{row.victim}.sr_mask_change_vs_w1"] = row.sr_mask_change
    metrics[f"{W2}.watermark_psnr"] = watermark["watermark_psnr"]
    table = pd.concat([detection.assign(kind="detection"), cost.assign(kind="w2_vs_w1")], ignore_index=True)
    return table, summary, as_mlflow_metrics(metrics), figures
