"""Victim training: the four face-editing GANs trained on the ingestion stage's training subset."""

from tsdf_pipeline.pipelines.victim_training.pipeline import create_pipeline

__all__ = ["create_pipeline"]
