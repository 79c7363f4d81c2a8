"""Versioned Kedro dataset for the attacker's collected photos: one folder of image files per branch.

The files are what a user publishes and an attacker downloads (8-bit PNG, or JPEG at a given quality), written with
``data.attacker.save_photos`` and read back with ``load_photos``, so the attacker's data preparation sees exactly
what the files hold (JPEG's loss included). Layout of one version::

    <filepath>/<version>/<name>/manifest.json       branches: files, image ids, protected flags, format
    <filepath>/<version>/<name>/<branch>/<id>.png   [N] files per branch

A version is written into a temporary folder beside it and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
import torch
from kedro.io.core import AbstractVersionedDataset, DatasetError, Version, get_protocol_and_path

from tsdf_pipeline.data.attacker import load_photos, save_photos

MANIFEST = "manifest.json"
_SAVE_KEYS = ("images", "ids", "protected", "format", "jpeg_quality")
_BRANCH_KEYS = ("files", "ids", "protected", "format", "jpeg_quality")  # per branch in the manifest


class PhotoFolderDataset(AbstractVersionedDataset[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]):
    """``tsdf_pipeline.datasets.PhotoFolderDataset``: per branch, photo files and their ids (local folders only).

    Saves ``{branch: {"images": [N,3,H,W] in [-1,1], "ids": [N] image ids, "protected": [N] bool,
    "format": "png" | "jpeg", "jpeg_quality": int | None}}``; loads the same with the images decoded from the
    files (on the 8-bit grid of [-1,1]) and their ``"paths"``.

    Example catalog entry::

        attacker_photos:
          type: tsdf_pipeline.datasets.PhotoFolderDataset
          filepath: data/03_primary/attacker_photos
          versioned: true
    """

    def __init__(self, *, filepath: str, version: Version | None = None, metadata: dict | None = None) -> None:
        protocol, path = get_protocol_and_path(filepath, version)
        if protocol != "file":
            raise DatasetError(f"PhotoFolderDataset {filepath}: local folders only, got protocol {protocol!r}")
        self.metadata = metadata
        fs = fsspec.filesystem(protocol)
        super().__init__(filepath=PurePosixPath(path), version=version, exists_function=fs.exists,
                         glob_function=fs.glob)

    def _save(self, data: dict[str, dict[str, Any]]) -> None:
        folder = Path(str(self._get_save_path()))
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        try:
            manifest = {}
            for branch, entry in data.items():
                missing = [k for k in _SAVE_KEYS if k not in entry]
                if missing or not len(entry["ids"]) == len(entry["protected"]) == entry["images"].shape[0]:
                    raise DatasetError(f"{folder}: branch {branch!r} needs {list(_SAVE_KEYS)} with one id and one "
                                       f"protected flag per image (missing {missing})")
                paths = save_photos(entry["images"], entry["ids"], tmp / branch, fmt=entry["format"],
                                    jpeg_quality=entry["jpeg_quality"])
                manifest[branch] = {"files": [p.name for p in paths], "ids": [str(i) for i in entry["ids"]],
                                    "protected": [bool(b) for b in entry["protected"].tolist()],
                                    "format": entry["format"], "jpeg_quality": entry["jpeg_quality"]}
            (tmp / MANIFEST).write_text(json.dumps({"branches": manifest}, indent=1))
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            with contextlib.suppress(OSError):  # the version's folder, if nothing else is in it
                folder.parent.rmdir()
            raise

    def _load(self) -> dict[str, dict[str, Any]]:
        folder = Path(str(self._get_load_path()))
        manifest_path = folder / MANIFEST
        try:
            branches = json.loads(manifest_path.read_text())["branches"]
        except FileNotFoundError as exc:
            raise DatasetError(f"{manifest_path}: not found (a photo folder holds a {MANIFEST})") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{manifest_path}: expected JSON with a 'branches' mapping ({exc})") from exc
        out = {}
        for branch, entry in branches.items():
            missing = [k for k in _BRANCH_KEYS if k not in entry]
            counts = {len(entry[k]) for k in ("files", "ids", "protected") if k in entry}
            if missing or len(counts) != 1:
                raise DatasetError(f"{manifest_path}: branch {branch!r} needs {list(_BRANCH_KEYS)} with as many "
                                   f"files as ids and protected flags (missing {missing}, lengths {sorted(counts)})")
            paths = [folder / branch / name for name in entry["files"]]
            out[branch] = {"images": load_photos(paths), "ids": list(entry["ids"]),
                           "protected": torch.tensor(entry["protected"], dtype=torch.bool),
                           "format": entry["format"], "jpeg_quality": entry["jpeg_quality"],
                           "paths": [str(p) for p in paths]}
        return out

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "version": self._version}

    def _exists(self) -> bool:
        try:
            return (Path(str(self._get_load_path())) / MANIFEST).is_file()
        except DatasetError:
            return False
