"""Thin Kedro nodes: the simulated attacker (collect protected photos → detect/crop → fine-tune), per branch.

The photos go through the catalog (``attacker_photos``, a versioned folder of image files per branch): the data
preparation reads the files back, as an attacker reads what they downloaded.

Every branch runs the same code with the same photos, seed and hyperparameters; only the protection differs.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from tsdf_pipeline.data.attacker import PreparedSet, crop_grid, preparation_stats, prepare_crops, protect
from tsdf_pipeline.defense.state import tensor_digest
from tsdf_pipeline.devices import resolve_device
from tsdf_pipeline.metrics.grids import to_uint8
from tsdf_pipeline.pipelines.detector_specs import load_detectors
from tsdf_pipeline.pipelines.job_keys import job_checkpoint
from tsdf_pipeline.pipelines.mlflow_utils import as_mlflow_metrics
from tsdf_pipeline.pipelines.reporting import image_figure
from tsdf_pipeline.training.recipes import recipe_config, train_recipe

log = logging.getLogger(__name__)

CLEAN, W2 = "clean", "tsdf_w2"


def branch_protections(branches: list[str], perturbations: dict[str, Any], poisoned: dict[str, Any]
                       ) -> dict[str, torch.Tensor | None]:
    """Branch name → universal perturbation (``clean`` → None, ``tsdf_w2`` → stage 2, others → stage-1 methods)."""
    out: dict[str, torch.Tensor | None] = {}
    for name in branches:
        if name == CLEAN:
            out[name] = None
        elif name == W2:
            out[name] = poisoned["w"]
        elif name in perturbations and perturbations[name]["kind"] == "universal":
            out[name] = perturbations[name]["w"]
        else:
            raise ValueError(f"attacker branch {name!r}: needs a universal perturbation (clean, {W2} or one of "
                             f"{sorted(k for k, v in perturbations.items() if v['kind'] == 'universal')})")
    return out


def collect_photos(training_set: dict[str, Any], perturbations: dict[str, Any], poisoned: dict[str, Any],
                   params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The attacker's photos per branch: the first ``pool_count`` images of the training subset with the branch's
    protection on the chosen ``fraction`` of them, clamped and quantised (what ``PhotoFolderDataset`` saves as
    files in ``format``)."""
    rows_available = len(training_set["image_ids"])
    n = min(int(params["pool_count"]), rows_available)
    if n < int(params["pool_count"]):
        log.warning("attacker pool: asked for %d photos, the training subset holds %d; using %d",
                    params["pool_count"], rows_available, n)
    images, ids = training_set["images"][:n], list(training_set["image_ids"][:n])
    photos = {}
    for branch, w in branch_protections(params["branches"], perturbations, poisoned).items():
        protected, mask = protect(images, w, params.get("fraction", 1.0), seed=int(params["seed"]))
        photos[branch] = {"images": protected, "ids": ids, "protected": mask, "format": params.get("format", "png"),
                          "jpeg_quality": params.get("jpeg_quality")}
    return photos


def prepare_attacker_data(photos: dict[str, dict[str, Any]], training_set: dict[str, Any], params: dict[str, Any],
                          detector_registry: dict[str, Any]
                          ) -> tuple[dict[str, Any], pd.DataFrame, dict[str, dict[str, float]], dict[str, Figure]]:
    """Detect and crop faces in each branch's photo files (as read back from the catalog), the attacker's data
    preparation; labels come from the training subset, matched by image id.

    Crops are stored as uint8 (they are on the 8-bit grid already): 4x smaller versioned datasets.
    """
    row_of = {str(image_id): i for i, image_id in enumerate(training_set["image_ids"])}
    ids_of = {branch: [str(i) for i in entry["ids"]] for branch, entry in photos.items()}
    for branch, ids in ids_of.items():
        unknown = [i for i in ids if i not in row_of]
        if unknown:
            raise ValueError(f"attacker photos, branch {branch!r}: image ids {unknown[:5]} are not in the training "
                             "subset (photos from another ingestion?)")
    device = resolve_device(params.get("device", "cpu"))
    detector = load_detectors([params["detector"]], detector_registry, device=str(device))[params["detector"]]
    prepared, rows, figures = {}, [], {}
    for branch, entry in photos.items():
        ids = ids_of[branch]
        attrs = training_set["attrs"][torch.tensor([row_of[i] for i in ids], dtype=torch.long)]
        crops = prepare_crops(entry["images"], detector, score_threshold=float(params["score_threshold"]),
                              margin=float(params["margin"]), out_size=int(params["out_size"]),
                              batch_size=int(params.get("batch_size", 32)), device=device)
        prepared[branch] = {"crops": to_uint8(crops.crops), "attrs": attrs[crops.kept_index],
                            "kept_ids": [ids[i] for i in crops.kept_index.tolist()], "boxes": crops.boxes,
                            "windows": crops.windows, "scores": crops.scores, "kept_index": crops.kept_index,
                            "protected": entry["protected"]}
        figures[f"crops_{branch}.png"] = image_figure(crop_grid(crops, n=16),
                                                      f"attacker crops, branch {branch} ({params['detector']})")
    clean = _as_prepared(prepared[CLEAN]) if CLEAN in prepared else None
    metrics: dict[str, float] = {}
    for branch, entry in prepared.items():
        n = len(ids_of[branch])
        stats = preparation_stats(_as_prepared(entry), clean or _as_prepared(entry), n)
        rows.append({"branch": branch, **stats})
        metrics |= {f"{branch}.{k}": v for k, v in stats.items()}
        log.info("attacker branch %s: kept %d of %d photos, crop IoU with clean %.3f", branch, stats["kept"], n,
                 stats["crop_iou_mean"])
    return prepared, pd.DataFrame(rows), as_mlflow_metrics(metrics), figures


def from_uint8(crops: torch.Tensor) -> torch.Tensor:
    """uint8 crops ``[K,3,S,S]`` → float in [-1,1] (exact inverse of ``to_uint8`` on the 8-bit grid)."""
    return crops.float() / 127.5 - 1


def _as_prepared(entry: dict[str, Any]) -> PreparedSet:
    dropped = torch.isnan(entry["scores"]).nonzero().flatten().tolist()
    return PreparedSet(crops=from_uint8(entry["crops"]), kept_index=entry["kept_index"], boxes=entry["boxes"],
                       windows=entry["windows"], scores=entry["scores"], dropped=dropped)


def attacker_overrides(arch: str, params: dict[str, Any]) -> dict[str, Any]:
    """Recipe overrides of the attacker's fine-tuning: ``params.overrides`` on top of the architecture's own
    objective. HiSD's edit teachers (``teacher_w``, ``distill_tags``: training aids of the demo victims) are off
    unless the overrides set them: an attacker who collects photos has no such models."""
    teachers_off = {"teacher_w": 0.0, "distill_tags": []} if arch == "hisd" else {}
    return {**teachers_off, **(params.get("overrides") or {})}


def retrain(prepared: dict[str, Any], victim_ensemble: list[dict[str, Any]], params: dict[str, Any],
            recipes: dict[str, Any]) -> tuple[dict[str, Any], pd.DataFrame, dict[str, list[dict[str, float]]]]:
    """Fine-tune the chosen victim from its checkpoint on each branch's crops (same seed and settings)."""
    spec = next((v for v in victim_ensemble if v["name"] == params["victim"]), None)
    if spec is None:
        raise KeyError(f"attacker_retraining.victim {params['victim']!r} is not in the ensemble "
                       f"{[v['name'] for v in victim_ensemble]}")
    models, rows, metrics = {}, [], {}
    overrides = attacker_overrides(spec["arch"], params)
    for branch, data in prepared.items():
        if data["crops"].shape[0] < int(params["min_crops"]):
            raise ValueError(f"attacker branch {branch!r}: only {data['crops'].shape[0]} usable crops "
                             f"(min_crops {params['min_crops']}); the detector dropped the rest")
        # One work folder per job (branch, victim file, recipe as resolved without its run-time fields, the crops'
        # pixels and labels): a killed run resumes, a longer num_iters continues, and a changed job (another
        # protection, new code defaults) starts fresh instead of refusing to resume.
        recipe = recipe_config(spec["arch"], recipes, **overrides).resume_settings()
        work = job_checkpoint(params["work_dir"], branch, spec["arch"], spec["sha256"], recipe,
                              tensor_digest(data["crops"]), tensor_digest(data["attrs"])).with_suffix("")
        result = train_recipe(spec["arch"], recipes, from_uint8(data["crops"]), data["attrs"], work,
                              init_checkpoint=spec["checkpoint"], device=params.get("device"), **overrides)
        models[branch] = torch.load(result.generator_path, map_location="cpu", weights_only=True)
        for step, losses in result.history:
            rows.append({"branch": branch, "step": step, **losses})
            for term, value in losses.items():
                metrics.setdefault(f"{branch}.{term}", []).append({"value": float(value), "step": int(step)})
    return {"arch": spec["arch"], "victim": spec, "models": models}, pd.DataFrame(rows), metrics
