"""The shared GAN training loop: seeding, fine-tuning start, checkpoint/resume, logging, NaN guard, samples.

Layout of ``out_dir``:

* ``train_state.pt``: full training state (models, EMA, optimisers, step, RNG states, sampler order, loss
  history), written atomically every ``checkpoint_every`` iterations and at the end;
* ``generator.pt`` / ``discriminator.pt``: latest models in the official checkpoint wrappers;
* ``samples/<step>.png``: sample grids every ``sample_every`` iterations.

A run started again on the same ``out_dir`` (``resume=True``) continues from ``train_state.pt``; on CPU the
result equals that of an uninterrupted run with the same seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.utils import save_image
from tqdm.auto import tqdm

from tsdf_pipeline.devices import resolve_device
from tsdf_pipeline.training.base import ArchTrainer, atomic_save
from tsdf_pipeline.training.config import RUNTIME_FIELDS, TrainConfig
from tsdf_pipeline.training.dataset import BatchSampler, TensorFaceDataset

STATE_FORMAT = "tsdf_pipeline.train_state/1"
STATE_FILE = "train_state.pt"
GENERATOR_FILE = "generator.pt"
DISCRIMINATOR_FILE = "discriminator.pt"
SAMPLES_DIR = "samples"

StepCallback = Callable[[int, dict[str, float], "Path | None"], None]


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN/Inf. ``step`` (1-based iteration), ``term`` and ``checkpoint`` (the last
    training state written before it, or None) say where to look and where to restart from."""

    def __init__(self, step: int, term: str, checkpoint: Path | None) -> None:
        where = f"last good checkpoint: {checkpoint}" if checkpoint else "no checkpoint was written before it"
        super().__init__(f"non-finite loss {term!r} at step {step} ({where})")
        self.step, self.term, self.checkpoint = step, term, checkpoint


@dataclass
class TrainResult:
    """Outcome of :func:`train`. ``history``: ``(step, {loss term: value})`` at every logged step;
    ``generator_config``: keyword arguments for ``load_generator(arch, generator_path, **generator_config)``."""

    arch: str
    steps: int
    generator_path: Path
    discriminator_path: Path
    state_path: Path
    generator_config: dict[str, Any]
    sample_paths: list[Path] = field(default_factory=list)
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    resumed_from: int | None = None


class NonFiniteGuard:
    """Tracks, on the device and without host syncs, the first step at which each loss term was non-finite."""

    def __init__(self) -> None:
        self.first_bad: dict[str, Tensor] = {}

    def update(self, step: int, losses: dict[str, Tensor]) -> None:
        for name, value in losses.items():
            first = self.first_bad.get(name)
            if first is None:
                first = torch.full((), -1, dtype=torch.int64, device=value.device)
            bad = ~torch.isfinite(value)
            self.first_bad[name] = torch.where(bad & (first < 0), step, first)

    def check(self, checkpoint: Path | None) -> None:
        """Raise :class:`NonFiniteLossError` for the earliest non-finite step (one host sync), naming the first
        term (in the trainer's loss order) that was non-finite then."""
        if not self.first_bad:
            return
        names = list(self.first_bad)
        steps = torch.stack([self.first_bad[n] for n in names]).tolist()
        bad = [s for s in steps if s >= 0]
        if bad:
            step = min(bad)
            raise NonFiniteLossError(step, names[steps.index(step)], checkpoint)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy and python RNG states, as weights-only-loadable values."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "python": {"version": py_version, "internal": list(py_internal), "gauss_next": py_gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


def _save_state(trainer: ArchTrainer, sampler: BatchSampler, path: Path, *, step: int, history: list,
                last: dict[str, Tensor]) -> None:
    atomic_save({
        "format": STATE_FORMAT,
        "arch": trainer.arch,
        "step": step,
        "config": trainer.config.resume_settings(),
        "dataset": trainer.dataset.fingerprint(),
        "models": {name: m.state_dict() for name, m in trainer.modules().items()},
        "optimizers": {name: opt.state_dict() for name, opt in trainer.optimizers.items()},
        "sampler": sampler.state_dict(),
        "rng": rng_state(),
        "history": [[s, dict(v)] for s, v in history],
        "last_losses": {k: v.detach().float().cpu() for k, v in last.items()},
    }, path)


def _load_state(trainer: ArchTrainer, sampler: BatchSampler, path: Path) -> tuple[int, list, dict[str, Tensor]]:
    """Restore a training state written by :func:`_save_state`; return ``(step, history, last losses)``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read the training state ({exc}); delete it to start over") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: not a training state of this project (expected format {STATE_FORMAT!r})")
    if state["arch"] != trainer.arch:
        raise ValueError(f"{path}: training state is for arch {state['arch']!r}, not {trainer.arch!r}")
    saved, current = state["config"], trainer.config.resume_settings()
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if changed:
        diff = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise ValueError(f"{path}: cannot resume, the config differs from the saved run ({diff}); "
                         f"only {sorted(RUNTIME_FIELDS)} may change, or use a new out_dir")
    if state["dataset"] != trainer.dataset.fingerprint():
        raise ValueError(f"{path}: cannot resume, the dataset differs from the one the run started with "
                         f"([N, H, W, sum(images), sum(attrs)] {state['dataset']} vs {trainer.dataset.fingerprint()})")
    for name, module in trainer.modules().items():
        module.load_state_dict(state["models"][name])
    for name, opt in trainer.optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    sampler.load_state_dict(state["sampler"])
    set_rng_state(state["rng"])
    last = {k: v.to(trainer.device) for k, v in state["last_losses"].items()}
    return int(state["step"]), [(int(s), dict(v)) for s, v in state["history"]], last


def _check_inputs(config: TrainConfig, dataset: TensorFaceDataset) -> None:
    if dataset.image_size != (config.image_size, config.image_size):
        raise ValueError(f"dataset images are {dataset.image_size[0]}x{dataset.image_size[1]} but "
                         f"config.image_size is {config.image_size}")
    for name in ("num_iters", "batch_size", "n_samples", "log_every"):
        if getattr(config, name) <= 0:
            raise ValueError(f"config.{name} must be > 0, got {getattr(config, name)}")
    for name in ("checkpoint_every", "sample_every"):
        if getattr(config, name) < 0:
            raise ValueError(f"config.{name} must be >= 0 (0 disables it), got {getattr(config, name)}")
    if not 0 <= config.discriminator_warmup_iters < config.num_iters:
        raise ValueError(f"config.discriminator_warmup_iters must be in [0, num_iters={config.num_iters}) (the "
                         f"D-only iterations count towards num_iters), got {config.discriminator_warmup_iters}")


def _every(step: int, interval: int) -> bool:
    return interval > 0 and step % interval == 0


def train(
    trainer_cls: type[ArchTrainer],
    dataset: TensorFaceDataset,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    init_checkpoint: str | Path | None = None,
    init_discriminator: str | Path | None = None,
    callback: StepCallback | None = None,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Train ``trainer_cls`` on ``dataset`` for ``config.num_iters`` iterations (see module docstring).

    Seeds python/numpy/torch with ``config.seed`` before building the models. ``init_checkpoint`` /
    ``init_discriminator`` (official formats) are the fine-tuning start; they are ignored when resuming.
    ``callback(step, losses, samples_path)`` runs at every ``log_every``-th step and after every sample grid.
    """
    _check_inputs(config, dataset)
    dev = resolve_device(device if device is not None else config.device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path, gen_path, dis_path = out / STATE_FILE, out / GENERATOR_FILE, out / DISCRIMINATOR_FILE

    seed_everything(config.seed)
    trainer = trainer_cls(config, dataset, dev)
    trainer.to_device()
    sampler = BatchSampler(trainer.sampling_pools(), config.batch_size, config.seed)
    start, history, resumed_from = 0, [], None
    last: dict[str, Tensor] = {}
    if config.resume and state_path.exists():
        start, history, last = _load_state(trainer, sampler, state_path)
        resumed_from = start
    elif init_checkpoint is not None:
        trainer.load_init(init_checkpoint, init_discriminator)
    elif init_discriminator is not None:
        raise ValueError("init_discriminator given without init_checkpoint (the generator to fine-tune)")

    n = min(config.n_samples, len(dataset))
    fixed_images, fixed_attrs = dataset.images[:n], dataset.attrs40[:n]
    guard = NonFiniteGuard()
    last_good = state_path if resumed_from is not None else None
    sample_paths: list[Path] = []
    sync_every_step = dev.type != "cuda"

    with tqdm(total=config.num_iters, initial=start, desc=f"train {trainer.arch}", disable=not config.progress,
              dynamic_ncols=True) as bar:
        for step in range(start + 1, config.num_iters + 1):
            trainer.set_step_lr(step)
            losses = trainer.train_step(step, sampler, update_generator=step > config.discriminator_warmup_iters)
            guard.update(step, losses)
            last.update(losses)
            final = step == config.num_iters
            log_now, sample_now = _every(step, config.log_every) or final, _every(step, config.sample_every)
            checkpoint_now = _every(step, config.checkpoint_every) or final
            if sync_every_step or log_now or sample_now or checkpoint_now:
                guard.check(last_good)
            sample_path = None
            if sample_now:
                sample_path = out / SAMPLES_DIR / f"{step:08d}.png"
                sample_path.parent.mkdir(exist_ok=True)
                grid = trainer.sample_grid(fixed_images, fixed_attrs)
                save_image((grid + 1) / 2, sample_path)
                sample_paths.append(sample_path)
            if log_now or sample_now:
                values = dict(zip(last, torch.stack([v.float() for v in last.values()]).tolist(), strict=True))
                history.append((step, values))
                bar.set_postfix({k: f"{v:.3g}" for k, v in values.items()}, refresh=False)
                if callback is not None:
                    callback(step, values, sample_path)
            if checkpoint_now:
                trainer.save_generator(gen_path)
                trainer.save_discriminator(dis_path)
                _save_state(trainer, sampler, state_path, step=step, history=history, last=last)
                last_good = state_path
            bar.update(1)
    return TrainResult(
        arch=trainer.arch, steps=max(start, config.num_iters), generator_path=gen_path,
        discriminator_path=dis_path, state_path=state_path, generator_config=trainer.generator_config(),
        sample_paths=sample_paths, history=history, resumed_from=resumed_from,
    )
