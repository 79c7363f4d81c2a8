"""Speed and memory of one TSDF stage-2 poisoning step (the detector part of a batch).

Usage (torch alone, no kedro)::

    python benchmarks/stage2_speed.py --device cuda --detectors s3fd dsfd retinaface [--size 256 --batch 8]
    python benchmarks/stage2_speed.py --device cpu --detectors mtcnn --size 128 --batch 2 --steps 10

Detectors: ``mtcnn`` with the weights inside facenet-pytorch, the others with random weights of the official
architectures (``build_detector``; their speed does not depend on the weights). One measured call = clean
reference + ``--steps`` Adam steps on ``L_feat + L_output``. Reported: seconds per call, images·steps/s after a
warm-up call, peak CUDA memory, and the loss drop of the last call.
"""

from __future__ import annotations

import argparse
import time

import torch

from tsdf_pipeline.defense.poisoning import DetectorPoisoner, PoisoningConfig
from tsdf_pipeline.defense.state import make_generator
from tsdf_pipeline.devices import resolve_device
from tsdf_pipeline.models.detectors import build_detector, load_detector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--detectors", nargs="+", default=["s3fd", "dsfd", "retinaface"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--release-compat", action="store_true")
    parser.add_argument("--no-amp", action="store_true")
    args = parser.parse_args()

    device = resolve_device(args.device)
    torch.manual_seed(0)
    detectors = {}
    for name in args.detectors:
        det = load_detector(name) if name == "mtcnn" else build_detector(name, release_compat=args.release_compat)
        detectors[name] = det.requires_grad_(False).to(device).eval()
    config = PoisoningConfig(steps=args.steps, release_compat=args.release_compat, device=str(device),
                             interruption={"amp": not args.no_amp})
    poisoner = DetectorPoisoner(detectors, config, args.size, device)
    x = torch.rand(args.batch, 3, args.size, args.size, device=device) * 2 - 1
    w0 = (torch.rand(1, 3, args.size, args.size, device=device) * 2 - 1) * 0.05

    timings = []
    for repeat in range(args.repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = poisoner.poison(x, w0, make_generator(0, "bench", repeat, device=device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
    steady = sum(timings[1:]) / max(len(timings) - 1, 1)
    print(f"device={device} detectors={args.detectors} size={args.size} batch={args.batch} steps={args.steps} "
          f"release_compat={args.release_compat} amp={not args.no_amp}")
    print(f"first call {timings[0]:.2f} s; steady {steady:.2f} s/call = "
          f"{args.batch * args.steps / steady:.1f} images·steps/s")
    if device.type == "cuda":
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print(f"L_output {float(out.output_losses[0]):.4f} -> best {float(out.output_losses.min()):.4f} "
          f"(step {int(out.best_step)}); L_feat {float(out.feature_losses[0]):.4f} -> "
          f"{float(out.feature_losses[-1]):.4f}")


if __name__ == "__main__":
    main()
