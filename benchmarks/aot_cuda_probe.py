"""Whether the ahead-of-time compiled stage-1 steps run on CUDA, case by case (torch only, no kedro needed).

On an H200 with torch 2.11, AOTInductor packages killed the process with a segmentation fault inside
``aoti_load_package``: stage 1's feature step (sessions 9 and 10) and, in session 10, the ``conv`` and ``bilinear``
cases below (the ``demo`` case did not start within that call's limit). The steps are now Inductor standalone
artifacts (``aot_compile``), which have not run on a GPU yet. Each case runs in its own process (a crash then ends
only that case; ``-X faulthandler`` prints its Python stack). The cases:

* ``conv``: an input gradient through a convolution under bf16 autocast (what every victim step does);
* ``bilinear``: the same plus ``F.interpolate``'s bilinear resize (its backward has no AOTInductor C shim; stage 1
  now resizes by matrix products);
* ``demo``: stage 1 itself on the demo-size victims (random weights, 64 px, 2 epochs of 2 batches);

each run eagerly (``eager``) and inside a CUDA graph capture (``graph``, as ``cuda_graphs`` does)::

    python benchmarks/aot_cuda_probe.py                   # every case on CUDA (over 5 min at torch 2.11)
    python benchmarks/aot_cuda_probe.py --device cpu      # the eager cases on the CPU
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from tsdf_pipeline.defense.aot_compile import AotCompiledFunction
from tsdf_pipeline.defense.cuda_graphs import GraphedFunction

CASES = ("conv", "bilinear", "demo")


def _input_gradient(x: torch.Tensor, w: torch.Tensor, *, resize: bool) -> dict[str, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        y = F.conv2d(x, w, padding=1)
    if resize:
        y = F.interpolate(y.float(), size=(16, 16), mode="bilinear", align_corners=False)
    (grad,) = torch.autograd.grad(y.float().square().mean(), x)
    return {"grad": grad}


def run_case(case: str, mode: str, device: torch.device, cache: str) -> None:
    """One case in this process; raises if the artifact disagrees with the eager function."""
    if case == "demo":
        from stage1_speed import build_victims  # beside this script

        from tsdf_pipeline.defense.interruption import CUDA_AOT_OPT_IN, InterruptionConfig, run_interruption

        os.environ[CUDA_AOT_OPT_IN] = "1"
        victims, size, batch = build_victims("demo")
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(2 * batch, 3, size, size, generator=gen) * 2 - 1
        attrs = torch.randint(0, 2, (2 * batch, 40), generator=gen).float()
        base = dict(epochs=2, batch_size=batch, device=str(device), progress=False, cuda_graphs=mode == "graph")
        eager = run_interruption(victims, x, attrs, InterruptionConfig(**base))
        aot = run_interruption(victims, x, attrs, InterruptionConfig(**base, aot_cache_dir=cache))
        agree = (eager.w == aot.w).float().mean().item()
        print(f"  w agrees on {agree:.4f} of its entries", flush=True)
        return
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, 32, 32, generator=gen).to(device)
    w = torch.randn(8, 8, 3, 3, generator=gen).to(device)
    fn = lambda a, b: _input_gradient(a, b, resize=case == "bilinear")  # noqa: E731
    compiled = AotCompiledFunction(fn, cache, key=case)
    runner = GraphedFunction(compiled) if mode == "graph" else compiled
    out = runner(x, w)["grad"]
    torch.testing.assert_close(out, fn(x, w)["grad"], rtol=2e-2, atol=1e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    parser.add_argument("--mode", choices=("eager", "graph"), help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.case:
        run_case(args.case, args.mode, device, args.cache)
        return
    modes = ("eager", "graph") if device.type == "cuda" else ("eager",)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}")
    for case in args.cases:
        with tempfile.TemporaryDirectory() as cache:  # one artifact per case, shared by its two modes
            for mode in modes:
                start = time.perf_counter()
                proc = subprocess.run([sys.executable, "-X", "faulthandler", __file__, "--device", args.device,
                                       "--case", case, "--mode", mode, "--cache", cache],
                                      check=False, capture_output=True, text=True)
                verdict = "ok" if proc.returncode == 0 else f"FAILED (exit code {proc.returncode})"
                print(f"{case:9s} {mode:6s} {verdict} in {time.perf_counter() - start:.1f} s", flush=True)
                if proc.returncode != 0 or case == "demo":
                    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "c-shim" not in ln]
                    print("\n".join("    " + ln for ln in lines[-25:]), flush=True)


if __name__ == "__main__":
    main()
