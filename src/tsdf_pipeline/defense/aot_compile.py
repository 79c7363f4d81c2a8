"""Compile a pure tensor function ahead of time with AOTInductor and keep the package for later runs.

``torch.compile`` re-traces its graphs with Dynamo in every new process (≈ 6 s for stage 1's 8 victim frames on
an H100, even with a warm on-disk cache). Here the whole function, autograd included, is traced once into one
ATen graph (``make_fx``), exported and compiled into a ``.pt2`` package that a later run loads in milliseconds
without tracing anything.

Contract of ``fn`` (as for :class:`~tsdf_pipeline.defense.cuda_graphs.GraphedFunction`): arguments and results
are (nested tuples / lists / dicts of) tensors; it is pure, without host syncs, data-dependent shapes or random
draws. Everything else it reads (the victims' weights, the targets' names, the config) is baked into the package,
so ``key`` must name all of it; the package file name is a digest of ``key``, the input signature, torch's
version and the device.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils._pytree import tree_flatten, tree_unflatten, treespec_dumps, treespec_loads

log = logging.getLogger(__name__)


class _Flat(nn.Module):
    """An exportable module around a traced graph over flat tensor arguments."""

    def __init__(self, traced: nn.Module) -> None:
        super().__init__()
        self.traced = traced  # not "graph": the exported module's own fx graph goes by that name

    def forward(self, *leaves: Tensor) -> Any:
        return self.traced(*leaves)


class AotCompiledFunction:
    """``AotCompiledFunction(fn, cache_dir, key)(*args)`` equals ``fn(*args)`` up to floating-point rounding.

    The first call for an input signature loads ``cache_dir/<digest>.pt2`` if an earlier run wrote it, otherwise
    traces, compiles and writes it (atomically, with its output structure beside it in ``<digest>.json``).
    """

    def __init__(self, fn: Callable[..., Any], cache_dir: str | os.PathLike, key: Any) -> None:
        self.fn = fn
        self.cache_dir = Path(cache_dir)
        self.key = json.dumps(key, sort_keys=True, default=str)
        self.compiled: dict[tuple, tuple[Callable[..., Any], Any]] = {}

    def package_path(self, leaves: list[Tensor], spec: Any) -> Path:
        """Where the package for these inputs lives (``cache_dir/<digest>.pt2``)."""
        device = leaves[0].device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        text = json.dumps([self.key, treespec_dumps(spec), _signature(leaves), torch.__version__, name], default=str)
        return self.cache_dir / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.pt2"

    def __call__(self, *args: Any) -> Any:
        leaves, spec = tree_flatten(args)
        memo = (str(spec), _signature(leaves), str(leaves[0].device))
        entry = self.compiled.get(memo)
        if entry is None:
            path = self.package_path(leaves, spec)
            entry = self.compiled[memo] = self._load(path) if _complete(path) else self._build(path, leaves, spec)
        runner, out_spec = entry
        return tree_unflatten(list(runner(*leaves)), out_spec)

    def _build(self, path: Path, leaves: list[Tensor], spec: Any) -> tuple[Callable[..., Any], Any]:
        out_spec: list[Any] = []

        def flat_fn(*flat: Tensor) -> tuple[Tensor, ...]:
            out_leaves, tree = tree_flatten(self.fn(*tree_unflatten(list(flat), spec)))
            out_spec[:] = [tree]
            return tuple(out_leaves)

        start = time.perf_counter()
        traced = make_fx(flat_fn, tracing_mode="real")(*leaves)  # runs fn once, recording forward and backward ops
        exported = torch.export.export(_Flat(traced), tuple(leaves))
        traced_at = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".pt2", dir=path.parent)
        os.close(fd)
        try:
            torch._inductor.aoti_compile_and_package(exported, package_path=tmp)
            _atomic_write(path.with_suffix(".json"), treespec_dumps(out_spec[0]))
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        log.info("AOT package %s: traced and exported %d nodes in %.1f s, compiled in %.1f s", path.name,
                 len(traced.graph.nodes), traced_at - start, time.perf_counter() - traced_at)
        return self._load(path)

    @staticmethod
    def _load(path: Path) -> tuple[Callable[..., Any], Any]:
        try:
            return torch._inductor.aoti_load_package(str(path)), treespec_loads(path.with_suffix(".json").read_text())
        except Exception as err:
            raise RuntimeError(f"{path}: cannot load this AOTInductor package or its {path.with_suffix('.json').name} "
                               f"({err}); delete both files to rebuild them") from err


def _signature(leaves: list[Tensor]) -> tuple[tuple[tuple[int, ...], str, tuple[int, ...]], ...]:
    return tuple((tuple(t.shape), str(t.dtype), t.stride()) for t in leaves)


def _complete(path: Path) -> bool:
    return path.is_file() and path.with_suffix(".json").is_file()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
