"""Reading the user's metric backbone weights (LPIPS, FID): safe ``torch.load``, exact keys and shapes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from tsdf_pipeline.models.checkpoints import CheckpointError, read_checkpoint, unwrap_state_dict

_SHOWN = 8  # keys listed per category in an error


def load_tensors(path: str | Path, expected: Mapping[str, torch.Size], *, ignore_prefixes: Sequence[str] = (),
                 ignore_suffixes: Sequence[str] = ()) -> dict[str, Tensor]:
    """The state dict in ``path`` (read with ``weights_only=True``), required to hold exactly the ``expected``
    keys with those shapes; keys starting with one of ``ignore_prefixes`` or ending with one of
    ``ignore_suffixes`` may be present and are dropped.

    Raises ``CheckpointNotFoundError`` / ``CheckpointError`` naming ``path`` and the missing, unexpected or
    mis-shaped keys.
    """
    state = unwrap_state_dict(read_checkpoint(path), path=path)
    kept = {k: v for k, v in state.items()
            if not k.startswith(tuple(ignore_prefixes)) and not k.endswith(tuple(ignore_suffixes))}
    missing = sorted(set(expected) - set(kept))
    unexpected = sorted(set(kept) - set(expected))
    mismatched = sorted(f"{k}: file {list(kept[k].shape)}, expected {list(expected[k])}"
                        for k in set(kept) & set(expected) if kept[k].shape != expected[k])
    problems = [f"{name} {items[:_SHOWN]}{' ...' if len(items) > _SHOWN else ''}"
                for name, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                    ("shape mismatches", mismatched)) if items]
    if problems:
        raise CheckpointError(f"weights file {path}: " + "; ".join(problems))
    return {k: v.float() for k, v in kept.items()}
