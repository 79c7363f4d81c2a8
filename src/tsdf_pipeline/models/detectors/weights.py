"""Official detector weight files: where they come from, reading them safely, strict loading."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class WeightsSource:
    """The official file name of a detector's weights and where a user can obtain it."""

    file_name: str
    upstream: str


OFFICIAL_WEIGHTS: dict[str, WeightsSource] = {
    "s3fd": WeightsSource("sfd_face.pth", "yxlijun/S3FD.pytorch (README 'face model' download: sfd_face.pth)"),
    "dsfd": WeightsSource(
        "dsfd_vgg_0.880.pth", "yxlijun/DSFD.pytorch (README 'DSFD' VGG model download: dsfd_vgg_0.880.pth)"
    ),
    "retinaface_mobilenet025": WeightsSource(
        "mobilenet0.25_Final.pth",
        "biubug6/Pytorch_Retinaface (README 'pretrained model' download: weights/mobilenet0.25_Final.pth)",
    ),
}

# Wrapper keys under which training scripts store the state dict (yxlijun '*_checkpoint.pth' use 'weight').
_WRAPPER_KEYS = ("weight", "state_dict", "model")


class DetectorWeightsError(RuntimeError):
    """A detector weights file is missing, unreadable or does not match the architecture."""


def resolve_weights_path(name: str, path: str | Path) -> Path:
    """``path`` to the weights file of detector ``name``; a directory means ``<dir>/<official file name>``.

    Raises ``FileNotFoundError`` naming the official file and its upstream source when nothing is there.
    """
    source = OFFICIAL_WEIGHTS[name]
    resolved = Path(path)
    if resolved.is_dir():
        resolved = resolved / source.file_name
    if not resolved.is_file():
        raise FileNotFoundError(
            f"{name} weights not found at {resolved}: expected the official file {source.file_name!r} "
            f"from {source.upstream}; no weights can be downloaded here, place the file there yourself"
        )
    return resolved


def read_state_dict(path: Path) -> OrderedDict[str, Tensor]:
    """Tensors of a checkpoint: a raw state dict or one wrapped under 'weight' / 'state_dict' / 'model'.

    Reads with ``weights_only=True``; strips a DataParallel ``module.`` prefix.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or non-tensor pickles
        raise DetectorWeightsError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(obj, Mapping):
        raise DetectorWeightsError(f"checkpoint {path} holds {type(obj).__name__}, expected a state dict")
    for key in _WRAPPER_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    state = OrderedDict()
    for key, value in obj.items():
        if not isinstance(value, Tensor):
            raise DetectorWeightsError(
                f"checkpoint {path}: entry {key!r} is {type(value).__name__}, expected a tensor"
            )
        state[key.removeprefix("module.")] = value
    return state


def load_state_dict_exact(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load ``state`` into ``module`` requiring exactly its keys and shapes.

    Only ``*.num_batches_tracked`` may be absent (checkpoints saved before PyTorch 1.0 lack it). Raises
    ``DetectorWeightsError`` listing unexpected / missing keys and shape mismatches.
    """
    own = module.state_dict()
    unexpected = sorted(set(state) - set(own))
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
    mismatched = sorted(
        f"{k}: checkpoint {list(state[k].shape)} vs model {list(own[k].shape)}"
        for k in set(state) & set(own) if state[k].shape != own[k].shape
    )
    if unexpected or missing or mismatched:
        parts = []
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if missing:
            parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if mismatched:
            parts.append(f"shape mismatches {mismatched[:8]}")
        raise DetectorWeightsError(f"{source} does not match {type(module).__name__}: " + "; ".join(parts))
    module.load_state_dict(state, strict=False)
