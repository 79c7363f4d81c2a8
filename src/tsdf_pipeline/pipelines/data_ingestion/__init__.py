"""CelebA ingestion: annotations → attribute table → optimisation and evaluation subsets."""

from tsdf_pipeline.pipelines.data_ingestion.pipeline import create_pipeline

__all__ = ["create_pipeline"]
