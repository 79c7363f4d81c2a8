"""CUDA-graph replay (alone and around an AOT-compiled step) of stage 1: refused on the CPU, eager results on a GPU."""

from __future__ import annotations

import pytest
import torch

from tsdf_pipeline.defense.cuda_graphs import GraphedFunction
from tsdf_pipeline.defense.interruption import InterruptionConfig, run_interruption

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cpu_tensors_are_refused():
    with pytest.raises(TypeError, match="CUDA tensor"):
        GraphedFunction(lambda x: x * 2)(torch.ones(2))


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
@pytest.mark.parametrize("amp", [False, True])
def test_aot_compiled_graphed_stage1_matches_the_eager_loop(tmp_path, amp: bool):
    """AOT-compiled steps (Inductor standalone artifacts) + graph replay (channels-last, bf16 when ``amp``) against
    eager launches."""
    from tests.test_defense_interruption import data, standins

    x, attrs = data(6)
    base = dict(epochs=2, batch_size=3, device="cuda", amp=amp, progress=False, seed=3)
    eager = run_interruption(standins(), x, attrs, InterruptionConfig(**base, cuda_graphs=False))
    compiled = run_interruption(standins(), x, attrs, InterruptionConfig(**base, aot_cache_dir=str(tmp_path)))
    agree = (eager.w == compiled.w).float().mean().item()
    assert agree > (0.99 if not amp else 0.9), f"only {agree:.4f} of w agrees"
    assert eager.history[-1]["e2e/loss"] == pytest.approx(compiled.history[-1]["e2e/loss"], rel=1e-3 if amp else 1e-4)
