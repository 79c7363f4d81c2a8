"""Run independent per-victim work side by side on separate CUDA streams.

At batch 8 one victim's kernels can leave part of a GPU idle (small convolutions, memory-bound norms, the tail of
each kernel); the victims of an ensemble do not depend on each other until their losses or gradients are summed, so
each can run on a stream of its own (stage 1 on an H200: epochs 3-5 % shorter with the steps compiled ahead of time,
14 % with eager kernels; benchmarks/README.md). Inside a CUDA-graph capture the streams become parallel branches of
the graph. The work is forked from the caller's current stream and joined back into it, so the results are ordered
as if run one after another; on other devices (or with one victim) it runs in order on the current stream. Autograd
runs a backward on the stream of its forward, so a graph built on a victim's stream is differentiated there too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import Tensor
from torch.utils._pytree import tree_leaves

T = TypeVar("T")


class VictimStreams:
    """``VictimStreams(device, n).map(fn, items)`` equals ``[fn(i) for i in items]``; on CUDA item ``k`` runs on
    stream ``k`` (at most ``n`` items)."""

    def __init__(self, device: torch.device, n: int) -> None:
        self.device = device
        self.streams = [torch.cuda.Stream(device) for _ in range(n)] if device.type == "cuda" and n > 1 else []

    def map(self, fn: Callable[[int], T], items: Sequence[int]) -> list[T]:
        if not self.streams:
            return [fn(i) for i in items]
        if len(items) > len(self.streams):
            raise ValueError(f"VictimStreams: {len(items)} items for {len(self.streams)} streams")
        origin = torch.cuda.current_stream(self.device)
        results = []
        for stream, item in zip(self.streams, items, strict=False):
            stream.wait_stream(origin)
            with torch.cuda.stream(stream):
                results.append(fn(item))
        for stream in self.streams[:len(items)]:
            origin.wait_stream(stream)
        # The results were allocated on the side streams and are used (and freed) on the origin stream from now on.
        for leaf in tree_leaves(results):
            if isinstance(leaf, Tensor) and leaf.is_cuda:
                leaf.record_stream(origin)
        return results
