"""Evaluation: interruption, imperceptibility and robustness metrics, tables, grids and charts."""

from tsdf_pipeline.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
