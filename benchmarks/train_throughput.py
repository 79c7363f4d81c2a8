"""Training throughput (images/s) of each GAN trainer with the upstream model sizes and batch sizes.

Usage::

    python benchmarks/train_throughput.py [--archs stargan attgan ...] [--size PX] [--steps N] [--warmup N]
                                          [--batch-size B] [--device cpu|cuda] [--threads N]

Defaults: 64 px (the demo size) on CPU, 256 px on CUDA (bf16 autocast + channels-last, as in training).
Runs ``train_step`` of each trainer on random images, so no files are written. Throughput =
batch size x timed iterations / time; iterations alternate D and G steps as in training (StarGAN and
AttentionGAN: G every 5th, AttGAN: G every 6th, HiSD: G and D every iteration), so time at least
``n_critic``/``n_d + 1`` iterations (default 10).
"""

from __future__ import annotations

import argparse
import time

import torch

from tsdf_pipeline.data.attributes import CELEBA_ATTRS
from tsdf_pipeline.devices import resolve_device
from tsdf_pipeline.training import TRAINERS, TensorFaceDataset, make_config
from tsdf_pipeline.training.dataset import BatchSampler


def synthetic_dataset(n: int, size: int) -> TensorFaceDataset:
    """``n`` random images whose attributes fill every HiSD tag/attribute pool evenly."""
    images = torch.rand(n, 3, size, size) * 2 - 1
    attrs = (torch.rand(n, 40) > 0.5).float()
    col = {name: i for i, name in enumerate(CELEBA_ATTRS)}
    rows = torch.arange(n)
    attrs[:, col["Bangs"]] = (rows % 2).float()
    attrs[:, col["Eyeglasses"]] = ((rows // 2) % 2).float()
    hair = [col[h] for h in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")]
    attrs[:, hair] = 0
    attrs[rows, torch.tensor(hair[:3])[rows % 3]] = 1
    return TensorFaceDataset(images, attrs)


def measure(arch: str, size: int, batch_size: int | None, *, steps: int, warmup: int,
            device: torch.device) -> tuple[int, float, float]:
    """``(batch size, images/s, seconds per iteration)`` of ``steps`` timed iterations after ``warmup``."""
    overrides = {"image_size": size, "seed": 0}
    if batch_size:
        overrides["batch_size"] = batch_size
    config = make_config(arch, **overrides)
    dataset = synthetic_dataset(max(64, 12 * config.batch_size), size)
    torch.manual_seed(0)
    trainer = TRAINERS[arch](config, dataset, device)
    trainer.to_device()
    sampler = BatchSampler(trainer.sampling_pools(), config.batch_size, seed=0)
    for step in range(1, warmup + 1):
        trainer.train_step(step, sampler)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for step in range(warmup + 1, warmup + steps + 1):
        trainer.train_step(step, sampler)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return config.batch_size, config.batch_size * steps / seconds, seconds / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(TRAINERS), choices=list(TRAINERS))
    parser.add_argument("--size", type=int, default=None, help="image size (default 64 on CPU, 256 on CUDA)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: each arch's upstream batch size")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    size = args.size or (256 if device.type == "cuda" else 64)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {name}, {size} px, {args.steps} timed iterations after {args.warmup} warm-up"
          f"{', bf16 autocast + channels-last' if device.type == 'cuda' else ''}")
    for arch in args.archs:
        batch, ips, per_iter = measure(arch, size, args.batch_size, steps=args.steps, warmup=args.warmup,
                                       device=device)
        print(f"{arch:13s} batch {batch:3d}: {ips:8.2f} images/s ({per_iter * 1000:8.1f} ms/iteration)")


if __name__ == "__main__":
    main()
