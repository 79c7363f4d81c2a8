"""Reading, checking and writing generator checkpoints in the official layouts.

Files are read with ``torch.load(path, map_location="cpu", weights_only=True)`` only; a file that needs
full unpickling is refused, never unpickled.  Loading is strict except for two legacy differences of the
official checkpoints: a DataParallel ``module.`` prefix and absent ``*.num_batches_tracked`` buffers.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

_NBT = "num_batches_tracked"
_PREFIX = "module."
_LIST_LIMIT = 12  # keys shown per category in an error message

# Official checkpoint wrapper of each generator: key holding the state dict (None = raw state dict).
GENERATOR_WRAPPER_KEYS: dict[str, str | None] = {
    "stargan": None, "attentiongan": None, "attgan": "G", "hisd": "gen_test",
}
# Top-level keys of the official wrappers (used to explain a wrapper mismatch).
_KNOWN_WRAPPER_KEYS = ("G", "D", "gen", "gen_test", "state_dict", "model", "optim_G", "optim_D")


class CheckpointError(ValueError):
    """A checkpoint file cannot be read, or its contents do not fit the model."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint path does not exist."""


def read_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with clear errors naming ``path``.

    Raises ``CheckpointNotFoundError`` for a missing file and ``CheckpointError`` for a directory, a truncated
    or non-checkpoint file, or a file that only full (unsafe) unpickling could read.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        detail = message.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
        reason = detail[0].strip() if detail else message
        if "Weights only load failed" in message and not reason.startswith("Unsupported operand"):
            raise CheckpointError(
                f"refusing checkpoint {path}: it holds objects that torch.load(weights_only=True) does not allow "
                f"({reason}) and checkpoints are never unpickled with weights_only=False, because that can run "
                "arbitrary code; re-save it holding only tensors/state dicts, e.g. torch.save(model.state_dict())"
            ) from exc
        raise CheckpointError(f"cannot read checkpoint {path} (not a torch.save file: unreadable pickle data, "
                              f"{reason})") from exc
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path} (truncated, corrupted or not a torch.save file; "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no details'})"
        ) from exc


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def unwrap_state_dict(obj: Any, wrapper_key: str | None = None, path: str | os.PathLike = "<checkpoint>"
                      ) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint ``obj``.

    ``wrapper_key=None``: ``obj`` itself must be a state dict (``{str: Tensor}``); otherwise
    ``obj[wrapper_key]`` must be one (other top-level entries, e.g. optimiser states, are ignored).
    """
    if wrapper_key is not None:
        if not isinstance(obj, Mapping) or wrapper_key not in obj:
            top = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
            raise CheckpointError(f"checkpoint {path}: expected a dict with key {wrapper_key!r} holding the state "
                                  f"dict; found top-level {top}")
        inner = obj[wrapper_key]
        if not _is_state_dict(inner):
            raise CheckpointError(f"checkpoint {path}: entry {wrapper_key!r} is not a state dict "
                                  f"({{str: Tensor}}); got {type(inner).__name__}")
        return dict(inner)
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        wrappers = [k for k in _KNOWN_WRAPPER_KEYS if k in obj]
        hint = f"; it looks like a wrapper with {wrappers}: pass wrapper_key" if wrappers else ""
        shown = sorted(map(str, obj))[:_LIST_LIMIT]
        raise CheckpointError(f"checkpoint {path}: expected a raw state dict ({{str: Tensor}}); found top-level "
                              f"keys {shown}{hint}")
    raise CheckpointError(f"checkpoint {path}: expected a state dict, got {type(obj).__name__}")


def _strip_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state_dict and all(k.startswith(_PREFIX) for k in state_dict):
        return {k[len(_PREFIX):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _layer_indices(keys: set[str], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in keys if (m := re.fullmatch(pattern, k))})


def implied_config(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Human-readable config facts read off the shapes of an official-layout state dict (may be empty)."""
    sd = {k: list(v.shape) for k, v in _strip_prefix(state_dict).items()}
    keys = set(sd)
    facts: list[str] = []
    if "main.0.weight" in sd and len(sd["main.0.weight"]) == 4 and any(".main.0.weight" in k for k in keys):
        w = sd["main.0.weight"]
        facts.append(f"main.0.weight {w} -> conv_dim={w[0]}, c_dim={w[1] - 3}")
        blocks = _layer_indices(keys, r"main\.(\d+)\.main\.0\.weight")
        facts.append(f"{len(blocks)} residual blocks (main.{{{','.join(map(str, blocks))}}}) -> "
                     f"repeat_num={len(blocks)}")
        convs = _layer_indices(keys, r"main\.(\d+)\.weight")
        head = f"main.{convs[-1]}.weight"
        if len(sd[head]) == 4:
            kind = {3: "StarGAN", 4: "AttentionGAN"}.get(sd[head][0], "unknown")
            facts.append(f"{head} {sd[head]} -> {sd[head][0]} output channels ({kind} generator)")
    elif "conv1.weight" in sd and "conv2.weight" in sd and "main.0.weight" in sd:
        convs = _layer_indices(keys, r"main\.(\d+)\.weight")
        c2 = sd["conv2.weight"]
        facts.append(f"StarGAN discriminator: conv_dim={sd['main.0.weight'][0]}, repeat_num={len(convs)}, "
                     f"conv2.weight {c2} -> c_dim={c2[0]}, image_size={c2[2] * 2 ** len(convs)}")
    elif "enc_layers.0.layers.0.weight" in sd:
        enc = _layer_indices(keys, r"enc_layers\.(\d+)\.layers\.0\.weight")
        dec = _layer_indices(keys, r"dec_layers\.(\d+)\.layers\.0\.weight")
        enc_ch = [sd[f"enc_layers.{i}.layers.0.weight"][0] for i in enc]
        facts.append(f"enc_layers.0.layers.0.weight {sd['enc_layers.0.layers.0.weight']} -> enc_dim={enc_ch[0]}; "
                     f"enc_layers={len(enc)}, dec_layers={len(dec)}")
        if dec:
            d0 = sd[f"dec_layers.{dec[0]}.layers.0.weight"]
            facts.append(f"dec_layers.0.layers.0.weight {d0} -> n_attrs={d0[0] - enc_ch[-1]}")
    elif "fc_adv.0.layers.0.weight" in sd:
        convs = _layer_indices(keys, r"conv\.(\d+)\.layers\.0\.weight")
        fc = sd["fc_adv.0.layers.0.weight"]
        last = sd[f"conv.{convs[-1]}.layers.0.weight"][0] if convs else 1
        side = round((fc[1] / last) ** 0.5)
        facts.append(f"AttGAN discriminator: n_layers={len(convs)}, fc_dim={fc[0]}, "
                     f"img_size={side * 2 ** len(convs)}"
                     + (f", n_attrs={sd['fc_cls.1.layers.0.weight'][0]}" if "fc_cls.1.layers.0.weight" in sd else ""))
    return facts


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT]) + (f", ... (+{len(items) - _LIST_LIMIT} more)"
                                               if len(items) > _LIST_LIMIT else "")
    return f"  {title} ({len(items)}): {shown}"


def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str,
                           arch: str) -> None:
    """Load ``state_dict`` into ``module`` in place: strict except for a ``module.`` prefix and missing
    ``*.num_batches_tracked`` buffers (filled with the module's own values).

    Raises ``CheckpointError`` listing missing, unexpected and mis-shaped keys plus the config the
    checkpoint implies (``implied_config``), naming ``source`` and ``arch``.
    """
    sd = _strip_prefix(state_dict)
    own = module.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith(_NBT)]
    unexpected = [k for k in sd if k not in own]
    misshaped = [f"{k} {list(sd[k].shape)} (model {list(own[k].shape)})" for k in own
                 if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or misshaped:
        lines = [f"checkpoint {source} does not fit the {arch} model ({type(module).__name__}):"]
        if missing:
            lines.append(_listing("missing keys", missing))
        if unexpected:
            lines.append(_listing("unexpected keys", unexpected))
        if misshaped:
            lines.append(_listing("mis-shaped keys", misshaped))
        facts = implied_config(sd)
        if facts:
            lines.append("  the checkpoint implies: " + "; ".join(facts))
        raise CheckpointError("\n".join(lines))
    full = OrderedDict((k, sd[k] if k in sd else own[k]) for k in own)
    module.load_state_dict(full, strict=True)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to a temporary file next to ``path`` (fsynced), then rename it over ``path``:
    a crash never leaves a half-written file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_generator(arch: str, module: nn.Module, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``module``'s weights to ``path`` in the official wrapper of ``arch``, atomically (tmp + rename).

    stargan / attentiongan: the raw state dict (``extra`` not allowed); attgan: ``{'G': sd, **extra}``;
    hisd: ``{'gen': extra['gen'] or sd, 'gen_test': sd, **other extra}`` (``sd`` = the EMA / test weights).
    Returns the path written.
    """
    if arch not in GENERATOR_WRAPPER_KEYS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {tuple(GENERATOR_WRAPPER_KEYS)}")
    sd = OrderedDict((k, v.detach().cpu().clone()) for k, v in module.state_dict().items())
    extra = dict(extra or {})
    if arch in ("stargan", "attentiongan"):
        if extra:
            raise ValueError(f"{arch} checkpoints are a raw state dict; extra entries {sorted(extra)} cannot be added")
        obj: Any = sd
    elif arch == "attgan":
        obj = {"G": sd, **extra}
    else:
        obj = {"gen": extra.pop("gen", sd), "gen_test": sd, **extra}
    path = Path(path)
    atomic_save(obj, path)
    return path
