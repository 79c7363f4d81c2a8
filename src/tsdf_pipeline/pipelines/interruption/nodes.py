"""Thin Kedro nodes over ``tsdf_pipeline.defense``: every configured method, same victims, same data."""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from tsdf_pipeline.defense.interruption import RUNTIME_FIELDS
from tsdf_pipeline.defense.methods import make_config, make_perturbation
from tsdf_pipeline.defense.state import tensor_digest
from tsdf_pipeline.models.ensemble import load_ensemble
from tsdf_pipeline.pipelines.job_keys import job_checkpoint

log = logging.getLogger(__name__)

# Universal methods are optimised on the optimisation subset; per-image ones (PGD, noise with per_image) perturb
# each evaluation image.
PER_IMAGE_METHODS = ("pgd",)


def run_methods(victim_ensemble: list[dict[str, Any]], optimisation_set: dict[str, Any],
                evaluation_set: dict[str, Any], params: dict[str, Any]
                ) -> tuple[dict[str, Any], pd.DataFrame, dict[str, list[dict[str, float]]]]:
    """Run each method of ``params.methods``; returns perturbations, the step history and MLflow metrics.

    ``perturbations[method] = {"kind": "universal"|"per_image", "w": Tensor, "image_ids": [...] (per image)}``.
    """
    victims = load_ensemble(victim_ensemble)
    perturbations: dict[str, Any] = {}
    history_rows: list[dict[str, Any]] = []
    metrics: dict[str, list[dict[str, float]]] = {}
    for method in params["methods"]:
        config = make_config(method, dict(params.get(method) or {}))
        per_image = method in PER_IMAGE_METHODS or getattr(config, "per_image", False)
        data = evaluation_set if per_image else optimisation_set
        # Same job = same settings (except the ones a resumed run may change, e.g. more epochs), victims, pixels.
        settings = {k: v for k, v in vars(config).items() if k not in RUNTIME_FIELDS}
        checkpoint = job_checkpoint(params["checkpoint_dir"], method, method, settings,
                                    [v["sha256"] for v in victim_ensemble], tensor_digest(data["images"]))
        start = time.perf_counter()
        result = make_perturbation(method, victims, data["images"], data["attrs"], config,
                                   checkpoint_path=checkpoint)
        seconds = time.perf_counter() - start
        log.info("%s: %s perturbation %s in %.1f s", method, result.kind, list(result.w.shape), seconds)
        perturbations[method] = {"kind": result.kind, "w": result.w.detach().cpu(),
                                 "image_ids": list(data["image_ids"]) if result.kind == "per_image" else [],
                                 "config": {k: str(v) for k, v in vars(config).items()}}
        for record in result.history:
            history_rows.append({"method": method, **record})
            for key, value in record.items():
                if key not in ("step", "epoch", "batch"):
                    metrics.setdefault(f"{method}.{key}", []).append({"value": float(value), "step": int(record["step"])})
        metrics[f"{method}.seconds"] = [{"value": seconds, "step": 0}]
        metrics[f"{method}.linf"] = [{"value": float(result.w.abs().max()), "step": 0}]
    return perturbations, pd.DataFrame(history_rows), metrics
