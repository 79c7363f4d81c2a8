"""Thin Kedro nodes over ``tsdf_pipeline.data``."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from tsdf_pipeline.data.attributes import CELEBA_ATTRS
from tsdf_pipeline.data.celeba import CelebAIndex, check_layout, read_index
from tsdf_pipeline.data.splits import split_rows, take_first
from tsdf_pipeline.data.subsets import build_subset
from tsdf_pipeline.pipelines.mlflow_utils import as_mlflow_metrics

log = logging.getLogger(__name__)


def attribute_table(index: CelebAIndex) -> pd.DataFrame:
    """All images of the index: ``image_id``, ``partition`` (-1 if unknown) and the 40 attributes (±1)."""
    table = pd.DataFrame(index.attrs, columns=list(CELEBA_ATTRS))
    table.insert(0, "partition", index.partition if index.partition is not None else -1)
    table.insert(0, "image_id", index.names)
    return table


def read_annotations(params: dict[str, Any]) -> pd.DataFrame:
    """Validate the CelebA folder ``params.root`` and return its attribute table (all images, 40 attributes)."""
    return attribute_table(read_index(params["root"]))


def _index_from_table(root: str, table: pd.DataFrame) -> CelebAIndex:
    partition = table["partition"].to_numpy(np.int8)
    return CelebAIndex(
        root=check_layout(root),
        names=table["image_id"].tolist(),
        attrs=table[list(CELEBA_ATTRS)].to_numpy(np.int8),
        partition=None if (partition < 0).all() else partition,
    )


SUBSETS = ("optimisation", "evaluation", "training")


def build_subsets(
    table: pd.DataFrame, params: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any], dict[str, dict[str, float]]]:
    """Decode the optimisation, evaluation and training subsets; returns them, a report and MLflow metrics.

    optimisation: the images a perturbation is optimised on; evaluation: held-out images every metric uses;
    training: the images victims (and the simulated attacker) train on.
    """
    index = _index_from_table(params["root"], table)
    report: dict[str, Any] = {"root": str(params["root"]), "images_listed": len(index),
                              "partition_file": index.partition is not None}
    metrics: dict[str, float] = {}
    subsets = []
    for name in SUBSETS:
        spec = params[name]
        start_row = int(spec.get("start") or 0)
        split = split_rows(index, spec["split"])
        if start_row >= split.size:
            raise ValueError(f"data_ingestion.{name}: start {start_row} leaves no image of the {split.size} in split "
                             f"{spec['split']!r} of {params['root']}")
        rows = take_first(split[start_row:], spec.get("count"), f"{name} subset")
        start = time.perf_counter()
        subset, skipped = build_subset(
            index, rows, image_size=params["image_size"], crop_size=params.get("crop_size"),
            label_sets=params["label_sets"], on_bad_image=params.get("on_bad_image", "raise"),
        )
        seconds = time.perf_counter() - start
        n = len(subset["image_ids"])
        report[name] = {"split": spec["split"], "start": start_row,
                        "requested": spec.get("count"), "available": int(rows.size),
                        "decoded": n, "skipped": skipped, "seconds": round(seconds, 3)}
        metrics |= {f"{name}.images": n, f"{name}.skipped": len(skipped),
                    f"{name}.seconds": seconds, f"{name}.images_per_s": n / max(seconds, 1e-9)}
        log.info("%s subset: %d images (%d skipped) in %.1f s", name, n, len(skipped), seconds)
        subsets.append(subset)
    return subsets[0], subsets[1], subsets[2], report, as_mlflow_metrics(metrics)
