"""Thin Kedro nodes: validate the victim ensemble and describe each victim (model cards)."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from tsdf_pipeline.metrics.disruption import edit_mask
from tsdf_pipeline.models.checkpoints import CheckpointNotFoundError
from tsdf_pipeline.models.ensemble import load_victim
from tsdf_pipeline.pipelines.mlflow_utils import as_mlflow_metrics

log = logging.getLogger(__name__)


def victim_specs(params: dict[str, Any], **checkpoints: dict[str, Any]) -> list[dict[str, Any]]:
    """Specs of the ensemble's victims (``params.ensemble``), with the checkpoint each catalog entry names."""
    specs = []
    for name in params["ensemble"]:
        if name not in params["victims"]:
            raise KeyError(f"model_loading.ensemble names {name!r} but model_loading.victims has no such entry; "
                           f"known: {sorted(params['victims'])}")
        victim = params["victims"][name]
        ref = checkpoints[f"{victim.get('arch', name)}_checkpoint"]
        if not ref["exists"]:
            raise CheckpointNotFoundError(
                f"checkpoint of victim {name!r} not found: expected {ref['path']}"
                + (f"; it comes from {ref['source']}" if ref["source"] else "") + " (see docs/weights.md)")
        specs.append({"name": name, "arch": victim.get("arch", name), "checkpoint": ref["path"],
                      "sha256": ref["sha256"], "source": ref["source"],
                      "config": {k: v for k, v in (victim.get("config") or {}).items() if v is not None},
                      "options": {k: v for k, v in (victim.get("options") or {}).items() if v is not None}})
    return specs


def validate_ensemble(specs: list[dict[str, Any]], evaluation_set: dict[str, Any], params: dict[str, Any]
                      ) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, dict[str, float]]]:
    """Build every victim, check finite outputs and that its edits change the image; write model cards.

    Returns ``(victim_ensemble, model_cards, metrics)``; raises on a victim whose outputs are non-finite or
    whose every non-reconstruction edit leaves the image unchanged.
    """
    n = int(params.get("validation_images", 4))
    cards: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    for spec in specs:
        victim = load_victim(spec)
        x = evaluation_set["images"][:n]
        if x.shape[-1] != victim.image_size:
            raise ValueError(f"victim {spec['name']!r} works at {victim.image_size} px but the evaluation set is "
                             f"{x.shape[-1]} px; set data_ingestion.image_size to {victim.image_size}")
        targets = victim.targets(evaluation_set["attrs"][:n], mode="all")
        with torch.no_grad():
            start = time.perf_counter()
            out = victim.edit(x, targets)
            seconds = time.perf_counter() - start
        if not torch.isfinite(out).all():
            raise ValueError(f"victim {spec['name']!r} ({spec['checkpoint']}) produced non-finite outputs")
        change = (out - x).abs().mean(dim=(1, 2, 3, 4))
        coverage = torch.stack([edit_mask(o, x).mean() for o in out])
        edits = [i for i, t in enumerate(targets.names) if t != "recon"]
        if edits and float(change[edits].max()) < 1e-4:
            raise ValueError(f"victim {spec['name']!r}: no edit changes the image (max mean |G(x,t)-x| "
                             f"{float(change[edits].max()):.2e}); is the checkpoint an identity model?")
        per_image_ms = 1000 * seconds / (x.shape[0] * len(targets))
        cards[spec["name"]] = {
            **{k: spec[k] for k in ("name", "arch", "checkpoint", "sha256", "source", "config")},
            "options": {k: str(v) for k, v in spec["options"].items()},
            **victim.describe(),
            "validation": {"images": x.shape[0], "finite": True,
                           "mean_abs_change": dict(zip(targets.names, change.tolist(), strict=True)),
                           "mask_coverage": dict(zip(targets.names, coverage.tolist(), strict=True)),
                           "forward_ms_per_image_target": per_image_ms},
        }
        metrics |= {f"{spec['name']}.parameters": cards[spec["name"]]["num_params"],
                    f"{spec['name']}.forward_ms": per_image_ms}
        log.info("victim %s (%s): %d targets, %.1f ms per image and target", spec["name"], spec["arch"],
                 len(targets), per_image_ms)
    return specs, cards, as_mlflow_metrics(metrics)
