"""The objective of CMUA's search for its per-model step factors (MODELS.md §6, "TPE search").

CMUA tunes one step factor per victim architecture with TPE (NNI: each factor ``U(0, 10)``, 1,000 trials; a trial
trains a watermark with batch 16 and reports the mean of the four models' success rates, ``prop_dist``). The
tuned values were never published, so the shipped ``setting.json`` has all factors 1. This module scores one set
of factors the same way; the sampler that proposes them (TPE) lives with the caller (the Kedro layer uses
Optuna's), so the core stays torch-only.

Differences from the release: the success rate is ``sr_mask_all`` of :func:`evaluate_interruption` (CMUA's
``prop_dist``: successes over all (image, target) pairs) on the published image (clamped, 8-bit) rather than
the unclamped ``x + w``, and it is measured on the first ``eval_images`` training images (CMUA: the first 20
images of the split it trains on), never on the evaluation subset, which would leak the test images into the
tuning.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from tsdf_pipeline.defense.cmua import CMUAConfig, run_cmua
from tsdf_pipeline.defense.victim_ops import VictimLike
from tsdf_pipeline.devices import resolve_device
from tsdf_pipeline.metrics.evaluate_interruption import aggregate_rows, evaluate_interruption


@dataclass
class CMUASearchConfig:
    """Search settings (defaults: CMUA's ``search_space.json`` and its trial batch of 16)."""

    trials: int = 0              # completed trials wanted; 0: no search, CMUAConfig.factors as configured
    batch_size: int = 16         # CMUA's trials train with batch 16 (its final attack with 64)
    low: float = 0.0             # each factor ~ U(low, high)
    high: float = 10.0
    eval_images: int = 20        # the objective's images: the first N training images
    startup_trials: int = 10     # random trials before TPE takes over
    seed: int = 0

    def __post_init__(self) -> None:
        if self.trials < 0 or self.batch_size < 1 or self.eval_images < 1 or self.startup_trials < 0:
            raise ValueError("CMUASearchConfig: trials and startup_trials must be >= 0, batch_size and eval_images "
                             f">= 1; got {dataclasses.asdict(self)}")
        if not 0.0 <= self.low < self.high:
            raise ValueError(f"CMUASearchConfig: expected 0 <= low < high, got low={self.low}, high={self.high}")


def score_factors(victims: list[VictimLike], images: Tensor, attrs40: Tensor, factors: dict[str, float], *,
                  cmua: CMUAConfig, search: CMUASearchConfig) -> dict[str, float]:
    """Train a CMUA watermark with ``factors`` (arch -> step factor) and score it.

    Args:
        victims: the ensemble (moved to ``cmua.device`` in place).
        images: ``[N,3,S,S]`` in [-1,1], the training images; attrs40: ``[N,40]`` CelebA labels in {0,1}.
        factors: step factor per victim arch; archs not named keep ``cmua.factors``.
        cmua: the CMUA settings of the final attack; the trial uses ``search.batch_size`` and no checkpoint.
        search: the search settings.

    Returns:
        ``{"score": mean over victims, <victim name>: sr_mask_all of that victim over every target}``.
    """
    config = dataclasses.replace(cmua, factors={**cmua.factors, **factors}, batch_size=search.batch_size,
                                 progress=False)
    w = run_cmua(victims, images, attrs40, config).w
    n = min(search.eval_images, images.shape[0])
    with torch.no_grad():
        rows = evaluate_interruption(victims, images[:n], attrs40[:n], w, method="cmua", batch_size=search.batch_size,
                                     target_mode="all", device=resolve_device(cmua.device))
    rates = {row["victim"]: float(row["sr_mask_all"]) for row in aggregate_rows(rows)}
    return {"score": sum(rates.values()) / len(rates), **rates}
