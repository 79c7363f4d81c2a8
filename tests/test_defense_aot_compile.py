"""Stage 1's steps compiled ahead of time (Inductor standalone artifacts): same result as eager, reused across runs."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys

import pytest
import torch
from torch.utils._pytree import tree_flatten

from tests.test_defense_interruption import data, standins
from tsdf_pipeline.defense.aot_compile import AotCompiledFunction, prefetch
from tsdf_pipeline.defense.interruption import InterruptionConfig, run_interruption


def test_aot_stage1_matches_the_eager_loop_and_later_runs_load_its_artifacts(tmp_path, monkeypatch, caplog):
    x, attrs = data(4)
    base = dict(epochs=2, batch_size=2, device="cpu", progress=False, seed=3)
    eager = run_interruption(standins(), x, attrs, InterruptionConfig(**base))
    config = InterruptionConfig(**base, aot_cache_dir=str(tmp_path / "aot"))
    compiled = run_interruption(standins(), x, attrs, config)
    files = sorted((tmp_path / "aot").iterdir())
    # the feature step and each victim's end-to-end part: artifact, lifted weights, output structure, index
    assert sorted("".join(p.suffixes) for p in files) == sorted([".bin", ".constants.pt", ".json", ".index.json"] * 3)
    # Inductor may reorder float sums; a sign step flips only where a gradient is ~0.
    assert (eager.w == compiled.w).float().mean().item() > 0.99
    assert eager.history[-1]["e2e/loss"] == pytest.approx(compiled.history[-1]["e2e/loss"], rel=1e-4)

    def no_compile(*_args, **_kwargs):
        raise AssertionError("the artifact of the first run should have been loaded, not rebuilt")

    monkeypatch.setattr(torch._inductor, "standalone_compile", no_compile)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tsdf_pipeline.defense.aot_compile"):
        again = run_interruption(standins(), x, attrs, config)
    assert torch.equal(again.w, compiled.w) and again.history == compiled.history
    loads = [r.threadName for r in caplog.records if " loaded in " in r.getMessage()]
    assert loads == ["aot-prefetch"] * 3  # all three loaded beside the first clean pass, none again later
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tsdf_pipeline.defense.aot_compile"):
        unprefetched = run_interruption(standins(), x, attrs, dataclasses.replace(config, aot_prefetch=False))
    assert [r.threadName for r in caplog.records if " loaded in " in r.getMessage()] == ["MainThread"] * 3
    assert torch.equal(unprefetched.w, compiled.w)
    other_seed = run_interruption(standins(), x, attrs, dataclasses.replace(config, seed=4))  # same artifact
    assert not torch.equal(other_seed.w, compiled.w)
    # Other weights of the same shapes: the same artifact (nothing is rebuilt), run with these weights.
    other_weights = standins()
    with torch.no_grad():
        for p in other_weights[0].parameters():
            p.mul_(1.5)
    reused = run_interruption(other_weights, x, attrs, config)
    monkeypatch.undo()
    other_eager = run_interruption(other_weights, x, attrs, InterruptionConfig(**base))
    assert not torch.equal(reused.w, compiled.w)
    assert (other_eager.w == reused.w).float().mean().item() > 0.99
    assert other_eager.history[-1]["e2e/loss"] == pytest.approx(reused.history[-1]["e2e/loss"], rel=1e-4)


def test_aot_stage1_on_one_stream_compiles_all_victims_end_to_end_parts_into_one_artifact(tmp_path):
    """``victim_streams: false``: one end-to-end artifact for the ensemble (its identical kernels shared), the same
    result as the eager loop and as the per-victim artifacts."""
    x, attrs = data(4)
    base = dict(epochs=2, batch_size=2, device="cpu", progress=False, seed=3, victim_streams=False)
    eager = run_interruption(standins(), x, attrs, InterruptionConfig(**base))
    compiled = run_interruption(standins(), x, attrs, InterruptionConfig(**base, aot_cache_dir=str(tmp_path)))
    assert sorted("".join(p.suffixes) for p in tmp_path.iterdir() if p.is_file()) == sorted(
        [".bin", ".constants.pt", ".json", ".index.json"] * 2)
    assert (eager.w == compiled.w).float().mean().item() > 0.99
    assert eager.history[-1]["e2e/loss"] == pytest.approx(compiled.history[-1]["e2e/loss"], rel=1e-4)
    per_victim = run_interruption(standins(), x, attrs, InterruptionConfig(
        **{**base, "victim_streams": True}, aot_cache_dir=str(tmp_path / "per_victim")))
    assert (per_victim.w == compiled.w).float().mean().item() > 0.99


def test_artifact_names_cover_key_live_signatures_and_input_signature(tmp_path):
    fn = AotCompiledFunction(lambda a: a * 2, tmp_path, key={"weights": "abc"}, live={"w": torch.zeros(4)})
    a, spec = [torch.zeros(2, 3)], tree_flatten((torch.zeros(1),))[1]
    path = fn.artifact_path(a, spec)
    assert path.parent == tmp_path and path.suffix == ".bin"

    def other(key=None, live=None):
        return AotCompiledFunction(lambda a: a, tmp_path, key=key or {"weights": "abc"},
                                   live={"w": torch.zeros(4)} if live is None else live).artifact_path(a, spec)

    assert path == other() == other(live={"w": torch.ones(4)})  # the live tensors' values are inputs
    assert path != other(key={"weights": "abd"})
    assert path != other(live={"w": torch.zeros(5)}) and path != other(live={"v": torch.zeros(4)})
    assert path != other(live={"w": torch.zeros(4, dtype=torch.float64)})
    assert path != AotCompiledFunction(lambda a: a, tmp_path, key={"weights": "abc"}, live={"w": torch.zeros(4)},
                                       options={"max_autotune": True}).artifact_path(a, spec)
    assert path != fn.artifact_path([torch.zeros(3, 2)], spec)
    assert path != fn.artifact_path([torch.zeros(2, 3, dtype=torch.float64)], spec)
    assert path != fn.artifact_path([torch.zeros(3, 2).t()], spec)  # same shape, other strides


# cpp_wrapper: Inductor's C++ wrapper in place of the Python one (a C++ extension compiled with the artifact), whose
# lifted inputs need their fake values in the traced graph.
@pytest.mark.parametrize("options", [None, {"cpp_wrapper": True}], ids=["python-wrapper", "cpp-wrapper"])
def test_live_tensors_are_read_at_each_call_and_the_others_come_from_the_saved_file(tmp_path, monkeypatch, options):
    weight = torch.ones(3)

    def fn(a):
        return (a * weight + torch.tensor([0.0, 1.0, 2.0]),)  # `weight` is live; the other tensor: saved

    a = torch.full((3,), 2.0)
    assert torch.equal(AotCompiledFunction(fn, tmp_path, key="k", live={"weight": weight}, options=options)(a)[0],
                       torch.tensor([2.0, 3.0, 4.0]))
    assert len(torch.load(next(tmp_path.glob("*.constants.pt")), weights_only=True)) == 1  # the other tensor only
    weight.mul_(10.0)  # new values in place: the same artifact, loaded by a new process (a new function here)

    def no_compile(*_args, **_kwargs):
        raise AssertionError("the artifact should have been loaded, not rebuilt")

    monkeypatch.setattr(torch._inductor, "standalone_compile", no_compile)
    assert torch.equal(AotCompiledFunction(fn, tmp_path, key="k", live={"weight": weight}, options=options)(a)[0],
                       torch.tensor([20.0, 21.0, 22.0]))
    with pytest.raises(RuntimeError, match=r"cannot load .*KeyError: 'weight'"):  # (another name: another file)
        AotCompiledFunction(fn, tmp_path, key="k", live={"w": weight}, options=options)._load(
            next(tmp_path.glob("*.bin")), torch.device("cpu"))


def test_prefetch_loads_the_indexed_artifacts_on_a_thread_and_the_calls_use_them(tmp_path, monkeypatch, caplog):
    offset = torch.tensor([0.5])

    def fn(a):
        return (a * 2 + offset,)  # `offset`: a saved tensor, restored from the CPU file

    small, large = torch.ones(2), torch.ones(3, 4)
    AotCompiledFunction(fn, tmp_path, key="k")(small)
    AotCompiledFunction(fn, tmp_path, key="k")(large)  # another input signature: another artifact, indexed too
    index = AotCompiledFunction(fn, tmp_path, key="k").index_path(torch.device("cpu"))
    assert len(json.loads(index.read_text())) == 2
    assert AotCompiledFunction(fn, tmp_path, key="other").index_path(torch.device("cpu")) != index

    fresh = AotCompiledFunction(fn, tmp_path, key="k")
    prefetch([fresh], torch.device("cpu"))
    fresh._prefetch.join()
    assert len(fresh.compiled) == 2

    def no_load(*_args, **_kwargs):
        raise AssertionError("the prefetched artifact should have been used, not loaded or built again")

    monkeypatch.setattr(torch._inductor, "standalone_compile", no_load)
    monkeypatch.setattr(AotCompiledFunction, "_load", no_load)
    assert torch.equal(fresh(small)[0], small * 2.5) and torch.equal(fresh(large)[0], large * 2.5)
    monkeypatch.undo()

    # An indexed artifact whose files are gone is skipped (the call builds it again); a damaged index is logged
    # and left to the calls, which name it.
    next(tmp_path.glob("*.constants.pt")).unlink()
    partial = AotCompiledFunction(fn, tmp_path, key="k")
    prefetch([partial], torch.device("cpu"))
    partial._prefetch.join()
    assert len(partial.compiled) == 1
    index.write_text("{not json")
    damaged = AotCompiledFunction(fn, tmp_path, key="k")
    with caplog.at_level(logging.WARNING, logger="tsdf_pipeline.defense.aot_compile"):
        prefetch([damaged], torch.device("cpu"))
        damaged._prefetch.join()
    assert "AOT prefetch stopped" in caplog.text and index.name in caplog.text and not damaged.compiled
    with pytest.raises(ValueError, match=rf"{index.name}: not an artifact index .* delete it"):
        damaged(large)
    index.unlink()  # a run indexes what it loads (artifacts built before the index existed, a deleted index)
    assert torch.equal(AotCompiledFunction(fn, tmp_path, key="k")(large)[0], large * 2.5)
    assert len(json.loads(index.read_text())) == 1


def test_inductor_options_reach_inductors_config(tmp_path):
    a = torch.ones(3)
    out = AotCompiledFunction(lambda a: (a * 2,), tmp_path, key="k", options={"max_autotune": False})(a)
    assert torch.equal(out[0], a * 2)
    with pytest.raises(AttributeError, match=r"config\.no_such_setting does not exist"):
        AotCompiledFunction(lambda a: (a * 2,), tmp_path, key="k", options={"no_such_setting": 1})(a)
    with pytest.raises(ValueError, match="aot_options: expected a dict of Inductor settings together with aot_cache"):
        InterruptionConfig(aot_options={"max_autotune": True})


def test_a_damaged_artifact_is_named_in_the_error(tmp_path):
    fn = AotCompiledFunction(lambda a: (a * 2,), tmp_path, key="k")
    a = torch.ones(2)
    path = fn.artifact_path([a], tree_flatten((a,))[1])
    path.write_bytes(b"not an artifact")
    torch.save([], path.with_suffix(".constants.pt"))
    path.with_suffix(".json").write_text("{}")
    with pytest.raises(RuntimeError, match=rf"{path.name}: cannot load .* delete the three files"):
        fn(a)


def test_autocast_and_autograd_inside_the_function_are_compiled_in(tmp_path):
    """What stage 1 does on CUDA (bf16 autocast around the victims, an input gradient), here with CPU bf16 autocast:
    the artifact computes in bf16 like the eager function, not in fp32."""

    def fn(a, w):
        a = a.detach().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = torch.nn.functional.conv2d(a, w)
        (grad,) = torch.autograd.grad(y.float().square().mean(), a)
        return {"y": y.float(), "grad": grad}

    gen = torch.Generator().manual_seed(0)
    a, w = torch.randn(2, 3, 16, 16, generator=gen), torch.randn(5, 3, 3, 3, generator=gen)
    eager, compiled = fn(a, w), AotCompiledFunction(fn, tmp_path, key="autocast")(a, w)
    torch.testing.assert_close(compiled["y"], eager["y"], rtol=0, atol=1e-6)
    torch.testing.assert_close(compiled["grad"], eager["grad"], rtol=1e-3, atol=1e-6)
    assert (compiled["y"] - torch.nn.functional.conv2d(a, w)).abs().max() > 1e-3  # bf16, not fp32


def test_the_artifact_key_covers_victim_settings_and_the_live_inputs_cover_non_persistent_buffers():
    """HiSD keeps its reference image in a non-persistent buffer and its tag in ``describe()``: the tag names the
    artifact, the reference is one of its live inputs (its values are read at each call)."""
    from tsdf_pipeline.defense.interruption import _Stage1
    from tsdf_pipeline.defense.victim_ops import prepare_victims

    def stage(victims):
        prepared = prepare_victims(victims, torch.device("cpu"), channels_last=False, compile=False)
        return _Stage1(prepared, InterruptionConfig(device="cpu", aot_cache_dir="unused"), *data(1, size=8))

    def with_reference(seed: int):
        victims = standins()
        victims[0].register_buffer("reference", torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(seed)),
                                   persistent=False)
        return victims

    victims = with_reference(0)
    before = {step: fn.key for step, fn in stage(victims).aot.items()}
    assert sorted(before) == ["end_to_end/a", "end_to_end/b", "feature"]
    other = with_reference(1)
    with torch.no_grad():
        other[1].enc.weight.mul_(2.0)
    assert {step: fn.key for step, fn in stage(other).aot.items()} == before  # other values, same settings
    aot = stage(victims).aot
    assert aot["end_to_end/a"].live[f"{victims[0].name}.reference"] is victims[0].reference
    assert aot["feature"].live[f"{victims[0].name}.reference"] is victims[0].reference
    assert all(any(t is p for t in aot[f"end_to_end/{v.name}"].live.values()) for v in victims
               for p in v.parameters())
    assert not any(k.startswith("a.") for k in aot["end_to_end/b"].live)  # a victim's part reads its own weights
    victims[0].arch = "hisd"  # describe() changes: the artifacts over that victim change, the other's not
    after = {step: fn.key for step, fn in stage(victims).aot.items()}
    assert after["feature"] != before["feature"] and after["end_to_end/a"] != before["end_to_end/a"]
    assert after["end_to_end/b"] == before["end_to_end/b"]


def test_the_runtime_import_starts_once_on_a_thread_and_loading_waits_for_it():
    from tsdf_pipeline.defense import aot_compile

    aot_compile.import_runtime_in_background()
    thread = aot_compile._runtime_import["thread"]
    aot_compile.import_runtime_in_background()
    assert aot_compile._runtime_import["thread"] is thread
    aot_compile._await_runtime_import()
    assert not thread.is_alive() and "torch._inductor.standalone_compile" in sys.modules
