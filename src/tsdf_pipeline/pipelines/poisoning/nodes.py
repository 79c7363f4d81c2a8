"""Thin Kedro nodes over ``tsdf_pipeline.defense.poisoning`` (TSDF stage 2)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from tsdf_pipeline.defense.poisoning import PoisoningConfig, run_poisoning
from tsdf_pipeline.defense.state import tensor_digest
from tsdf_pipeline.models.ensemble import file_sha256, load_ensemble
from tsdf_pipeline.pipelines.detector_specs import load_detectors
from tsdf_pipeline.pipelines.job_keys import job_checkpoint

log = logging.getLogger(__name__)


def poisoning_config(params: dict[str, Any], interruption_params: dict[str, Any]) -> PoisoningConfig:
    """Stage-2 config; the joint stage-1 loop uses ``interruption.tsdf`` unless ``poisoning.interruption`` says
    otherwise (key by key)."""
    keys = {k: v for k, v in params.items() if k not in ("checkpoint_dir", "interruption")}
    embedded = {**dict(interruption_params.get("tsdf") or {}), **dict(params.get("interruption") or {})}
    return PoisoningConfig(**keys, interruption=embedded)


def run_stage2(victim_ensemble: list[dict[str, Any]], optimisation_set: dict[str, Any],
               perturbations: dict[str, Any], params: dict[str, Any], interruption_params: dict[str, Any],
               detector_registry: dict[str, Any]
               ) -> tuple[dict[str, Any], pd.DataFrame, dict[str, list[dict[str, float]]]]:
    """``w2`` from ``perturbations["tsdf"]`` (= ``w1``, pinnable with ``--load-versions perturbations:<v>``)."""
    if "tsdf" not in perturbations:
        raise KeyError("poisoning needs the TSDF stage-1 perturbation: add 'tsdf' to interruption.methods")
    w1 = perturbations["tsdf"]["w"]
    config = poisoning_config(params, interruption_params)
    victims = load_ensemble(victim_ensemble)
    detectors = load_detectors(params["detectors"], detector_registry, release_compat=config.release_compat)
    weights = {name: detector_registry[name].get("weights") if detector_registry[name] else None
               for name in params["detectors"]}
    weights_sha = {name: file_sha256(path) if path and Path(path).is_file() else None
                   for name, path in weights.items()}
    checkpoint = job_checkpoint(params["checkpoint_dir"], "poisoning", {k: v for k, v in params.items()
                                                                        if k != "epochs"},
                                interruption_params.get("tsdf"), weights_sha,
                                [v["sha256"] for v in victim_ensemble], tensor_digest(optimisation_set["images"]),
                                tensor_digest(w1))
    start = time.perf_counter()
    result = run_poisoning(victims, detectors, optimisation_set["images"], optimisation_set["attrs"], w1, config,
                           checkpoint_path=checkpoint)
    seconds = time.perf_counter() - start
    log.info("stage 2: w2 %s in %.1f s (detectors %s)", list(result.w.shape), seconds, list(detectors))
    metrics: dict[str, list[dict[str, float]]] = {}
    for record in result.history:
        for key, value in record.items():
            if key not in ("step", "epoch", "batch"):
                metrics.setdefault(key, []).append({"value": float(value), "step": int(record["step"])})
    metrics["seconds"] = [{"value": seconds, "step": 0}]
    changed = float(((result.w - w1).abs() > 1e-7).float().mean())
    metrics["changed_fraction"] = [{"value": changed, "step": 0}]
    poisoned = {"kind": "universal", "w": result.w.detach().cpu(), "image_ids": [],
                "config": {"detectors": list(detectors), "release_compat": str(config.release_compat)}}
    return poisoned, pd.DataFrame(result.history), metrics
