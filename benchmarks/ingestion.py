"""Ingestion throughput (images/s): decode + CenterCrop(170) + Resize + normalise, streamed into a tensor.

    python benchmarks/ingestion.py                      # synthetic 178x218 JPEGs in a temp folder
    python benchmarks/ingestion.py --root data/01_raw/celeba --count 2000

Runs with torch/pillow alone (no kedro).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.celeba_factory import make_celeba  # noqa: E402
from tsdf_pipeline.data.attributes import STARGAN_ATTRS  # noqa: E402
from tsdf_pipeline.data.celeba import read_index  # noqa: E402
from tsdf_pipeline.data.splits import split_rows, take_first  # noqa: E402
from tsdf_pipeline.data.subsets import build_subset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="a CelebA folder; default: a synthetic one in a temp folder")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else make_celeba(Path(tmp) / "celeba", n=args.count, partition=False)[0]
        start = time.perf_counter()
        index = read_index(root)
        t_index = time.perf_counter() - start
        rows = take_first(split_rows(index, "train"), args.count, "benchmark")
        rates = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subset, _ = build_subset(index, rows, image_size=args.image_size, crop_size=170,
                                     label_sets={"stargan": list(STARGAN_ATTRS)}, progress=False)
            rates.append(len(subset["image_ids"]) / (time.perf_counter() - start))
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    print(f"annotation index of {len(index)} images read in {t_index:.3f} s")
    print(f"ingestion at {args.image_size} px: best {max(rates):.1f} images/s, median "
          f"{sorted(rates)[len(rates) // 2]:.1f} images/s over {args.repeats} x {len(rows)} images")


if __name__ == "__main__":
    main()
