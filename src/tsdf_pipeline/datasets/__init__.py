"""Kedro datasets of this project (Kedro layer)."""

from tsdf_pipeline.datasets.checkpoint_dataset import CheckpointDataset
from tsdf_pipeline.datasets.photo_folder_dataset import PhotoFolderDataset
from tsdf_pipeline.datasets.torch_dataset import TorchDataset

__all__ = ["CheckpointDataset", "PhotoFolderDataset", "TorchDataset"]
