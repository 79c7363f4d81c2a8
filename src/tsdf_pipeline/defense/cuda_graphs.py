"""Replay a pure tensor function as a CUDA graph (one capture per distinct set of input shapes).

A step of the universal-perturbation loops launches thousands of small kernels (4 generators, forward and
backward, 4 times per batch); on a GPU the host cannot issue them as fast as the device runs them. Capturing
the whole step once and replaying it removes that launch overhead without changing a single operation.

Contract of ``fn``: its arguments and results are (nested tuples / lists / dicts of) tensors on one CUDA device;
it is pure (it reads its inputs and returns new tensors, it does not modify its inputs or hold state between
calls), it contains no host sync (``.item()``, data-dependent shapes) and no random number draw. The first call
for a given input signature runs ``fn`` ``warmup`` times on a side stream (cuDNN autotuning, lazy
initialisation), then captures it; every call copies the inputs into the graph's static buffers, replays, and
returns fresh copies of the outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten


@dataclass
class _Capture:
    graph: torch.cuda.CUDAGraph
    inputs: list[Tensor]
    outputs: Any


class GraphedFunction:
    """``GraphedFunction(fn)(*args)`` equals ``fn(*args)``; on CUDA it replays a captured graph."""

    def __init__(self, fn: Callable[..., Any], *, warmup: int = 2) -> None:
        self.fn = fn
        self.warmup = warmup
        self.captures: dict[tuple, _Capture] = {}

    def __call__(self, *args: Any) -> Any:
        leaves, spec = tree_flatten(args)
        if not all(isinstance(leaf, Tensor) and leaf.is_cuda for leaf in leaves):
            raise TypeError("GraphedFunction: every argument leaf must be a CUDA tensor")
        key = (str(spec), tuple((tuple(t.shape), t.dtype, t.stride()) for t in leaves))
        capture = self.captures.get(key)
        if capture is None:
            capture = self.captures[key] = self._capture(leaves, spec)
        for static, value in zip(capture.inputs, leaves, strict=True):
            static.copy_(value)
        capture.graph.replay()
        return tree_map(lambda t: t.clone(), capture.outputs)

    def _capture(self, leaves: list[Tensor], spec: Any) -> _Capture:
        inputs = [t.detach().clone(memory_format=torch.preserve_format) for t in leaves]
        static_args = tree_unflatten(inputs, spec)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.fn(*static_args)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self.fn(*static_args)
        return _Capture(graph, inputs, outputs)
