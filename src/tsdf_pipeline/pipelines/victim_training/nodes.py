"""Thin Kedro nodes over ``tsdf_pipeline.training.recipes``: one victim trained per node, resumable.

``victim_training.victims`` names the victims a run is meant to train. Kedro fixes a pipeline's nodes (and so
its outputs) when it is built, so the pipeline holds one node per architecture and a subset is chosen with
Kedro's node selection (``--nodes train_stargan,train_hisd``); a node whose architecture is not listed stops
with an error saying so, instead of training something that was not asked for or saving a fake output.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd
from PIL import Image

from tsdf_pipeline.defense.state import tensor_digest
from tsdf_pipeline.models.checkpoints import read_checkpoint
from tsdf_pipeline.models.ensemble import file_sha256
from tsdf_pipeline.models.registry import ARCHS
from tsdf_pipeline.pipelines.job_keys import job_checkpoint
from tsdf_pipeline.training.engine import SAMPLES_DIR
from tsdf_pipeline.training.recipes import recipe_config, train_recipe

log = logging.getLogger(__name__)


def check_selected(arch: str, params: dict[str, Any]) -> None:
    """Raise unless ``arch`` is one of ``params["victims"]`` (all of which must be known architectures)."""
    victims = list(params.get("victims") or [])
    unknown = sorted(set(victims) - set(ARCHS))
    if unknown:
        raise ValueError(f"victim_training.victims names unknown architectures {unknown}; expected a subset of "
                         f"{list(ARCHS)}")
    if arch not in victims:
        nodes = ",".join(f"train_{v}" for v in victims) or "<none>"
        raise ValueError(f"node train_{arch} ran but victim_training.victims is {victims}: train only those with "
                         f"`kedro run --pipelines victim_training --nodes {nodes}`, or add {arch!r} to "
                         "victim_training.victims")


def train_victim(arch: str, training_set: dict[str, Any], params: dict[str, Any]
                 ) -> tuple[dict[str, Any], dict[str, Any], pd.DataFrame, Image.Image, dict[str, list[dict]]]:
    """Train ``arch`` with its recipe (``params.common`` + ``params[arch]``) on ``training_set``.

    ``training_set``: ``images`` ``[N,3,S,S]`` in [-1,1], ``attrs`` ``[N,40]`` in {0,1}, ``image_ids``.
    The run lives in ``params.work_dir/<arch>-<job hash>`` and resumes from it after a kill (same recipe and data).
    Returns the generator checkpoint (official wrapper), a training card (steps, generator config for
    ``load_generator``/``model_loading``, provenance), the loss history (arch, step, one column per loss
    term), the last sample grid and MLflow metric histories ``<arch>.<loss term>``.
    """
    check_selected(arch, params)
    config = recipe_config(arch, params)
    if not 0 < config.sample_every <= config.num_iters:
        raise ValueError(f"victim_training.{arch}: sample_every must be in [1, num_iters={config.num_iters}] "
                         f"so the run ends with a sample grid, got {config.sample_every}")
    images, attrs = training_set["images"], training_set["attrs"]
    # One work folder per job (arch, recipe without its run-time fields, data): a killed run resumes, a longer
    # num_iters continues, a changed recipe or data set starts fresh instead of refusing to resume.
    work_dir = job_checkpoint(params["work_dir"], arch, config.resume_settings(), list(training_set["image_ids"]),
                              tensor_digest(images), tensor_digest(attrs)).with_suffix("")
    log.info("training %s on %d images of %d px in %s", arch, images.shape[0], images.shape[-1], work_dir)
    start = time.perf_counter()
    result = train_recipe(arch, params, images, attrs, work_dir, device=params.get("device"))
    seconds = time.perf_counter() - start
    if result.resumed_from is not None:
        log.info("%s: resumed from step %d of %s", arch, result.resumed_from, work_dir)

    samples = sorted((work_dir / SAMPLES_DIR).glob("*.png"))
    with Image.open(samples[-1]) as grid:
        last_grid = grid.convert("RGB")
    card = {
        "arch": arch, "steps": result.steps, "resumed_from": result.resumed_from,
        "seconds_this_run": round(seconds, 2), "generator_config": result.generator_config,
        "generator_sha256": file_sha256(result.generator_path), "recipe": config.to_dict(),
        "training_images": len(training_set["image_ids"]), "image_size": int(images.shape[-1]),
        "work_dir": str(work_dir), "last_sample": samples[-1].name,
    }
    history = pd.DataFrame([{"arch": arch, "step": step, **losses} for step, losses in result.history])
    metrics: dict[str, list[dict]] = {}
    for step, losses in result.history:
        for term, value in losses.items():
            metrics.setdefault(f"{arch}.{term}", []).append({"value": float(value), "step": int(step)})
    return read_checkpoint(result.generator_path), card, history, last_grid, metrics
