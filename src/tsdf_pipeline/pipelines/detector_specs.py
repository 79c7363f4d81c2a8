"""Detectors from parameters (Kedro layer helper shared by poisoning, evaluation and the attacker)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tsdf_pipeline.models.detectors import load_detector
from tsdf_pipeline.models.detectors.hog import HOGDetector

BLACK_BOX = {"dlib_hog": HOGDetector}


def load_detectors(names: Sequence[str], registry: Mapping[str, Mapping[str, Any] | None], *,
                   release_compat: bool = False, device: str = "cpu") -> dict[str, Any]:
    """``{name: detector}`` for ``names``, built from ``registry`` (``params:detectors``:
    ``{name: {weights: path|null, options: {...}}}``). Detector names: ``mtcnn``, ``s3fd``, ``dsfd``,
    ``retinaface``; black box: ``dlib_hog``. ``release_compat`` applies to S3FD/DSFD/RetinaFace.
    """
    out: dict[str, Any] = {}
    for name in names:
        if name not in registry:
            raise KeyError(f"detector {name!r} is not in params 'detectors' (known: {sorted(registry)})")
        spec = dict(registry[name] or {})
        options = dict(spec.get("options") or {})
        if name in BLACK_BOX:
            out[name] = BLACK_BOX[name](**options)
        else:
            out[name] = load_detector(name, spec.get("weights"), device=device, **options,
                                      release_compat=release_compat and name != "mtcnn")
    return out
