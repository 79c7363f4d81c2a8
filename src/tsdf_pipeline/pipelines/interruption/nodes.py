"""Thin Kedro nodes over ``tsdf_pipeline.defense``: every configured method, same victims, same data."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from tsdf_pipeline.defense.cmua_search import CMUASearchConfig, score_factors
from tsdf_pipeline.defense.interruption import RUNTIME_FIELDS
from tsdf_pipeline.defense.methods import make_config, make_perturbation
from tsdf_pipeline.defense.state import tensor_digest
from tsdf_pipeline.models.ensemble import load_ensemble
from tsdf_pipeline.pipelines.job_keys import job_checkpoint, job_name

log = logging.getLogger(__name__)

# Universal methods are optimised on the optimisation subset; per-image ones (PGD, noise with per_image) perturb
# each evaluation image.
PER_IMAGE_METHODS = ("pgd",)


def search_cmua_factors(victim_ensemble: list[dict[str, Any]], optimisation_set: dict[str, Any],
                        params: dict[str, Any]
                        ) -> tuple[dict[str, Any], pd.DataFrame, dict[str, list[dict[str, float]]]]:
    """CMUA's TPE search of its per-model step factors (``params.cmua_search``; ``trials: 0`` keeps
    ``params.cmua.factors``).

    Each trial trains a CMUA watermark on the optimisation subset with the proposed factors and scores it
    (``tsdf_pipeline.defense.cmua_search``); Optuna's TPE sampler proposes the factors. The study is stored in
    ``<checkpoint_dir>/cmua_search.db`` (SQLite) under a name keyed by the settings, victims and images, so a
    killed search resumes with its completed trials and any change starts a new study.

    Returns ``{"factors": arch -> factor, "searched": bool, "score": float | None}`` for the CMUA run, one row
    per completed trial, and MLflow metrics ``cmua_search.*``.
    """
    search = CMUASearchConfig(**(params.get("cmua_search") or {}))
    cmua = make_config("cmua", dict(params.get("cmua") or {}))
    if search.trials and "cmua" not in params["methods"]:
        log.warning("cmua_search: %d trials asked for, but 'cmua' is not in interruption.methods; not searching",
                    search.trials)
    if search.trials == 0 or "cmua" not in params["methods"]:
        return {"factors": dict(cmua.factors), "searched": False, "score": None}, pd.DataFrame(), {}
    victims = load_ensemble(victim_ensemble)
    archs = sorted({v.arch for v in victims})
    images, attrs = optimisation_set["images"], optimisation_set["attrs"]
    # More trials continue the same study; other settings, victims or images start another.
    name = job_name("cmua-search", vars(search) | {"trials": None},
                    {k: v for k, v in vars(cmua).items() if k not in (*RUNTIME_FIELDS, "factors")},
                    [v["sha256"] for v in victim_ensemble], tensor_digest(images))
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the node logs each trial, with the per-victim rates
    folder = Path(params["checkpoint_dir"])
    folder.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=name, storage=f"sqlite:///{folder / 'cmua_search.db'}", load_if_exists=True, direction="maximize",
        sampler=optuna.samplers.TPESampler(n_startup_trials=search.startup_trials, seed=search.seed))

    def objective(trial: optuna.Trial) -> float:
        factors = {arch: trial.suggest_float(arch, search.low, search.high) for arch in archs}
        result = score_factors(victims, images, attrs, factors, cmua=cmua, search=search)
        for victim, rate in result.items():
            trial.set_user_attr(victim, rate)
        log.info("cmua_search trial %d: factors %s -> %s", trial.number, factors, result)
        return result["score"]

    done = len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    if done < search.trials:
        study.optimize(objective, n_trials=search.trials - done, show_progress_bar=cmua.progress)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))[:search.trials]
    best = max(trials, key=lambda t: t.value)
    rows = pd.DataFrame([{"trial": t.number, "score": t.value, **{f"factor_{k}": v for k, v in t.params.items()},
                          **{f"sr_{k}": v for k, v in t.user_attrs.items() if k != "score"}} for t in trials])
    metrics = {"cmua_search.score": [{"value": float(t.value), "step": i} for i, t in enumerate(trials)],
               **{f"cmua_search.best_factor.{k}": [{"value": float(v), "step": 0}] for k, v in best.params.items()},
               "cmua_search.best_score": [{"value": float(best.value), "step": 0}]}
    return {"factors": {**cmua.factors, **best.params}, "searched": True, "score": float(best.value)}, rows, metrics


def run_methods(victim_ensemble: list[dict[str, Any]], optimisation_set: dict[str, Any],
                evaluation_set: dict[str, Any], cmua_factors: dict[str, Any], params: dict[str, Any]
                ) -> tuple[dict[str, Any], pd.DataFrame, dict[str, list[dict[str, float]]]]:
    """Run each method of ``params.methods``; returns perturbations, the step history and MLflow metrics.

    CMUA runs with ``cmua_factors["factors"]`` (the search's best, or ``params.cmua.factors``).
    ``perturbations[method] = {"kind": "universal"|"per_image"|"per_target", "w": Tensor (per target:
    {victim: [T,N,3,H,W]}), "image_ids": [...] (per image and per target), "targets": {victim: [names]} (per
    target)}``.
    """
    victims = load_ensemble(victim_ensemble)
    perturbations: dict[str, Any] = {}
    history_rows: list[dict[str, Any]] = []
    metrics: dict[str, list[dict[str, float]]] = {}
    for method in params["methods"]:
        method_params = dict(params.get(method) or {})
        if method == "cmua":
            method_params["factors"] = dict(cmua_factors["factors"])
        config = make_config(method, method_params)
        per_image = method in PER_IMAGE_METHODS or getattr(config, "per_image", False)  # or per target
        data = evaluation_set if per_image else optimisation_set
        # Same job = same settings (except the ones a resumed run may change, e.g. more epochs), victims, pixels.
        settings = {k: v for k, v in vars(config).items() if k not in RUNTIME_FIELDS}
        checkpoint = job_checkpoint(params["checkpoint_dir"], method, method, settings,
                                    [v["sha256"] for v in victim_ensemble], tensor_digest(data["images"]))
        start = time.perf_counter()
        result = make_perturbation(method, victims, data["images"], data["attrs"], config,
                                   checkpoint_path=checkpoint)
        seconds = time.perf_counter() - start
        parts = result.w if isinstance(result.w, dict) else {"": result.w}
        log.info("%s: %s perturbation %s in %.1f s", method, result.kind,
                 {k: list(w.shape) for k, w in parts.items()}, seconds)
        perturbations[method] = {"kind": result.kind,
                                 "w": result.w if isinstance(result.w, dict) else result.w.detach().cpu(),
                                 "image_ids": list(data["image_ids"]) if result.kind != "universal" else [],
                                 "config": {k: str(v) for k, v in vars(config).items()}}
        if result.kind == "per_target":
            perturbations[method]["targets"] = {v.name: v.target_names(config.targets) for v in victims}
        for record in result.history:
            history_rows.append({"method": method, **record})
            for key, value in record.items():
                if key not in ("step", "epoch", "batch"):
                    metrics.setdefault(f"{method}.{key}", []).append({"value": float(value), "step": int(record["step"])})
        metrics[f"{method}.seconds"] = [{"value": seconds, "step": 0}]
        metrics[f"{method}.linf"] = [{"value": max(float(w.abs().max()) for w in parts.values()), "step": 0}]
    return perturbations, pd.DataFrame(history_rows), metrics
