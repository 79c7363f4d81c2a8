"""Versioned Kedro dataset for torch objects: tensors and nested dicts/lists of tensors, numbers and strings.

Saved with ``torch.save`` (atomically: temp file then rename) and loaded with ``torch.load(weights_only=True)``,
so a file from elsewhere can never execute code. Modules are stored as state dicts, not pickled objects.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import fsspec
import torch
from kedro.io.core import (
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_filepath_str,
    get_protocol_and_path,
)

from tsdf_pipeline.models.checkpoints import atomic_save


class TorchDataset(AbstractVersionedDataset[Any, Any]):
    """``tsdf_pipeline.datasets.TorchDataset``: one ``.pt`` file per version.

    Example catalog entry::

        optimisation_set:
          type: tsdf_pipeline.datasets.TorchDataset
          filepath: data/05_model_input/optimisation_set.pt
          versioned: true
    """

    def __init__(self, *, filepath: str, version: Version | None = None, metadata: dict | None = None) -> None:
        protocol, path = get_protocol_and_path(filepath, version)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol)
        self.metadata = metadata
        super().__init__(filepath=PurePosixPath(path), version=version, exists_function=self._fs.exists,
                         glob_function=self._fs.glob)

    def _load(self) -> Any:
        path = get_filepath_str(self._get_load_path(), self._protocol)
        try:
            with self._fs.open(path, "rb") as f:
                return torch.load(f, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for corrupt or unsafe files
            raise DatasetError(f"{path}: cannot be read as a weights-only torch file: {exc}") from exc

    def _save(self, data: Any) -> None:
        path = get_filepath_str(self._get_save_path(), self._protocol)
        if self._protocol != "file":
            with self._fs.open(path, "wb") as f:
                torch.save(data, f)
            return
        atomic_save(data, path)
        self._invalidate_cache()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "protocol": self._protocol, "version": self._version}

    def _exists(self) -> bool:
        try:
            path = get_filepath_str(self._get_load_path(), self._protocol)
        except DatasetError:
            return False
        return self._fs.exists(path)

    def _invalidate_cache(self) -> None:
        self._fs.invalidate_cache(get_filepath_str(self._filepath, self._protocol))
