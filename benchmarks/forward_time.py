"""Forward time of each generator at its official size (random weights), batch 1, on CPU by default.

Usage::

    python benchmarks/forward_time.py [--size 256] [--repeats 5] [--threads N] [--device cpu]

StarGAN / AttentionGAN: ``G(x, c)``; AttGAN: ``G(x, a)`` (encode + decode); HiSD (skipped with a note when
``tsdf_pipeline.models.hisd`` is absent): the reference edit ``decode(translate(encode(x), extract(ref, 1), 1))``.
Prints the median and minimum over ``--repeats`` timed calls after one warm-up call, under ``torch.no_grad``.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable

import torch

from tsdf_pipeline.models import ARCHS, build_generator


def _call(arch: str, size: int, device: torch.device) -> Callable[[], torch.Tensor]:
    """A no-argument closure running one batch-1 forward of ``arch`` with random weights at ``size`` px."""
    config = {"img_size": size} if arch == "attgan" else {"new_size": size} if arch == "hisd" else {}
    g = build_generator(arch, **config).to(device).eval()
    x = torch.rand(1, 3, size, size, device=device) * 2 - 1
    if arch in ("stargan", "attentiongan"):
        c = torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0]], device=device)
        return lambda: g(x, c)
    if arch == "attgan":
        a = torch.full((1, 13), -0.5, device=device)
        return lambda: g(x, a)
    ref = torch.rand(1, 3, size, size, device=device) * 2 - 1
    return lambda: g.decode(g.translate(g.encode(x), g.extract(ref, 1), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"batch 1, {args.size} px, {args.repeats} timed calls after 1 warm-up")
    for arch in ARCHS:
        if arch == "hisd" and importlib.util.find_spec("tsdf_pipeline.models.hisd") is None:
            print("hisd: skipped (tsdf_pipeline.models.hisd not present)")
            continue
        run = _call(arch, args.size, device)
        times = []
        with torch.no_grad():
            run()
            for _ in range(args.repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                run()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - start)
        print(f"{arch:13s} median {statistics.median(times) * 1e3:8.1f} ms   min {min(times) * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
