"""Shared GAN training loop: resume, checkpoints, fine-tuning start, NaN guard, callbacks (tiny models, CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tsdf_pipeline.data.attributes import CELEBA_ATTRS
from tsdf_pipeline.models import load_generator
from tsdf_pipeline.training import (
    NonFiniteLossError,
    TensorFaceDataset,
    TrainConfig,
    make_config,
    train_gan,
)
from tsdf_pipeline.training.dataset import BatchSampler
from tsdf_pipeline.training.stargan import StarGANTrainer

SIZE = 16
TINY: dict[str, dict[str, Any]] = {
    "stargan": {"g_conv_dim": 8, "d_conv_dim": 8, "g_repeat_num": 1, "d_repeat_num": 2},
    "attentiongan": {"g_conv_dim": 8, "d_conv_dim": 8, "g_repeat_num": 1, "d_repeat_num": 2},
    "attgan": {"enc_dim": 8, "dec_dim": 8, "enc_layers": 3, "dec_layers": 3, "dis_dim": 8, "dis_fc_dim": 16,
               "dis_layers": 3},
    "hisd": {"generator": {"style_dim": 16, "noise_dim": 8, "encoder": [8, 16], "decoder": [16, 8],
                           "extractors": [8, 16, 16], "translators": [8, 8], "mappers_pre": [16, 16],
                           "mappers_post": [16, 16]},
             "dis_channels": (8, 16, 16)},
}


def tiny_dataset(n: int = 24, seed: int = 0) -> TensorFaceDataset:
    """Random images with random attributes; exactly one of black/blond/brown hair per image (cycled)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, SIZE, SIZE, generator=g) * 2 - 1
    attrs = (torch.rand(n, 40, generator=g) > 0.5).float()
    hair = [CELEBA_ATTRS.index(h) for h in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")]
    attrs[:, hair] = 0
    attrs[torch.arange(n), torch.tensor(hair[:3]).repeat(n)[:n]] = 1
    return TensorFaceDataset(images, attrs)


def tiny_config(arch: str, **overrides: Any) -> TrainConfig:
    settings = {"image_size": SIZE, "batch_size": 4, "num_iters": 4, "checkpoint_every": 0, "sample_every": 0,
                "log_every": 1, "n_samples": 2, "progress": False, "device": "cpu", **TINY[arch], **overrides}
    return make_config(arch, **settings)


def states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def read_state(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


class Interrupt(Exception):
    """Raised from a callback to kill a run."""


@pytest.mark.parametrize(("arch", "extra"), [("stargan", {"n_critic": 2}), ("attgan", {"n_d": 2}), ("hisd", {}),
                                             ("hisd", {"optimistic": True})])
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path: Path, arch: str, extra: dict) -> None:
    ds = tiny_dataset()
    cfg = tiny_config(arch, num_iters=8, checkpoint_every=3, log_every=1, **extra)
    full = train_gan(arch, ds, cfg, tmp_path / "full")

    def kill_at_5(step: int, losses: dict[str, float], samples: Path | None) -> None:
        if step == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_gan(arch, ds, cfg, tmp_path / "killed", callback=kill_at_5)
    assert read_state(tmp_path / "killed" / "train_state.pt")["step"] == 3
    resumed = train_gan(arch, ds, cfg, tmp_path / "killed")

    assert resumed.resumed_from == 3 and resumed.steps == 8
    a, b = read_state(full.state_path), read_state(resumed.state_path)
    assert a["models"].keys() == b["models"].keys()
    for name in a["models"]:
        assert states_equal(a["models"][name], b["models"][name]), name
    assert full.history == resumed.history  # losses of steps 1-3 come from the state, 4-8 recomputed
    assert states_equal(load_generator(arch, full.generator_path, **full.generator_config).state_dict(),
                        load_generator(arch, resumed.generator_path, **resumed.generator_config).state_dict())


def test_resume_refuses_a_changed_objective(tmp_path: Path) -> None:
    ds = tiny_dataset()
    train_gan("stargan", ds, tiny_config("stargan", num_iters=1), tmp_path)
    with pytest.raises(ValueError, match=r"lambda_rec: 10\.0 -> 5\.0"):
        train_gan("stargan", ds, tiny_config("stargan", num_iters=2, lambda_rec=5.0), tmp_path)
    more = train_gan("stargan", ds, tiny_config("stargan", num_iters=2), tmp_path)  # num_iters may grow
    assert more.resumed_from == 1 and more.steps == 2


@pytest.mark.parametrize("arch", ["stargan", "attentiongan", "attgan", "hisd"])
def test_saved_generator_round_trips_through_load_generator(tmp_path: Path, arch: str) -> None:
    result = train_gan(arch, tiny_dataset(), tiny_config(arch, num_iters=2), tmp_path)
    state = read_state(result.state_path)["models"]
    loaded = load_generator(arch, result.generator_path, **result.generator_config)
    assert not loaded.training
    # The official wrapper's inference weights: HiSD 'gen_test' = the EMA generator.
    assert states_equal(loaded.state_dict(), state["G_ema" if arch == "hisd" else "G"])
    if arch == "hisd":
        gen = load_generator(arch, result.generator_path, wrapper_key="gen", **result.generator_config)
        assert states_equal(gen.state_dict(), state["G"])
        assert not states_equal(state["G"], state["G_ema"])


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_fine_tuning_starts_from_the_loaded_generator_and_discriminator(tmp_path: Path) -> None:
    base = tiny_dataset(n=4)  # one batch = the whole set, so batch means do not depend on the draw order
    # Mirror-symmetric images: StarGAN's random horizontal flip (upstream data_loader) leaves the batch unchanged.
    ds = TensorFaceDataset((base.images + base.images.flip(3)) / 2, base.attrs40)
    pre = train_gan("stargan", ds, tiny_config("stargan", num_iters=5, n_critic=1, seed=1), tmp_path / "pre")
    cfg = tiny_config("stargan", num_iters=1, sample_every=1)  # step 1 updates D only (n_critic 5)
    logged: list[dict[str, float]] = []
    tuned = train_gan("stargan", ds, cfg, tmp_path / "tuned", init_checkpoint=pre.generator_path,
                      init_discriminator=pre.discriminator_path, callback=lambda s, losses, p: logged.append(losses))
    scratch = train_gan("stargan", ds, cfg, tmp_path / "scratch")

    loaded_g = load_generator("stargan", pre.generator_path, **pre.generator_config)
    assert states_equal(read_state(tuned.state_path)["models"]["G"], loaded_g.state_dict())
    # First-step generator outputs: the step-1 sample grid equals the loaded generator's grid.
    reference = StarGANTrainer(cfg, ds, torch.device("cpu"))
    reference.generator.load_state_dict(loaded_g.state_dict())
    expected = tmp_path / "expected.png"
    from torchvision.utils import save_image
    save_image((reference.sample_grid(ds.images[:2], ds.attrs40[:2]) + 1) / 2, expected)
    assert np.array_equal(_png(tuned.sample_paths[0]), _png(expected))
    assert not np.array_equal(_png(scratch.sample_paths[0]), _png(expected))
    # First-step discriminator: D/loss_real = -mean D_loaded(batch) before its update.
    pre_d = read_state(pre.state_path)["models"]["D"]
    reference.discriminator.load_state_dict(pre_d)
    with torch.no_grad():
        d_real = -reference.discriminator(ds.images)[0].mean().item()
    assert logged[0]["D/loss_real"] == pytest.approx(d_real, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("arch, overrides", [("stargan", {}), ("attentiongan", {}), ("attgan", {}), ("hisd", {}),
                                             ("hisd", {"ref_w": 1.0})])
def test_discriminator_warmup_updates_only_the_discriminator(arch: str, overrides: dict) -> None:
    from tsdf_pipeline.training import TRAINERS

    torch.manual_seed(0)
    trainer = TRAINERS[arch](tiny_config(arch, **overrides), tiny_dataset(), torch.device("cpu"))
    sampler = BatchSampler(trainer.sampling_pools(), trainer.config.batch_size, seed=0)
    generators = {"G": trainer.generator, "G_ema": trainer.generator_ema}  # G_ema: HiSD's gen_test
    frozen = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in generators.items()
              if m is not None}
    d_before = {k: v.clone() for k, v in trainer.discriminator.state_dict().items()}
    for step in range(1, 7):  # includes StarGAN's (n_critic 5) and AttGAN's (n_d + 1 = 6) generator steps
        losses = trainer.train_step(step, sampler, update_generator=False)
        assert losses and all(k.startswith("D/") for k in losses)
    for name, state in frozen.items():
        assert states_equal(generators[name].state_dict(), state), name  # parameters and BN buffers
    assert not trainer.optimizers["G"].state  # no G step, no Adam moments
    assert not states_equal(trainer.discriminator.state_dict(), d_before)


def test_discriminator_warmup_iterations_count_towards_num_iters(tmp_path: Path) -> None:
    cfg = tiny_config("stargan", num_iters=5, n_critic=1, discriminator_warmup_iters=3)
    result = train_gan("stargan", tiny_dataset(), cfg, tmp_path)
    generator_terms = [any(k.startswith("G/") for k in values) for _, values in result.history]
    assert generator_terms == [False, False, False, True, True]
    for bad in (5, -1):
        with pytest.raises(ValueError, match=r"discriminator_warmup_iters must be in \[0, num_iters=5\)"):
            train_gan("stargan", tiny_dataset(), tiny_config("stargan", num_iters=5, discriminator_warmup_iters=bad),
                      tmp_path / str(bad))


def test_non_finite_loss_raises_naming_step_term_and_last_checkpoint(tmp_path: Path) -> None:
    # A huge D learning rate blows D's weights up at step 1; step 2's losses overflow.
    cfg = tiny_config("stargan", num_iters=6, checkpoint_every=1, d_lr=1e35)
    with pytest.raises(NonFiniteLossError) as info:
        train_gan("stargan", tiny_dataset(), cfg, tmp_path)
    err = info.value
    assert err.step == 2 and err.term.startswith("D/")
    assert f"step {err.step}" in str(err) and repr(err.term) in str(err) and str(err.checkpoint) in str(err)
    assert err.checkpoint == tmp_path / "train_state.pt"
    assert read_state(err.checkpoint)["step"] == 1


def test_callback_logging_samples_and_checkpoints(tmp_path: Path) -> None:
    calls: list[tuple[int, dict[str, float], Path | None]] = []
    cfg = tiny_config("attentiongan", num_iters=6, log_every=2, sample_every=3, checkpoint_every=4)
    result = train_gan("attentiongan", tiny_dataset(), cfg, tmp_path, callback=lambda *a: calls.append(a))
    assert [c[0] for c in calls] == [2, 3, 4, 6]
    assert [c[2] is not None for c in calls] == [False, True, False, True]
    assert all(isinstance(v, float) for c in calls for v in c[1].values())
    assert "G/loss_rec" in calls[-1][1] and "G/loss_rec" not in calls[0][1]  # G steps every 5th iteration
    grid = _png(result.sample_paths[-1])
    assert result.sample_paths[-1] == tmp_path / "samples" / "00000006.png"
    assert grid.shape == (2 * SIZE, 6 * SIZE, 3)  # 2 samples x (input + 5 edits)
    assert [h[0] for h in result.history] == [2, 3, 4, 6]
    assert read_state(result.state_path)["step"] == 6


def test_dataset_and_sampler_validation_and_state() -> None:
    with pytest.raises(ValueError, match="attrs40 must hold only 0 and 1"):
        TensorFaceDataset(torch.zeros(2, 3, 4, 4), -torch.ones(2, 40))
    with pytest.raises(ValueError, match=r"in \[-1,1\]"):
        TensorFaceDataset(torch.full((2, 3, 4, 4), 2.0), torch.zeros(2, 40))
    with pytest.raises(ValueError, match="larger than these sampling pools"):
        BatchSampler({"all": torch.arange(3)}, batch_size=4, seed=0)
    a = BatchSampler({"all": torch.arange(10)}, batch_size=4, seed=3)
    first = [a.next("all") for _ in range(3)]
    assert all(len(torch.unique(b)) == 4 for b in first)
    assert len(torch.unique(torch.cat(first[:2]))) == 8  # no repeats within a pass (last 2 rows dropped)
    state = a.state_dict()
    b = BatchSampler({"all": torch.arange(10)}, batch_size=4, seed=99)
    b.load_state_dict(state)
    assert all(torch.equal(a.next("all"), b.next("all")) for _ in range(5))


def test_optimistic_steps_feed_adam_twice_the_gradient_minus_the_previous_one() -> None:
    from types import SimpleNamespace

    from tsdf_pipeline.training.hisd import HiSDTrainer

    grads = [torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0]), torch.tensor([-1.0, 1.0])]
    fed = [grads[0], 2 * grads[1] - grads[0], 2 * grads[2] - grads[1]]
    p, q = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    optimistic, plain = torch.optim.Adam([p], lr=0.1, betas=(0.0, 0.99)), torch.optim.Adam([q], lr=0.1, betas=(0.0, 0.99))
    trainer = SimpleNamespace(config=SimpleNamespace(optimistic=True))
    for g, f in zip(grads, fed, strict=True):
        p.grad, q.grad = g.clone(), f.clone()
        HiSDTrainer._step(trainer, optimistic)
        plain.step()
        torch.testing.assert_close(p.detach(), q.detach())
    torch.testing.assert_close(optimistic.state_dict()["state"][0]["previous_grad"], grads[-1])
