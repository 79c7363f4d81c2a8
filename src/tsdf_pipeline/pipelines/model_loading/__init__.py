"""Model loading: official-format checkpoints → validated victim ensemble and model cards."""

from tsdf_pipeline.pipelines.model_loading.pipeline import create_pipeline

__all__ = ["create_pipeline"]
