"""Kedro dataset for model checkpoint files in their official formats.

Loading does not unpickle anything: it returns a reference ``{"path", "sha256", "source", "exists"}`` and
the model code reads the file with ``torch.load(weights_only=True)``, so its errors name the file. A missing
file is reported as ``exists: False`` (``sha256`` None): the node that needs it stops the run with the expected
path and where the file comes from (the entry's ``source``), while victims left out of the ensemble need no
file. Saving writes a
checkpoint object (official wrapper dict) atomically, so training stages can version their outputs.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version

from tsdf_pipeline.models.checkpoints import atomic_save
from tsdf_pipeline.models.ensemble import file_sha256


class CheckpointDataset(AbstractVersionedDataset[Any, dict[str, Any]]):
    """``tsdf_pipeline.datasets.CheckpointDataset``.

    Example::

        stargan_checkpoint:
          type: tsdf_pipeline.datasets.CheckpointDataset
          filepath: data/06_models/official/stargan/200000-G.ckpt
          source: "yunjey/stargan: bash download.sh pretrained-celeba-256x256 -> 200000-G.ckpt"
    """

    def __init__(self, *, filepath: str, source: str = "", version: Version | None = None,
                 metadata: dict | None = None) -> None:
        self._source = source
        self.metadata = metadata
        super().__init__(filepath=PurePosixPath(filepath), version=version, exists_function=os.path.exists)

    def _load(self) -> dict[str, Any]:
        try:
            path = Path(str(self._get_load_path()))
        except DatasetError:  # versioned entry with no version yet
            path = Path(str(self._filepath))
        exists = path.is_file()
        return {"path": str(path), "sha256": file_sha256(path) if exists else None, "source": self._source,
                "exists": exists}

    def _save(self, data: Any) -> None:
        atomic_save(data, str(self._get_save_path()))

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "source": self._source, "version": self._version}
