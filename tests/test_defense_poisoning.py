"""TSDF stage 2: mask, ε-ball, gradient flow per term and detector, release mode, δ_best, determinism, resume."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.test_defense_interruption import record_cudnn_autotune
from tsdf_pipeline.defense import poisoning
from tsdf_pipeline.defense.detector_losses import (
    feature_inversion_terms,
    fused_feature_size,
    intensity_mask,
    output_suppression_terms,
    prior_selection,
)
from tsdf_pipeline.defense.interruption import InterruptionConfig
from tsdf_pipeline.defense.poisoning import DetectorPoisoner, PoisoningConfig, run_poisoning
from tsdf_pipeline.defense.state import make_generator
from tsdf_pipeline.models.detectors import build_detector

SIZE = 32  # the smallest side MTCNN's pyramid handles with two levels
CPU = torch.device("cpu")


@dataclass
class Targets:
    names: list[str]
    cond: torch.Tensor


class StandInVictim(nn.Module):
    """Victim-interface stand-in: conv feature at S/2 and a conditioned output (one "train" target)."""

    def __init__(self, name: str, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.name, self.arch, self.image_size = name, "stargan", SIZE
        self.enc = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.dec = nn.Conv2d(5, 3, 3, padding=1)
        self.requires_grad_(False)

    def targets(self, attrs40: torch.Tensor, mode: str = "all") -> Targets:
        return Targets(["recon"], attrs40[:, :1].float().unsqueeze(0))

    def feature(self, x: torch.Tensor, t: Targets) -> torch.Tensor:
        return torch.tanh(self.enc(x)).unsqueeze(0)

    def edit_with_feature(self, x: torch.Tensor, t: Targets) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.feature(x, t)
        c = t.cond[0].view(-1, 1, 1, 1).expand(-1, 1, *feat.shape[-2:])
        h = F.interpolate(torch.cat([feat[0], c], 1), size=x.shape[-2:], mode="nearest")
        return torch.tanh(self.dec(h)).unsqueeze(0), feat

    def edit(self, x: torch.Tensor, t: Targets) -> torch.Tensor:
        return self.edit_with_feature(x, t)[0]


def detectors(*names: str, release_compat: bool = False) -> dict[str, nn.Module]:
    torch.manual_seed(11)
    return {n: build_detector(n, release_compat=release_compat).requires_grad_(False) for n in names}


def images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5)) * 2 - 1


def w_init(scale: float = 0.05) -> torch.Tensor:
    return (torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(6)) * 2 - 1) * scale


def poisoner(dets: dict, **kw) -> DetectorPoisoner:
    return DetectorPoisoner(dets, PoisoningConfig(device="cpu", **kw), SIZE, CPU)


def grad_of(term: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    if not term.requires_grad:
        return torch.zeros_like(delta)
    (grad,) = torch.autograd.grad(term, delta, retain_graph=True, allow_unused=True)
    return torch.zeros_like(delta) if grad is None else grad


def test_intensity_mask_matches_the_formula():
    w0 = torch.tensor([0.0, 0.01, -0.0399, 0.04, -0.05, 0.02])
    expected = torch.tensor([1.0, math.exp(-0.05), math.exp(-5 * 0.0399), 0.0, 0.0, math.exp(-0.1)])
    torch.testing.assert_close(intensity_mask(w0, 5.0, 0.04), expected)
    assert fused_feature_size(256) == 64 and fused_feature_size(128) == 32 and fused_feature_size(32) == 8


def test_delta_lives_only_where_the_interruption_is_weak_and_w2_stays_in_the_eps_ball():
    x, w0 = images(), w_init()
    p = poisoner(detectors("mtcnn", "retinaface"), steps=4, lr=0.5)
    out = p.poison(x, w0, make_generator(0, "t"))
    strong = (w0.abs() >= 0.04).expand_as(out.delta)
    assert strong.any() and (~strong).any()
    assert torch.all(out.delta[strong] == 0) and out.delta[~strong].abs().max() > 0.01
    torch.testing.assert_close(out.mask, intensity_mask(w0, 5.0, 0.04))
    assert out.w.shape == (2, 3, SIZE, SIZE) and out.w.abs().max() <= 0.05
    torch.testing.assert_close(out.w, (w0 + out.delta).clamp(-0.05, 0.05))
    assert torch.equal(out.w[strong], w0.expand_as(out.w)[strong])


def test_universal_delta_optimises_one_shared_delta():
    out = poisoner(detectors("mtcnn"), steps=2, universal_delta=True).poison(images(), w_init(), make_generator(0, "t"))
    assert out.delta.shape == out.w.shape == (1, 3, SIZE, SIZE)


def test_loss_formulas_by_hand():
    clean = [torch.tensor([1.0, -3.0, 0.5, 0.5]).view(1, 4, 1, 1)]
    noise = torch.randn(1, 4, 1, 1, generator=make_generator(0, "hand"))
    for has_boxes, nu, emph, suppress in ((True, 0.2, 2.0, 0.0), (False, 0.5, 4.0, 2.0)):
        adv = [torch.full((1, 4, 1, 1), 0.5)]
        gen = make_generator(0, "hand")
        terms = feature_inversion_terms(adv, clean, torch.tensor([has_boxes]), nu_boxes=0.2, nu_no_boxes=0.5,
                                        level_weights=[3.0], last_level_only=False, generator=gen)
        target = -clean[0] + nu * noise
        target[0, 1] *= emph  # |-3| > mean |F_clean| = 1.25: the only emphasised entry
        torch.testing.assert_close(terms["feature/level0"], 3.0 * F.mse_loss(adv[0], target))
        torch.testing.assert_close(terms["feature"], terms["feature/level0"] + suppress * 0.5)

    scores = torch.tensor([[0.9, 0.1, 0.6]])
    boxes = torch.tensor([[[0.0, 0.0, 16.0, 8.0], [1.0, 1.0, 2.0, 2.0], [8.0, 8.0, 16.0, 16.0]]])
    selected = prior_selection(scores, 0.5, 0)
    assert selected.tolist() == [[True, False, True]] and prior_selection(scores, 0.95, 1).tolist() == [[1, 0, 0]]
    score_mse, box_l1 = output_suppression_terms(scores, boxes, selected, (16, 32))
    torch.testing.assert_close(score_mse, torch.tensor((0.81 + 0.36) / 2))
    # normalised (W=32, H=16): box 0 is 0.5 x 0.5 -> |half-size - 0.001| per coordinate; box 2 is 0.25 x 0.5
    torch.testing.assert_close(box_l1, torch.tensor(((0.249 + 0.249) + (0.124 + 0.249)) / 2 / 2))


@pytest.mark.parametrize("name", ["s3fd", "dsfd", "retinaface", "mtcnn"])
def test_corrected_mode_every_term_sends_gradient_to_delta(name):
    x, w0 = images(), w_init()
    p = poisoner(detectors(name))
    ref = p.clean_reference(x, make_generator(0, "ref"))
    no_boxes = dataclasses.replace(ref, has_boxes=torch.zeros(2, dtype=torch.bool))
    delta = torch.zeros_like(x, requires_grad=True)
    terms = p.losses((x + w0 + delta).clamp(-1, 1), no_boxes, make_generator(0, "loss"))
    expected = [f"feature/level{i}" for i in range(3)] + [f"feature/suppress{i}" for i in range(3)]
    expected += [f"output/score/{name}", f"output/box/{name}"] + (["output/small_anchor/s3fd"] if name == "s3fd" else [])
    assert ("output/small_anchor/s3fd" in terms) == (name == "s3fd")
    for key in expected:
        assert grad_of(terms[key], delta).abs().sum() > 0, key


def test_release_compat_drops_retinaface_gradient_score_box_gradient_and_early_levels():
    x, w0 = images(), w_init()
    retina = poisoner(detectors("retinaface", release_compat=True), release_compat=True)
    delta = torch.zeros_like(x, requires_grad=True)
    terms = retina.losses((x + w0 + delta).clamp(-1, 1), retina.clean_reference(x, make_generator(0, "r")),
                          make_generator(0, "l"))
    assert not any(t.requires_grad for t in terms.values())

    p = poisoner(detectors("s3fd", "retinaface", release_compat=True), release_compat=True)
    terms = p.losses((x + w0 + delta).clamp(-1, 1), p.clean_reference(x, make_generator(0, "r")),
                     make_generator(0, "l"))
    for name in ("s3fd", "retinaface"):
        assert not terms[f"output/score/{name}"].requires_grad and not terms[f"output/box/{name}"].requires_grad
    assert grad_of(terms["output/small_anchor/s3fd"], delta).abs().sum() > 0
    assert grad_of(terms["feature/level0"], delta).abs().sum() > 0  # computed, but not counted:
    torch.testing.assert_close(terms["feature"], terms["feature/level2"] + terms["feature/suppress2"])
    torch.testing.assert_close(grad_of(terms["feature"], delta),
                               grad_of(terms["feature/level2"] + terms["feature/suppress2"], delta))


def test_projections_are_fixed_in_corrected_mode_and_redrawn_in_release_mode():
    x = images()
    dets = detectors("mtcnn")
    a = poisoner(dets).clean_reference(x, make_generator(0, "g", 1)).features
    b = poisoner(dets).clean_reference(x, make_generator(0, "g", 2)).features  # a new instance, other stream
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True)) and a[0].shape[1] == 128
    release = poisoner(dets, release_compat=True)
    gen = make_generator(0, "g")
    a, b = release.clean_reference(x, gen).features, release.clean_reference(x, gen).features
    assert not torch.equal(a[0], b[0])
    normalised = poisoner(dets, fusion="normalized").clean_reference(x, make_generator(0, "g")).features
    assert [f.shape[1] for f in normalised] == [10, 16, 32]


@pytest.mark.parametrize("release_compat", [False, True])
def test_best_delta_is_the_argmin_of_the_output_loss(release_compat):
    x, w0 = images(), w_init()
    p = poisoner(detectors("mtcnn"), steps=6, lr=0.2, release_compat=release_compat)
    out = p.poison(x, w0, make_generator(0, "t"), trace=True)
    best = int(out.best_step)
    assert best == int(out.output_losses.argmin()) and out.output_losses.unique().numel() > 1
    assert torch.equal(out.delta, out.deltas[best])
    torch.testing.assert_close(out.w, (w0 + out.deltas[best]).clamp(-0.05, 0.05))
    if not release_compat:  # the output loss of the selected δ is the recorded minimum (it has no noise)
        ref = p.clean_reference(x, make_generator(0, "r"))
        terms = p.losses((x + w0 + out.delta).clamp(-1, 1), ref, make_generator(0, "l"))
        torch.testing.assert_close(terms["output"], out.output_losses.min())


def config(**kw) -> PoisoningConfig:
    interruption = InterruptionConfig(batch_size=2, device="cpu", progress=False, seed=1, inner_steps=1)
    return PoisoningConfig(**{"steps": 2, "epochs": 2, "seed": 4, "device": "cpu", "interruption": interruption,
                              **kw})


def run(cfg: PoisoningConfig, **kw):
    victims = [StandInVictim("a", 0), StandInVictim("b", 1)]
    attrs = torch.randint(0, 2, (3, 40), generator=torch.Generator().manual_seed(2))
    return run_poisoning(victims, detectors("mtcnn", "retinaface"), images(3), attrs, w_init(), cfg, **kw)


def test_run_is_deterministic_and_stays_in_the_eps_ball():
    first, second = run(config()), run(config())
    assert torch.equal(first.w, second.w) and first.history == second.history
    assert first.w.shape == (1, 3, SIZE, SIZE) and first.w.abs().max() <= 0.05
    assert not torch.equal(first.w, w_init())
    # per batch: 1 feature step, the poisoning record, the end-to-end step; 2 epochs x 2 batches
    assert len(first.history) == 12
    assert "feature/loss" in first.history[0] and "poison/output_best" in first.history[1]
    assert "e2e/loss" in first.history[2]
    assert first.history[1]["poison/output_best"] <= first.history[1]["poison/output_first"]
    other = run(config(seed=5))
    assert not torch.equal(other.w, first.w)


def test_resume_gives_the_uninterrupted_result(tmp_path):
    full = run(config(epochs=2))
    path = tmp_path / "stage2.pt"
    run(config(epochs=1), checkpoint_path=path)
    seen: list[int] = []
    resumed = run(config(epochs=2), checkpoint_path=path, callback=lambda step, metrics: seen.append(step))
    assert seen[0] == 6 and seen[-1] == 11
    assert torch.equal(resumed.w, full.w) and resumed.history == full.history
    with pytest.raises(ValueError, match="other settings"):
        run(config(epochs=2, lr=0.1), checkpoint_path=path)


def test_bad_inputs_are_named():
    victims = [StandInVictim("a", 0)]
    x, attrs = images(2), torch.zeros(2, 40)
    with pytest.raises(ValueError, match=r"\['s3fd'\].*given: \['mtcnn'\]"):
        run_poisoning(victims, detectors("mtcnn"), x, attrs, w_init(), config(detectors=["s3fd"]))
    with pytest.raises(ValueError, match="release_compat"):
        run_poisoning(victims, detectors("retinaface"), x, attrs, w_init(), config(release_compat=True))
    with pytest.raises(ValueError, match="exceeds"):
        run_poisoning(victims, detectors("mtcnn"), x, attrs, w_init(0.2), config())
    with pytest.raises(ValueError, match=r"w1 must be \[1,3,32,32\]"):
        run_poisoning(victims, detectors("mtcnn"), x, attrs, torch.zeros(1, 3, 16, 16), config())
    with pytest.raises(ValueError, match="level_weights"):
        PoisoningConfig(level_weights=(1.0, 2.0))
    assert PoisoningConfig(interruption={"epsilon": 0.03}).interruption.epsilon == 0.03


def test_poisoning_runs_under_cudnn_autotuning(monkeypatch: pytest.MonkeyPatch):
    """As stage 1 (a no-op on the CPU, where this runs)."""
    entered = record_cudnn_autotune(monkeypatch, poisoning)
    run(config(epochs=1, steps=1))
    assert entered == [torch.device("cpu")]
