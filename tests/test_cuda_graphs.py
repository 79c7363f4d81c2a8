"""CUDA-graph replay (alone and around an AOT-compiled step) and per-victim streams of stage 1: refused or in order
on the CPU, eager results on a GPU."""

from __future__ import annotations

import pytest
import torch

from tsdf_pipeline.defense.cuda_graphs import GraphedFunction
from tsdf_pipeline.defense.interruption import InterruptionConfig, run_interruption
from tsdf_pipeline.defense.streams import VictimStreams

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cpu_tensors_are_refused():
    with pytest.raises(TypeError, match="CUDA tensor"):
        GraphedFunction(lambda x: x * 2)(torch.ones(2))


def test_victim_streams_run_in_order_on_the_cpu():
    streams = VictimStreams(torch.device("cpu"), 3)
    assert streams.streams == []
    calls: list[int] = []
    assert streams.map(lambda i: calls.append(i) or i * 2, [0, 1, 2]) == [0, 2, 4] and calls == [0, 1, 2]


@needs_cuda
def test_victim_streams_inside_a_graph_equal_the_sequential_results():
    """Each item on its own stream, joined back: eager and captured as a graph's parallel branches; autograd runs
    each branch's backward on its stream."""
    streams = VictimStreams(torch.device("cuda"), 3)
    with pytest.raises(ValueError, match="4 items for 3 streams"):
        streams.map(lambda i: i, range(4))

    def fn(x):
        def branch(i):
            v = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad((torch.sin(v * (i + 1)) ** 2).sum(), v)
            return g
        return sum(streams.map(branch, range(3)))

    x = torch.linspace(-2, 2, 4096, device="cuda")
    expected = sum((i + 1) * torch.sin(2 * (i + 1) * x) for i in range(3))
    torch.testing.assert_close(fn(x), expected, rtol=1e-4, atol=1e-4)
    graphed = GraphedFunction(fn)
    for shift in (0.0, 0.5):
        torch.testing.assert_close(graphed(x + shift), sum((i + 1) * torch.sin(2 * (i + 1) * (x + shift))
                                                           for i in range(3)), rtol=1e-4, atol=1e-4)


@needs_cuda
@pytest.mark.parametrize("graphs", [False, True])
def test_stage1_with_victim_streams_matches_one_stream(graphs: bool):
    from tests.test_defense_interruption import data, standins

    x, attrs = data(6)
    base = dict(epochs=2, batch_size=3, device="cuda", amp=False, progress=False, seed=3, cuda_graphs=graphs)
    one = run_interruption(standins(), x, attrs, InterruptionConfig(**base, victim_streams=False))
    side_by_side = run_interruption(standins(), x, attrs, InterruptionConfig(**base, victim_streams=True))
    assert (one.w == side_by_side.w).float().mean().item() > 0.99
    assert one.history[-1]["e2e/loss"] == pytest.approx(side_by_side.history[-1]["e2e/loss"], rel=1e-4)


@needs_cuda
def test_replay_equals_the_function_and_returns_fresh_outputs():
    fn = GraphedFunction(lambda x, ys: {"sum": x + ys[0], "prod": x * ys[1]})
    x, ys = torch.arange(4.0, device="cuda"), [torch.ones(4, device="cuda"), torch.full((4,), 3.0, device="cuda")]
    first = fn(x, ys)
    second = fn(x + 1, ys)
    torch.testing.assert_close(first["sum"], x + 1)
    torch.testing.assert_close(second["prod"], (x + 1) * 3)
    assert len(fn.captures) == 1
    fn(torch.arange(6.0, device="cuda"), [torch.ones(6, device="cuda")] * 2)
    assert len(fn.captures) == 2


@needs_cuda
def test_graphed_stage1_matches_the_eager_loop():
    """Tiny real victims, fp32: graph replay and eager launches give the same perturbation."""
    from tests.test_defense_interruption import data, standins

    x, attrs = data(6)
    base = dict(epochs=2, batch_size=3, device="cuda", amp=False, progress=False, seed=3)
    eager = run_interruption(standins(), x, attrs, InterruptionConfig(**base, cuda_graphs=False))
    graphed = run_interruption(standins(), x, attrs, InterruptionConfig(**base, cuda_graphs=True))
    agree = (eager.w == graphed.w).float().mean().item()
    assert agree > 0.99, f"only {agree:.4f} of w agrees"
    assert eager.history[-1]["e2e/loss"] == pytest.approx(graphed.history[-1]["e2e/loss"], rel=1e-4)


@needs_cuda
@pytest.mark.parametrize(("amp", "streams", "options"), [(False, True, None), (True, True, None), (True, False, None),
                                                     (True, True, {"cpp_wrapper": True})])
def test_aot_compiled_graphed_stage1_matches_the_eager_loop(tmp_path, amp: bool, streams: bool, options):
    """AOT-compiled steps (Inductor standalone artifacts: per victim on its stream, or one for all; Python or C++
    wrapper) + graph replay (channels-last, bf16 when ``amp``) against eager launches."""
    from tests.test_defense_interruption import data, standins

    x, attrs = data(6)
    base = dict(epochs=2, batch_size=3, device="cuda", amp=amp, progress=False, seed=3, victim_streams=streams)
    eager = run_interruption(standins(), x, attrs, InterruptionConfig(**base, cuda_graphs=False))
    aot = dict(aot_cache_dir=str(tmp_path), aot_options=options)
    compiled = run_interruption(standins(), x, attrs, InterruptionConfig(**base, **aot))
    agree = (eager.w == compiled.w).float().mean().item()
    assert agree > (0.99 if not amp else 0.9), f"only {agree:.4f} of w agrees"
    assert eager.history[-1]["e2e/loss"] == pytest.approx(compiled.history[-1]["e2e/loss"], rel=1e-3 if amp else 1e-4)
    # A second run loads the artifacts on the prefetch thread (their saved tensors copied to the GPU there).
    loaded = run_interruption(standins(), x, attrs, InterruptionConfig(**base, **aot))
    agree = (loaded.w == compiled.w).float().mean().item()
    assert agree > 0.99, f"only {agree:.4f} of w agrees between the building and the loading run"
