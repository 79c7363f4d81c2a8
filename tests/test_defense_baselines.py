"""CMUA update rule and loop, Ruiz PGD, uniform noise, the method registry, checkpoint file errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.test_defense_interruption import SIZE, StandInVictim, data, record_cudnn_autotune, standins
from tsdf_pipeline.defense import (
    METHODS,
    CMUAConfig,
    PGDConfig,
    make_config,
    make_perturbation,
    uniform_noise,
)
from tsdf_pipeline.defense.cmua import cmua_order, cmua_update, run_cmua
from tsdf_pipeline.defense.pgd import pgd_update, run_pgd
from tsdf_pipeline.defense.state import LoopState, load_state, make_generator, save_state


def test_cmua_single_update_by_hand():
    x_nat = torch.tensor([[0.0, 0.98]], dtype=torch.float32).view(1, 1, 1, 2).expand(2, 3, 1, 2).clone()
    x_nat[1] = -0.5
    x = x_nat + 0.02
    grad = torch.ones_like(x)
    grad[1] = -1.0
    # first update: up = mean_batch(clip(f*(X + a*sign(g) - x_nat), ±ε)); f=2: sample0 2*0.03=0.06->0.05,
    # sample1 2*(0.02-0.01)=0.02 -> mean 0.035
    up, x_new = cmua_update(None, x_nat, x, grad, step_size=0.01, factor=2.0, epsilon=0.05, momentum=0.5)
    torch.testing.assert_close(up, torch.full((1, 3, 1, 2), 0.035))
    torch.testing.assert_close(x_new, (x_nat + 0.035).clamp(-1, 1))
    assert x_new[0, 0, 0, 1] == 1.0
    # later update: momentum blend with the previous up
    up2, _ = cmua_update(torch.full((1, 3, 1, 2), -0.01), x_nat, x, grad, step_size=0.01, factor=2.0,
                         epsilon=0.05, momentum=0.5)
    torch.testing.assert_close(up2, torch.full((1, 3, 1, 2), 0.5 * -0.01 + 0.5 * 0.035))


def test_cmua_order_is_stargan_attentiongan_hisd_attgan():
    assert cmua_order(["attgan", "x", "hisd", "stargan", "attentiongan"],
                      ("stargan", "attentiongan", "hisd", "attgan")) == [3, 4, 2, 0, 1]


def test_cmua_run_stays_in_the_ball_is_deterministic_and_resumes(tmp_path):
    victims = standins() + [StandInVictim("h", "hisd", 2)]
    x, attrs = data(6)
    config = CMUAConfig(epochs=2, batch_size=3, iterations=2, device="cpu", progress=False, epsilon=0.02)
    a = run_cmua(victims, x, attrs, config)
    assert a.w.shape == (1, 3, SIZE, SIZE) and 0 < a.w.abs().max() <= 0.02
    assert len(a.history) == 4 and set(a.history[0]) >= {"loss/a", "loss/b", "loss/h"}
    assert torch.equal(a.w, run_cmua(victims, x, attrs, config).w)
    path = tmp_path / "cmua.pt"
    per_batch = CMUAConfig(**{**config.__dict__, "checkpoint_every": "batch"})

    def interrupt(step, metrics):
        if step == 2:  # epoch 1, batch 0 (one record per batch); the checkpoint ends at epoch 0
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_cmua(victims, x, attrs, per_batch, checkpoint_path=path, callback=interrupt)
    assert load_state(path, method="cmua", fingerprint=_cmua_fingerprint(victims, x, per_batch),
                      device="cpu").epoch == 1
    resumed = run_cmua(victims, x, attrs, per_batch, checkpoint_path=path)
    assert torch.equal(resumed.w, a.w) and resumed.history == a.history


def _cmua_fingerprint(victims, x, config):
    from tsdf_pipeline.defense.cmua import RUNTIME_FIELDS
    from tsdf_pipeline.defense.state import config_fingerprint

    return config_fingerprint(config, RUNTIME_FIELDS, [v.name for v in victims], x.shape)


def test_pgd_stays_in_ball_clamps_and_ascends():
    victims = standins()
    x, attrs = data(4)
    x[0] = 0.99  # saturated image: x + δ must be clamped at 1
    config = PGDConfig(iterations=3, batch_size=3, device="cpu", progress=False)
    delta = run_pgd(victims, x, attrs, config)
    assert delta.shape == x.shape
    assert delta.abs().max() <= 0.05 + 1e-6
    assert (x + delta).max() <= 1.0 and (x + delta).min() >= -1.0
    assert delta[0].max() <= 0.01 + 1e-6
    no_attack, attacked = 0.0, 0.0
    for v in victims:
        t = v.targets(attrs.float(), "all")
        clean = v.edit(x, t)
        attacked += F.mse_loss(v.edit(x + delta, t), clean).item()
        no_attack += F.mse_loss(v.edit(x + uniform_noise(x.shape, 0.05, 0), t), clean).item()
    assert attacked > no_attack


def test_pgd_batches_do_not_interact():
    victims = standins()
    x, attrs = data(3)
    config = PGDConfig(iterations=2, random_start=False, device="cpu", progress=False)
    together = run_pgd(victims, x, attrs, PGDConfig(**{**config.__dict__, "batch_size": 3}))
    alone = run_pgd(victims, x, attrs, PGDConfig(**{**config.__dict__, "batch_size": 1}))
    torch.testing.assert_close(together, alone)


@pytest.mark.parametrize("weighting", ["sum", "balanced"])
def test_pgd_step_ascends_the_joint_loss_over_victims(weighting):
    """One iteration is the sign step of the victims' summed input gradients (``balanced``: each divided, per
    image, by its mean magnitude first), although the loop back-propagates one victim at a time."""
    victims = standins()
    x, attrs = data(2)
    config = PGDConfig(iterations=1, seed=3, device="cpu", progress=False, victim_weighting=weighting)
    delta = run_pgd(victims, x, attrs, config)
    start = x + 0.05 * (torch.rand(x.shape, generator=make_generator(3, "pgd", 0, device="cpu")) * 2 - 1)
    grad = torch.zeros_like(x)
    for v in victims:
        x_var = start.clone().requires_grad_(True)
        t = v.targets(attrs.float(), "all")
        with torch.no_grad():
            clean = v.edit(x, t)
        loss = F.mse_loss(v.edit(x_var, t), clean, reduction="none").flatten(1).mean(1).sum()
        (g,) = torch.autograd.grad(loss, x_var)
        grad += g / g.abs().mean(dim=(1, 2, 3), keepdim=True) if weighting == "balanced" else g
    assert (grad != 0).all()
    torch.testing.assert_close(delta, pgd_update(x, start, grad, 0.01, 0.05) - x)


def test_pgd_balanced_weighting_differs_only_with_several_victims():
    """A sign is blind to a positive scale: one victim gives the upstream step either way; the stand-ins'
    gradients differ in size, so with both victims the balanced step moves other pixels."""
    victims = standins()
    x, attrs = data(3)
    runs = {w: [run_pgd(vs, x, attrs, PGDConfig(iterations=2, seed=1, device="cpu", progress=False,
                                                 victim_weighting=w)) for vs in (victims[:1], victims)]
            for w in ("sum", "balanced")}
    assert torch.equal(runs["sum"][0], runs["balanced"][0])
    assert not torch.equal(runs["sum"][1], runs["balanced"][1])


def test_pgd_config_rejects_unknown_victim_weighting():
    with pytest.raises(ValueError, match="victim_weighting: expected 'sum' or 'balanced', got 'mean'"):
        make_config("pgd", {"victim_weighting": "mean"})


def test_pgd_update_by_hand():
    x_nat = torch.tensor([0.0, 0.995, -0.5]).view(1, 1, 1, 3)
    x = x_nat + torch.tensor([0.045, 0.0, -0.01]).view(1, 1, 1, 3)
    grad = torch.tensor([1.0, 1.0, -1.0]).view(1, 1, 1, 3)
    expected = torch.tensor([0.05, 1.0, -0.52]).view(1, 1, 1, 3)
    torch.testing.assert_close(pgd_update(x_nat, x, grad, 0.01, 0.05), expected)


def test_uniform_noise_is_bounded_reproducible_and_spread():
    n = uniform_noise((2, 3, 32, 32), 0.05, seed=1)
    assert n.abs().max() <= 0.05 and n.max() > 0.049 and n.min() < -0.049
    assert torch.equal(n, uniform_noise((2, 3, 32, 32), 0.05, seed=1))
    assert not torch.equal(n, uniform_noise((2, 3, 32, 32), 0.05, seed=2))


def test_registry_kinds_shapes_and_config_errors():
    assert set(METHODS) == {"tsdf", "cmua", "pgd", "noise"}
    x, attrs = data(3)
    p = make_perturbation("noise", standins(), x, attrs, {"epsilon": 0.01})
    assert p.kind == "universal" and p.w.shape == (1, 3, SIZE, SIZE) and p.w.abs().max() <= 0.01
    p = make_perturbation("noise", standins(), x, attrs, {"per_image": True})
    assert p.kind == "per_image" and p.w.shape == x.shape
    p = make_perturbation("pgd", standins(), x, attrs, {"iterations": 1, "device": "cpu", "progress": False})
    assert p.kind == "per_image" and p.w.shape == x.shape
    p = make_perturbation("tsdf", standins(), x, attrs, {"epochs": 1, "device": "cpu", "progress": False})
    assert p.kind == "universal" and p.w.shape == (1, 3, SIZE, SIZE) and len(p.history) == 4
    with pytest.raises(ValueError, match="unknown key"):
        make_config("tsdf", {"epsilonn": 0.1})
    with pytest.raises(ValueError, match="unknown perturbation method"):
        make_config("found")
    with pytest.raises(ValueError, match="expected CMUAConfig"):
        make_config("cmua", PGDConfig())


def test_checkpoint_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_state(bad, method="interruption", fingerprint={}, device="cpu")
    other = tmp_path / "other.pt"
    torch.save({"w": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="not a defense checkpoint"):
        load_state(other, method="interruption", fingerprint={}, device="cpu")
    good = tmp_path / "good.pt"
    save_state(good, LoopState({"w": torch.ones(2)}, epoch=1, batch=2, history=[{"step": 0, "x": 1.0}]),
               method="cmua", fingerprint={"a": 1})
    with pytest.raises(ValueError, match="method 'cmua'"):
        load_state(good, method="interruption", fingerprint={"a": 1}, device="cpu")
    state = load_state(good, method="cmua", fingerprint={"a": 1}, device="cpu")
    assert (state.epoch, state.batch, state.history) == (1, 2, [{"step": 0, "x": 1.0}])
    assert torch.equal(state.tensors["w"], torch.ones(2))


@pytest.mark.parametrize(("method", "module_name", "settings"), [
    ("tsdf", "interruption", {"epochs": 1}), ("cmua", "cmua", {"epochs": 1}), ("pgd", "pgd", {"iterations": 1}),
])
def test_every_optimisation_loop_runs_under_cudnn_autotuning(monkeypatch: pytest.MonkeyPatch, method: str,
                                                             module_name: str, settings: dict):
    """Methods are compared under the same cuDNN settings (a no-op on the CPU, where this runs)."""
    import importlib

    entered = record_cudnn_autotune(monkeypatch, importlib.import_module(f"tsdf_pipeline.defense.{module_name}"))
    x, attrs = data(2)
    config = make_config(method, {"batch_size": 2, "device": "cpu", "progress": False, **settings})
    make_perturbation(method, standins(), x, attrs, config)
    assert entered == [torch.device("cpu")]


def test_pgd_per_target_attacks_each_victims_target_alone():
    """Ruiz's ``perturb``: one δ per image, victim and target, the sign step of that target's MSE only."""
    victims = standins()
    x, attrs = data(2)
    config = PGDConfig(iterations=1, seed=5, device="cpu", progress=False, mode="per_target")
    out = run_pgd(victims, x, attrs, config)
    assert sorted(out) == ["a", "b"] and out["a"].shape == (2, 2, 3, SIZE, SIZE)
    for v in victims:
        t = v.targets(attrs.float(), "all")
        for i, name in enumerate(t.names):
            gen = make_generator(5, "pgd", v.name, name, 0, device="cpu")
            start = x + 0.05 * (torch.rand(x.shape, generator=gen) * 2 - 1)
            x_var = start.clone().requires_grad_(True)
            with torch.no_grad():
                clean = v.edit(x, t)[i]
            loss = F.mse_loss(v.edit(x_var, t)[i], clean, reduction="none").flatten(1).mean(1).sum()
            (grad,) = torch.autograd.grad(loss, x_var)
            torch.testing.assert_close(out[v.name][i], pgd_update(x, start, grad, 0.01, 0.05) - x)
    assert not torch.equal(out["a"][0], out["a"][1])  # each target its own perturbation


def test_pgd_per_target_through_the_method_registry_and_config_errors():
    x, attrs = data(2)
    p = make_perturbation("pgd", standins(), x, attrs, {"iterations": 1, "device": "cpu", "progress": False,
                                                        "mode": "per_target", "targets": "train"})
    assert p.kind == "per_target" and {k: tuple(w.shape[:2]) for k, w in p.w.items()} == {"a": (1, 2), "b": (1, 2)}
    with pytest.raises(ValueError, match="PGDConfig.mode: expected 'joint' or 'per_target', got 'each'"):
        make_config("pgd", {"mode": "each"})
