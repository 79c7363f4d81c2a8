"""Helpers for the parity fixtures in ``tests/fixtures/parity`` (official-code outputs on synthetic weights).

A fixture ``<name>.pt`` holds ``meta`` (strings: seed, call, ``synth_digest`` ...), ``inputs`` (tensors),
``outputs`` and ``reduced`` (records).  A record describes one tensor ``t`` compactly: ``shape``, ``stats``
(float64 ``[sum, sum|t|, sum t^2, max|t|]``) and one or more of ``s4`` (``t[..., ::4, ::4]``), ``crop``
(the full-resolution centre patch ``t[..., H//2-8:H//2+8, W//2-8:W//2+8]``) and ``full`` (the whole tensor).
"""

from __future__ import annotations

import importlib.util
import sys
from collections import OrderedDict
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"
PARITY_DIR = FIXTURES_DIR / "parity"
MANIFEST_DIR = FIXTURES_DIR / "manifests"


@cache
def synth_module() -> ModuleType:
    """The fixture weight generator ``tests/fixtures/parity/synth.py``, imported by path."""
    path = PARITY_DIR / "synth.py"
    spec = importlib.util.spec_from_file_location("tsdf_parity_synth", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@cache
def _load_fixture_cached(name: str) -> dict:
    return torch.load(PARITY_DIR / f"{name}.pt", map_location="cpu", weights_only=True)


def load_fixture(name: str) -> dict:
    """The parity fixture ``tests/fixtures/parity/<name>.pt`` (cached; treat it as read-only)."""
    return _load_fixture_cached(name)


def load_manifest(name: str) -> dict:
    """The manifest ``tests/fixtures/manifests/<name>.json`` (key order preserved)."""
    return synth_module().load_manifest(MANIFEST_DIR / f"{name}.json")


def synth_weights(name: str, seed: int | None = None) -> OrderedDict[str, torch.Tensor]:
    """Synthetic state dict of model ``name`` in the manifest's key order.

    ``seed=None`` uses the fixture's ``meta['seed']`` and asserts that the weights are bit-identical to the
    ones the fixture was made with (``meta['synth_digest']``); nothing can match otherwise.
    """
    synth = synth_module()
    fixture_seed = seed is None
    if fixture_seed:
        seed = int(load_fixture(name)["meta"]["seed"])
    sd = synth.synth_state_dict(load_manifest(name)["state_dict"], int(seed), model=name)
    if fixture_seed:
        expected = load_fixture(name)["meta"]["synth_digest"]
        got = synth.state_dict_digest(sd)
        assert got == expected, (
            f"synthetic weights for {name!r} (seed {seed}) have digest {got}, fixture expects {expected}: "
            "the torch RNG differs from the one that made the fixture"
        )
    return sd


def fixture_record(fixture: Mapping[str, Any], key: str) -> dict:
    """The record ``key`` from ``fixture['outputs']`` or, failing that, ``fixture['reduced']``."""
    for section in ("outputs", "reduced"):
        if key in fixture.get(section, {}):
            return fixture[section][key]
    raise KeyError(f"fixture has no record {key!r} in 'outputs' or 'reduced'")


def select_record(record: Mapping[str, Any], index: int | slice | list[int]) -> dict:
    """The record of ``t[index]`` (indexing the leading dim), e.g. one target of a ``[T,N,...]`` output.

    ``stats`` describe the whole tensor and are dropped; ``s4`` / ``crop`` / ``full`` are indexed.
    """
    shape = [int(s) for s in record["shape"]]
    picked = torch.empty(shape[0], 0)[index]
    sub = {"shape": [*picked.shape[:-1], *shape[1:]]}
    for form in ("s4", "crop", "full"):
        if form in record:
            sub[form] = record[form][index]
    return sub


def _centre_crop(t: torch.Tensor) -> torch.Tensor:
    h, w = t.shape[-2], t.shape[-1]
    return t[..., h // 2 - 8: h // 2 + 8, w // 2 - 8: w // 2 + 8]


def _compare(label: str, got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float) -> str | None:
    got = got.detach().to("cpu", torch.float64)
    want = want.detach().to("cpu", torch.float64)
    if tuple(got.shape) != tuple(want.shape):
        return f"{label}: shape {tuple(got.shape)} != recorded {tuple(want.shape)}"
    diff = (got - want).abs()
    bound = atol + rtol * want.abs()
    if bool((diff > bound).any()):
        return f"{label}: max |diff| {float(diff.max()):.3g} exceeds atol={atol:g} rtol={rtol:g}"
    return None


def assert_matches(tensor: torch.Tensor, record: Mapping[str, Any], atol: float = 1e-4, rtol: float = 0.0,
                   name: str = "tensor") -> None:
    """Assert that ``tensor`` reproduces a fixture ``record`` (every form the record holds).

    Checks the shape, then ``full``, ``s4`` and ``crop`` elementwise and the statistics as
    ``[mean, mean|t|, mean t^2]`` plus ``max|t|``, all with ``|got - want| <= atol + rtol*|want|``.
    """
    t = tensor.detach().to("cpu", torch.float64)
    shape = [int(s) for s in record["shape"]]
    assert list(t.shape) == shape, f"{name}: shape {list(t.shape)} != recorded {shape}"
    problems = []
    if "full" in record:
        problems.append(_compare(f"{name}[full]", t, record["full"], atol, rtol))
    if "s4" in record:
        problems.append(_compare(f"{name}[s4]", t[..., ::4, ::4], record["s4"], atol, rtol))
    if "crop" in record:
        problems.append(_compare(f"{name}[crop]", _centre_crop(t), record["crop"], atol, rtol))
    if "stats" in record:
        stats = record["stats"].to(torch.float64)
        numel = max(t.numel(), 1)
        got = torch.stack([t.sum() / numel, t.abs().sum() / numel, (t * t).sum() / numel, t.abs().max()])
        want = torch.cat([stats[:3] / numel, stats[3:4]])
        problems.append(_compare(f"{name}[stats: mean, mean|t|, mean t^2, max|t|]", got, want, atol, rtol))
    problems = [p for p in problems if p is not None]
    assert not problems, "; ".join(problems)
