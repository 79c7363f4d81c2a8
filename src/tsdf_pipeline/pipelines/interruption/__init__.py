"""Stage 1 (interruption) and the baselines."""

from tsdf_pipeline.pipelines.interruption.pipeline import create_pipeline

__all__ = ["create_pipeline"]
