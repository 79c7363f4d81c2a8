"""Thin Kedro nodes over ``tsdf_pipeline.metrics``: one evaluation for every method, victim and target."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from tsdf_pipeline.devices import resolve_device
from tsdf_pipeline.metrics.evaluate_interruption import (
    aggregate_rows,
    collect_examples,
    evaluate_interruption_methods,
    perturbation_slice,
)
from tsdf_pipeline.models.ensemble import load_ensemble
from tsdf_pipeline.pipelines.evaluation.perceptual import load_perceptual
from tsdf_pipeline.pipelines.mlflow_utils import as_mlflow_metrics
from tsdf_pipeline.pipelines.reporting import bar_chart, image_figure, markdown_table

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ("method", "victim", "sr_mask", "l2_mask", "ruiz_sr", "psnr_out", "ssim_out_w3", "ssim_out_w7",
                   "n_samples", "n_empty_mask")
MLFLOW_FIELDS = ("sr_mask", "l2_mask", "ruiz_sr", "mse", "l1", "psnr_out", "ssim_out_w3", "ssim_out_w7")
WATERMARK_FIELDS = ("watermark_psnr", "watermark_ssim_w3", "watermark_ssim_w7", "watermark_ms_ssim",
                    "watermark_linf")


def perturbation_for(entry: dict[str, Any], image_ids: list[str], method: str
                     ) -> torch.Tensor | dict[str, torch.Tensor]:
    """What to add to the evaluation images: universal ``[1,3,H,W]``, per image ``[N,3,H,W]`` or per target
    ``{victim: [T,N,3,H,W]}``, the last two checked to be for these images."""
    if entry["kind"] == "universal":
        return entry["w"]
    if list(entry["image_ids"]) != list(image_ids):
        raise ValueError(f"{method}: {entry['kind'].replace('_', '-')} perturbations were made for other images "
                         f"than the evaluation set ({len(entry['image_ids'])} vs {len(image_ids)} ids); re-run the "
                         "interruption stage")
    return entry["w"]


def _check_targets(entry: dict[str, Any], victims: list[Any], target_mode: str, method: str) -> None:
    """Per-target perturbations must be for the very targets the evaluation edits with."""
    for victim in victims:
        made, wanted = entry["targets"].get(victim.name), victim.target_names(target_mode)
        if made != wanted:
            raise ValueError(f"{method}: per-target perturbations for {victim.name} were made for the targets "
                             f"{made}, the evaluation (target_mode {target_mode!r}) edits with {wanted}: set "
                             f"interruption.{method}.targets to evaluation.target_mode and re-run the interruption "
                             "stage")


def evaluate_methods(victim_ensemble: list[dict[str, Any]], evaluation_set: dict[str, Any],
                     perturbations: dict[str, Any], params: dict[str, Any]
                     ) -> tuple[pd.DataFrame, str, dict[str, dict[str, float]], dict[str, Figure]]:
    """Interruption + imperceptibility + robustness metrics of every method on the evaluation subset.

    Returns the tidy table (per-target rows and pooled ``target == "all"`` rows, plus watermark rows), a
    markdown summary, MLflow metrics ``<method>.<victim>.<metric>`` and figures (example grids, bar charts).
    """
    device = resolve_device(params.get("device", "cpu"))
    victims = load_ensemble(victim_ensemble, device=device)
    images, attrs, ids = evaluation_set["images"], evaluation_set["attrs"], evaluation_set["image_ids"]
    methods = params.get("methods") or list(perturbations)
    unknown = [m for m in methods if m not in perturbations]
    if unknown:
        raise KeyError(f"evaluation.methods names {unknown} but the interruption stage produced only "
                       f"{sorted(perturbations)}")
    chosen = {method: perturbation_for(perturbations[method], ids, method) for method in methods}
    target_mode = params.get("target_mode", "all")
    for method in methods:
        if perturbations[method]["kind"] == "per_target":
            _check_targets(perturbations[method], victims, target_mode, method)
    perceptual, perceptual_lines = load_perceptual(params.get("perceptual"), device)
    with torch.no_grad():
        all_rows = evaluate_interruption_methods(
            victims, images, attrs, chosen, batch_size=int(params["batch_size"]),
            purifications=tuple(params["purifications"]), target_mode=target_mode, device=device,
            perceptual=perceptual)
    rows: list[dict[str, Any]] = []
    figures: dict[str, Figure] = {}
    n_examples = int(params.get("examples", 4))
    for method, w in chosen.items():
        method_rows = [r for r in all_rows if r["method"] == method]
        rows += method_rows + [{**r, "target": "all"} for r in aggregate_rows(method_rows)]
        for victim, grid in collect_examples(victims, images[:n_examples], attrs[:n_examples],
                                             perturbation_slice(w, 0, n_examples), n_examples,
                                             target_mode=target_mode, device=device).items():
            figures[f"examples_{method}_{victim}.png"] = image_figure(
                grid, f"{method} vs {victim}: original | protected | clean edit | protected edit | |diff| x10")
    log.info("evaluated %s on %d images", ", ".join(chosen), images.shape[0])
    table = pd.DataFrame(rows)
    pooled = table[(table["kind"] == "interruption") & (table["target"] == "all")]
    for victim in pooled["victim"].unique():
        figures[f"bars_{victim}.png"] = bar_chart(pooled, victim)
    return table, _summary(table, perceptual_lines), _mlflow_metrics(table), figures


def _present(table: pd.DataFrame, fields: tuple[str, ...], optional: tuple[str, ...]) -> tuple[str, ...]:
    """``fields`` plus those of ``optional`` the table has (LPIPS columns exist only when it was computed)."""
    return fields + tuple(f for f in optional if f in table.columns)


def _summary(table: pd.DataFrame, perceptual_lines: list[str]) -> str:
    pooled = table[(table["kind"] == "interruption") & (table["target"] == "all")]
    clean = pooled[pooled["purification"] == "none"]
    robust = pooled.pivot_table(index=["method", "victim"], columns="purification", values="sr_mask").reset_index()
    robust.columns = [str(c) for c in robust.columns]
    wm = table[table["kind"] == "watermark"]
    fid = table[table["kind"] == "fid"]
    parts = [
        "# Interruption: every method against every victim (all edit targets pooled)", "",
        "SR_mask / L2_mask as CMUA (mask from |G(x) - x| summed over channels > 0.5; success if L2_mask > 0.05);"
        " ruiz_sr = unmasked MSE > 0.05; output PSNR/SSIM between G(x+w) and G(x) (lower = stronger);"
        " ssim_out_w3 = TSDF's 3x3 window, ssim_out_w7 = the standard 7x7 window"
        + ("; lpips_out = LPIPS between G(x+w) and G(x) (higher = stronger)." if "lpips_out" in table else "."), "",
        markdown_table(clean, _present(table, SUMMARY_COLUMNS, ("lpips_out",))), "",
        "## Imperceptibility of the published (clamped, 8-bit) protected image", "",
        markdown_table(wm, ("method", *_present(table, WATERMARK_FIELDS, ("watermark_lpips",)))), "",
        "## Robustness: SR_mask after the attacker purifies the protected image", "",
        markdown_table(robust, list(robust.columns)), "",
    ]
    if not fid.empty:
        parts += ["## FID between the clean edits and the edits of the protected images (higher = stronger)", "",
                  "Every target pooled, no purification; a distance between sets, unreliable below a few thousand "
                  "samples.", "", markdown_table(fid, ("method", "victim", "fid_out", "n_samples")), ""]
    parts += [*perceptual_lines, ""]
    return "\n".join(parts)


def _mlflow_metrics(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    metrics: dict[str, float] = {}
    pooled = table[(table["kind"] == "interruption") & (table["target"] == "all")]
    for row in pooled.itertuples(index=False):
        suffix = "" if row.purification == "none" else f".{row.purification}"
        for field in _present(table, MLFLOW_FIELDS, ("lpips_out",)):
            metrics[f"{row.method}.{row.victim}{suffix}.{field}"] = getattr(row, field)
    for row in table[table["kind"] == "watermark"].itertuples(index=False):
        for field in _present(table, WATERMARK_FIELDS, ("watermark_lpips",)):
            metrics[f"{row.method}.{field}"] = getattr(row, field)
    for row in table[table["kind"] == "fid"].itertuples(index=False):
        metrics[f"{row.method}.{row.victim}.fid_out"] = row.fid_out
    return as_mlflow_metrics(metrics)
