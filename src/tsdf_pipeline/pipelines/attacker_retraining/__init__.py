"""The simulated attacker: protected photos → detection and cropping → fine-tuning, one branch per protection."""

from tsdf_pipeline.pipelines.attacker_retraining.pipeline import create_pipeline

__all__ = ["create_pipeline"]
