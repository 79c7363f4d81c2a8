"""Temporary device check for the training engine (deleted after use)."""
import math, sys, tempfile, time
from pathlib import Path
import torch
sys.path.insert(0, ".")
from tests.test_training_engine import tiny_config, tiny_dataset
from tsdf_pipeline.models import load_generator
from tsdf_pipeline.training import train_gan

class Stop(Exception):
    pass

ds = tiny_dataset()
for arch in ["stargan", "attentiongan", "attgan", "hisd"]:
    t = time.time()
    with tempfile.TemporaryDirectory() as d:
        cfg = tiny_config(arch, num_iters=12, checkpoint_every=4, sample_every=6, log_every=3, device="cuda")
        def kill(step, losses, p):
            if step == 9:
                raise Stop
        try:
            train_gan(arch, ds, cfg, Path(d) / "r", callback=kill)
        except Stop:
            pass
        r = train_gan(arch, ds, cfg, Path(d) / "r")
        ok = all(math.isfinite(v) for _, h in r.history for v in h.values())
        g = load_generator(arch, r.generator_path, **r.generator_config)
        print(arch, "resumed_from", r.resumed_from, "finite", ok, "last", {k: round(v, 3) for k, v in r.history[-1][1].items()},
              "samples", len(r.sample_paths), f"{time.time() - t:.1f}s", flush=True)
