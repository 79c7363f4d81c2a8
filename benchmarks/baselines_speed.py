"""Speed and memory of the CMUA and PGD baselines and of the interruption evaluation, one batch each.

Usage (torch alone, no kedro)::

    python benchmarks/baselines_speed.py --config paper --device cuda
    python benchmarks/baselines_speed.py --config demo --device cpu

Victims as in ``stage1_speed.py`` (random weights; ``paper``: the four official sizes at 256 px). Every edit
target (``targets: all``, as ``conf/celeba``): CMUA one batch of ``--cmua-batch`` images (paper: 64, half an
epoch of its 128 images), PGD one batch of ``--pgd-batch`` images with 10 iterations, and the evaluation of four
universal perturbations (the four methods) on ``--eval-batch`` images under the four purifications (``--perceptual``:
with LPIPS and FID on random-init backbones, as with the user's weight files). Each is timed
twice (the first call pays cuDNN's autotuning); reported: seconds, seconds per image, peak memory, and the
extrapolation to the paper's sizes (CMUA 128 images, PGD and evaluation 1,000 images).
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable

import torch
from stage1_speed import build_victims

from tsdf_pipeline.defense.cmua import CMUAConfig, run_cmua
from tsdf_pipeline.defense.pgd import PGDConfig, run_pgd
from tsdf_pipeline.devices import resolve_device
from tsdf_pipeline.metrics.evaluate_interruption import PerceptualModels, evaluate_interruption_methods
from tsdf_pipeline.metrics.fid import FIDInception
from tsdf_pipeline.metrics.lpips import LPIPS

PURIFICATIONS = ("none", "jpeg90", "jpeg75", "blur1")


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(seconds, peak memory in GiB) of one call: CUDA peak allocation, or the process's peak RSS on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**30
    return time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=["paper", "demo"], default="paper")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cmua-batch", type=int, default=None, help="default: 64 (paper) / 8 (demo)")
    parser.add_argument("--pgd-batch", type=int, default=None, help="default: 16 (paper) / 4 (demo)")
    parser.add_argument("--eval-batch", type=int, default=None, help="default: 16 (paper) / 8 (demo)")
    parser.add_argument("--only", nargs="+", choices=["cmua", "pgd", "evaluation"],
                        default=["cmua", "pgd", "evaluation"])
    parser.add_argument("--perceptual", action="store_true", help="the evaluation computes LPIPS and FID too")
    args = parser.parse_args()
    paper = args.config == "paper"
    sizes = {"cmua": args.cmua_batch or (64 if paper else 8), "pgd": args.pgd_batch or (16 if paper else 4),
             "evaluation": args.eval_batch or (16 if paper else 8)}
    totals = {"cmua": 128, "pgd": 1000, "evaluation": 1000}   # images (evaluation: each with the 4 methods)
    device = resolve_device(args.device)
    victims, size, _ = build_victims(args.config)
    n = max(sizes[k] for k in args.only)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, size, size, generator=gen) * 2 - 1
    attrs = (torch.rand(n, 40, generator=gen) > 0.5).float()
    settings = {"targets": "all", "device": str(device), "progress": False}
    runs: dict[str, Callable[[], object]] = {
        "cmua": lambda: run_cmua(victims, images[:sizes["cmua"]], attrs[:sizes["cmua"]],
                                 CMUAConfig(batch_size=sizes["cmua"], **settings)),
        "pgd": lambda: run_pgd(victims, images[:sizes["pgd"]], attrs[:sizes["pgd"]],
                               PGDConfig(batch_size=sizes["pgd"], **settings)),
    }
    methods = {f"method{k}": (torch.rand(1, 3, size, size, generator=gen) * 2 - 1) * 0.05 for k in range(4)}
    perceptual = PerceptualModels(LPIPS().to(device), FIDInception().to(device)) if args.perceptual else None

    def evaluation() -> object:
        for v in victims:
            v.to(device)
        with torch.no_grad():
            return evaluate_interruption_methods(
                victims, images[:sizes["evaluation"]], attrs[:sizes["evaluation"]], methods,
                batch_size=sizes["evaluation"], purifications=PURIFICATIONS, target_mode="all", device=device,
                perceptual=perceptual)

    runs["evaluation"] = evaluation
    print(f"device={device} config={args.config} size={size} targets=all batches={sizes} "
          f"perceptual={args.perceptual}")
    for name in args.only:
        first, _ = timed(runs[name], device)
        seconds, peak = timed(runs[name], device)
        per_image = seconds / sizes[name]
        print(f"{name:10s} {sizes[name]:3d} images: first {first:7.1f} s, then {seconds:7.1f} s = {per_image:.3f} s/image; "
              f"peak {peak:.1f} GiB; at {totals[name]} images {per_image * totals[name] / 60:.1f} min")


if __name__ == "__main__":
    main()
