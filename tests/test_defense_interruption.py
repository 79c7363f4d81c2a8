"""TSDF stage 1: update arithmetic by hand, ε-ball, determinism, checkpoint/resume, tiny real victims."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tsdf_pipeline.defense import interruption
from tsdf_pipeline.defense.feature_contrast import enhance_feature_contrast
from tsdf_pipeline.defense.interruption import (
    InterruptionConfig,
    l1_normalize,
    momentum_direction,
    run_interruption,
    sign_step,
    update_model_weights,
)
from tsdf_pipeline.defense.state import make_generator
from tsdf_pipeline.defense.victim_ops import cudnn_autotune

SIZE = 16


@dataclass
class Targets:
    names: list[str]
    cond: torch.Tensor


class StandInVictim(nn.Module):
    """Victim-interface stand-in: conv feature at S/2, conditioned output; T targets = label flips."""

    def __init__(self, name: str, arch: str, seed: int, channels: int = 4) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.name, self.arch, self.image_size = name, arch, SIZE
        self.enc = nn.Conv2d(3, channels, 3, stride=2, padding=1)
        self.dec = nn.Conv2d(channels + 1, 3, 3, padding=1)
        self.requires_grad_(False)

    def targets(self, attrs40: torch.Tensor, mode: str = "all") -> Targets:
        c = attrs40[:, :1].float()
        if mode == "train":
            return Targets(["recon"], c.unsqueeze(0))
        return Targets(["recon", "flip"], torch.stack([c, 1 - c]))

    def feature(self, x: torch.Tensor, t: Targets) -> torch.Tensor:
        return torch.tanh(self.enc(x)).unsqueeze(0).expand(len(t.names), -1, -1, -1, -1)

    def edit_with_feature(self, x: torch.Tensor, t: Targets) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.feature(x, t)
        outs = []
        for i in range(len(t.names)):
            c = t.cond[i].view(-1, 1, 1, 1).expand(-1, 1, *feat.shape[-2:])
            h = F.interpolate(torch.cat([feat[i], c], 1), size=x.shape[-2:], mode="nearest")
            outs.append(torch.tanh(self.dec(h)))
        return torch.stack(outs), feat

    def edit(self, x: torch.Tensor, t: Targets) -> torch.Tensor:
        return self.edit_with_feature(x, t)[0]

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "arch": self.arch}


def standins() -> list[StandInVictim]:
    return [StandInVictim("a", "stargan", 0), StandInVictim("b", "attgan", 1, channels=6)]


def data(n: int = 6, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return torch.rand(n, 3, size, size, generator=gen) * 2 - 1, torch.randint(0, 2, (n, 40), generator=gen)


def cfg(**kw) -> InterruptionConfig:
    base = dict(epochs=2, batch_size=3, device="cpu", progress=False, seed=3)
    return InterruptionConfig(**{**base, **kw})


def test_update_rules_by_hand():
    g = torch.tensor([1.0, -2.0, 0.0, 4.0]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    torch.testing.assert_close(l1_normalize(g), g / 1.75)
    mom = torch.full((1, 3, 2, 2), -1.0)
    torch.testing.assert_close(momentum_direction(g, mom, 0.8), g / 1.75 - 0.8)
    w = torch.tensor([0.0495, 0.0, -0.0495, 0.01]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    d = torch.tensor([-1.0, 1.0, 1.0, 0.0]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    expected = torch.tensor([0.05, -0.001, -0.05, 0.01]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    torch.testing.assert_close(sign_step(w, d, 1e-3, 0.05), expected)
    ema, weights = update_model_weights(torch.tensor([0.0, -1.0]), torch.tensor([-0.5, -0.2]), 0.9, 0.1)
    torch.testing.assert_close(ema, torch.tensor([-0.05, -0.92]))
    torch.testing.assert_close(weights, torch.softmax(torch.tensor([-0.5, -9.2]), 0))


def _hand_end_to_end_losses(victims, x, attrs, w, config):
    losses = []
    for v in victims:
        t = v.targets(attrs, "train")
        out_c, feat_c = v.edit_with_feature(x, t)
        out_a, feat_a = v.edit_with_feature(x + w, t)
        rs = lambda f: F.interpolate(f[0], size=(32, 32), mode="bilinear", align_corners=False)  # noqa: E731
        losses.append(0.7 * -F.mse_loss(out_a, out_c) + 0.3 * -F.mse_loss(rs(feat_a), rs(feat_c)))
    return torch.stack(losses)


def test_end_to_end_steps_momentum_and_weights_match_hand_computation():
    """Two batches without DI and without feature steps: w, momentum and the EMA softmax weights by hand."""
    victims = standins()
    x, attrs = data(4)
    config = cfg(epochs=1, batch_size=2, inner_steps=0, di_prob=0.0, shuffle_victims=False)
    result = run_interruption(victims, x, attrs, config)

    w = (torch.rand(1, 3, SIZE, SIZE, generator=make_generator(3, "tsdf-stage1-init")) * 2 - 1) * 0.05
    mom = torch.zeros_like(w)
    ema, weights = torch.zeros(2), torch.full((2,), 0.5)
    for b in range(2):
        xb, ab = x[2 * b:2 * b + 2], attrs[2 * b:2 * b + 2].float()
        wv = w.clone().requires_grad_(True)
        losses = _hand_end_to_end_losses(victims, xb, ab, wv, config)
        (g,) = torch.autograd.grad((weights * losses).sum(), wv)
        g_hat = g / (g.abs().mean() + 1e-12) + 0.8 * mom
        mom = g_hat
        w = (w - 1e-3 * g_hat.sign()).clamp(-0.05, 0.05)
        rec = result.history[b]
        assert rec["weight/a"] == pytest.approx(weights[0].item(), abs=1e-6)
        assert rec["e2e/loss/b"] == pytest.approx(losses[1].item(), rel=1e-5)
        ema = 0.9 * ema + 0.1 * losses.detach()
        weights = torch.softmax(ema / 0.1, 0)
    torch.testing.assert_close(result.w, w)


def test_feature_step_loss_matches_hand_computation():
    victims = standins()
    x, attrs = data(3)
    config = cfg(epochs=1, di_prob=0.0)
    stage = interruption._Stage1(
        interruption.prepare_victims(victims, torch.device("cpu"), channels_last=False, compile=False),
        config, x, attrs.float())
    stage.start_epoch(0)
    clean = stage.clean_pass(0, x, attrs.float())
    w = torch.full((1, 3, SIZE, SIZE), 0.03)
    draws = stage.tables(0)
    parts = stage.feature_loss(x, w, clean, interruption.DiversityDraw(draws.index[0], draws.valid[0]))

    def ensemble(inp):
        maps = [F.interpolate(v.feature(inp, v.targets(attrs, "train"))[0], size=(32, 32), mode="bilinear",
                              align_corners=False).sum(1) for v in victims]
        return maps[0] + maps[1]

    c_map, a_map = ensemble(x), ensemble(x + w)
    expected = -F.mse_loss(a_map, c_map) + 0.001 * F.mse_loss(enhance_feature_contrast(c_map, a_map), a_map)
    assert parts["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def _plan(shuffle: bool) -> interruption.DiversityDraw:
    config = cfg(shuffle_victims=shuffle, di_prob=1.0)
    x, attrs = data(3 * config.batch_size)
    stage = interruption._Stage1(
        interruption.prepare_victims(standins(), torch.device("cpu"), channels_last=False, compile=False),
        config, x, attrs.float())
    stage.start_epoch(0)
    return stage.plan


def test_victim_shuffle_permutes_each_steps_draws_among_the_victims():
    """The release's per-step victim shuffle = which victim gets which of the step's draws."""
    plain, shuffled = _plan(False), _plan(True)
    assert plain.index.shape == (3, 4, 2, 2, SIZE)
    moved = 0
    for b in range(3):
        for k in range(4):
            rows = {tuple(r.flatten().tolist()) for r in plain.index[b, k]}
            assert {tuple(r.flatten().tolist()) for r in shuffled.index[b, k]} == rows
            moved += int(not torch.equal(plain.index[b, k], shuffled.index[b, k]))
    assert 0 < moved < 12


def test_every_step_stays_in_the_epsilon_ball(monkeypatch):
    seen = []

    def checked(w, direction, step_size, epsilon):
        out = sign_step(w, direction, step_size, epsilon)
        seen.append(out.abs().max().item())
        return out

    monkeypatch.setattr(interruption, "sign_step", checked)
    x, attrs = data()
    result = run_interruption(standins(), x, attrs, cfg(epsilon=0.004, step_size=2e-3))
    assert len(seen) == 2 * 2 * 4 and max(seen) <= 0.004 + 1e-9
    assert result.w.shape == (1, 3, SIZE, SIZE) and result.w.abs().max() == pytest.approx(0.004)


def test_deterministic_with_a_seed_and_seed_matters():
    x, attrs = data()
    a = run_interruption(standins(), x, attrs, cfg(targets="all"))
    b = run_interruption(standins(), x, attrs, cfg(targets="all"))
    c = run_interruption(standins(), x, attrs, cfg(targets="all", seed=4))
    assert torch.equal(a.w, b.w) and a.history == b.history
    assert not torch.equal(a.w, c.w)
    assert len(a.history) == 2 * 2 * 4 and {r["step"] for r in a.history} == set(range(16))


def test_every_clean_pass_runs_before_the_first_step_and_the_result_is_that_of_per_batch_passes(monkeypatch):
    """``cache_clean="run"`` computes every batch's clean pass once, before the first step (on CUDA they overlap
    the artifacts' loading); ``"batch"`` one per step. Same perturbation and history."""
    x, attrs = data(9)
    events: list[str] = []
    clean_pass, step = interruption._Stage1.clean_pass, interruption._Stage1.step

    def logged_clean_pass(self, batch, *args):
        if batch not in self.cache:
            events.append(f"clean {batch}")
        return clean_pass(self, batch, *args)

    def logged_step(self, epoch, batch, *args):
        events.append(f"step {epoch}.{batch}")
        return step(self, epoch, batch, *args)

    monkeypatch.setattr(interruption._Stage1, "clean_pass", logged_clean_pass)
    monkeypatch.setattr(interruption._Stage1, "step", logged_step)
    whole_run = run_interruption(standins(), x, attrs, cfg())
    assert events == ["clean 0", "clean 1", "clean 2", *(f"step {e}.{b}" for e in range(2) for b in range(3))]
    events.clear()
    per_batch = run_interruption(standins(), x, attrs, cfg(cache_clean="batch"))
    assert events == [e for epoch in range(2) for b in range(3) for e in (f"step {epoch}.{b}", f"clean {b}")]
    assert torch.equal(whole_run.w, per_batch.w) and whole_run.history == per_batch.history


@pytest.mark.parametrize(("every", "stop_at", "resume_from"), [("batch", 17, 16), ("epoch", 13, 12)])
def test_resume_gives_the_uninterrupted_result(tmp_path, every, stop_at, resume_from):
    """3 batches x 4 steps per epoch; interrupted in epoch 1 (mid-epoch for per-batch checkpoints)."""
    x, attrs = data(9)
    full = run_interruption(standins(), x, attrs, cfg(epochs=3))
    path = tmp_path / "stage1.pt"

    def interrupt(step, metrics):
        assert isinstance(metrics["epoch"], float)
        if step == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_interruption(standins(), x, attrs, cfg(epochs=3, checkpoint_every=every), checkpoint_path=path,
                         callback=interrupt)
    assert path.exists() and not list(tmp_path.glob("*.tmp"))
    seen = []
    resumed = run_interruption(standins(), x, attrs, cfg(epochs=3, checkpoint_every=every), checkpoint_path=path,
                               callback=lambda step, m: seen.append(step))
    assert seen[0] == resume_from and seen[-1] == len(full.history) - 1 == 35
    assert torch.equal(resumed.w, full.w)
    assert resumed.history == full.history


def test_resume_refuses_a_checkpoint_with_other_settings(tmp_path):
    x, attrs = data()
    path = tmp_path / "stage1.pt"
    run_interruption(standins(), x, attrs, cfg(epochs=1), checkpoint_path=path)
    with pytest.raises(ValueError, match="step_size"):
        run_interruption(standins(), x, attrs, cfg(epochs=2, step_size=2e-3), checkpoint_path=path)
    longer = run_interruption(standins(), x, attrs, cfg(epochs=2), checkpoint_path=path)
    assert torch.equal(longer.w, run_interruption(standins(), x, attrs, cfg(epochs=2)).w)


def test_bad_inputs_are_named():
    x, attrs = data()
    with pytest.raises(ValueError, match="attrs40"):
        run_interruption(standins(), x, attrs[:, :5], cfg())
    with pytest.raises(ValueError, match="expect other sizes"):
        run_interruption(standins(), data(size=8)[0], attrs, cfg())
    with pytest.raises(ValueError, match="targets"):
        cfg(targets="some")


def test_tiny_real_victims_run_in_the_epsilon_ball():
    from tsdf_pipeline.models.attentiongan import AttentionGANGenerator
    from tsdf_pipeline.models.attgan import AttGANGenerator
    from tsdf_pipeline.models.hisd import HiSDGenerator
    from tsdf_pipeline.models.stargan import StarGANGenerator
    from tsdf_pipeline.models.victims import make_victim

    torch.manual_seed(0)
    hisd = {"new_size": 32, "style_dim": 16, "noise_dim": 8, "encoder": [8, 16, 16], "decoder": [16, 16, 8],
            "extractors": [8, 16, 16], "translators": [8, 8, 8], "mappers_pre": [16, 16], "mappers_post": [16, 16]}
    victims = [
        make_victim("stargan", StarGANGenerator(conv_dim=8, c_dim=5, repeat_num=1), image_size=32),
        make_victim("attentiongan", AttentionGANGenerator(conv_dim=8, c_dim=5, repeat_num=1), image_size=32),
        make_victim("attgan", AttGANGenerator(enc_dim=8, enc_layers=3, dec_dim=8, dec_layers=3, n_attrs=13,
                                              img_size=32)),
        make_victim("hisd", HiSDGenerator(**hisd), reference=torch.rand(1, 3, 32, 32) * 2 - 1),
    ]
    x, attrs = data(4, size=32)
    result = run_interruption(victims, x, attrs, cfg(epochs=1, batch_size=2))
    assert result.w.shape == (1, 3, 32, 32) and result.w.abs().max() <= 0.05
    assert len(result.history) == 8
    last = result.history[-1]
    weights = [last[f"weight/{v.name}"] for v in victims]
    assert sum(weights) == pytest.approx(1.0, abs=1e-5)
    assert all(torch.isfinite(torch.tensor(list(r.values()), dtype=torch.float64)).all() for r in result.history)


def record_cudnn_autotune(monkeypatch: pytest.MonkeyPatch, module: object) -> list[torch.device]:
    """Replace ``module.cudnn_autotune`` with a context that records the devices it is entered with."""
    entered: list[torch.device] = []

    @contextlib.contextmanager
    def recording(device: torch.device) -> Iterator[None]:
        entered.append(device)
        yield

    monkeypatch.setattr(module, "cudnn_autotune", recording)
    return entered


def test_cudnn_autotune_is_scoped_to_cuda_runs():
    before = torch.backends.cudnn.benchmark
    with cudnn_autotune(torch.device("cpu")):
        assert torch.backends.cudnn.benchmark == before
    with pytest.raises(RuntimeError), cudnn_autotune(torch.device("cuda")):
        assert torch.backends.cudnn.benchmark
        raise RuntimeError("the loop failed")
    assert torch.backends.cudnn.benchmark == before
