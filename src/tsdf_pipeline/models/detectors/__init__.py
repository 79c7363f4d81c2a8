"""Face detectors for TSDF stage 2 behind one ``Detector`` interface.

``build_detector(name)`` makes the architecture (untrained); ``load_detector(name, weights_path)`` also loads
the official weights strictly, freezes the parameters and keeps the network in eval mode. Names:
``s3fd``, ``dsfd``, ``retinaface_mobilenet025`` (alias ``retinaface``) and ``mtcnn`` (weights ship inside
facenet-pytorch; imported only when asked for).
"""

from __future__ import annotations

from pathlib import Path

from tsdf_pipeline.models.detectors.base import Detections, Detector, DetectorOutput, RawDetections
from tsdf_pipeline.models.detectors.dsfd import DSFD
from tsdf_pipeline.models.detectors.retinaface import RetinaFaceMobileNet
from tsdf_pipeline.models.detectors.s3fd import S3FD
from tsdf_pipeline.models.detectors.weights import (
    OFFICIAL_WEIGHTS,
    DetectorWeightsError,
    load_state_dict_exact,
    read_state_dict,
    resolve_weights_path,
)

DETECTOR_NAMES = ("s3fd", "dsfd", "retinaface_mobilenet025", "mtcnn")
_ALIASES = {"retinaface": "retinaface_mobilenet025"}
_ANCHOR_DETECTORS = {"s3fd": S3FD, "dsfd": DSFD, "retinaface_mobilenet025": RetinaFaceMobileNet}


def canonical_name(name: str) -> str:
    """``name`` (case-insensitive, aliases allowed) -> one of ``DETECTOR_NAMES``."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in DETECTOR_NAMES:
        raise ValueError(f"unknown detector {name!r}; expected one of {DETECTOR_NAMES} (or alias 'retinaface')")
    return key


def build_detector(name: str, *, release_compat: bool = False, **options) -> Detector:
    """An untrained detector ``name``.

    ``release_compat`` (S3FD/DSFD: B,G,R input as the TSDF release; RetinaFace: input built without
    gradient as the release) is not accepted for ``mtcnn``; ``options`` go to ``MTCNNDetector``
    (``min_face_size``, ``factor``, ``thresholds``).
    """
    key = canonical_name(name)
    if key == "mtcnn":
        if release_compat:
            raise ValueError("mtcnn has no release_compat mode (the TSDF release does not use MTCNN)")
        from tsdf_pipeline.models.detectors.mtcnn import MTCNNDetector

        return MTCNNDetector(**options)
    if options:
        raise TypeError(f"unexpected options for {key}: {sorted(options)}")
    return _ANCHOR_DETECTORS[key](release_compat=release_compat)


def load_detector(name: str, weights_path: str | Path | None = None, *, release_compat: bool = False,
                  device: str = "cpu", **options) -> Detector:
    """Detector ``name`` with its official weights, frozen (``requires_grad=False``), in eval mode, on ``device``.

    ``weights_path``: the weights file or a directory holding it under its official name (``sfd_face.pth``,
    ``dsfd_vgg_0.880.pth``, ``mobilenet0.25_Final.pth``); required except for ``mtcnn`` (default: the
    weights inside facenet-pytorch; a directory with ``pnet.pt``/``rnet.pt``/``onet.pt`` otherwise).
    Raw state dicts, ``{'weight'|'state_dict'|'model': sd}`` wrappers and ``module.`` prefixes are accepted;
    keys and shapes must match exactly (only ``num_batches_tracked`` may be missing).
    """
    key = canonical_name(name)
    if key == "mtcnn":
        detector = build_detector(key, release_compat=release_compat, **options)
        if weights_path is None:
            detector.load_packaged_weights()
        else:
            detector.load_packaged_weights(weights_path)
    else:
        if weights_path is None:
            source = OFFICIAL_WEIGHTS[key]
            raise FileNotFoundError(
                f"{key} needs weights_path: the official file {source.file_name!r} from {source.upstream}"
            )
        path = resolve_weights_path(key, weights_path)
        state = read_state_dict(path)
        detector = build_detector(key, release_compat=release_compat, **options)
        load_state_dict_exact(detector, state, source=str(path))
    detector.requires_grad_(False)
    return detector.to(device).eval()


__all__ = [
    "DETECTOR_NAMES", "DSFD", "OFFICIAL_WEIGHTS", "S3FD", "Detections", "Detector", "DetectorOutput",
    "DetectorWeightsError", "RawDetections", "RetinaFaceMobileNet", "build_detector", "canonical_name",
    "load_detector",
]
