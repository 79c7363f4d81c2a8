"""Stage 2 (poisoning): hide a face-detector attack in the weak pixels of the interruption perturbation."""

from tsdf_pipeline.pipelines.poisoning.pipeline import create_pipeline

__all__ = ["create_pipeline"]
