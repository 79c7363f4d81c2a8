"""Train the shipped demo victims on the embedded demo set (torch only: runs without kedro, e.g. on a GPU box).

Reproduces ``data/06_models/demo/<arch>/<official file name>`` from ``conf/base/parameters_victim_training.yml``
(recipes) and ``conf/base/parameters_data_ingestion.yml`` (demo data, 64 px, CenterCrop 170)::

    python scripts/train_demo_victims.py --device cuda --parallel          # what produced the shipped files
    python scripts/train_demo_victims.py --device cpu --archs stargan      # the CPU path, one victim

``--max-seconds S`` stops an arch at its first log step after S seconds and ships its last checkpoint; the
step reached is written to ``training.json`` beside the checkpoint (set that ``num_iters`` to reproduce it).
Each arch resumes from ``--work`` if a run of the same recipe and data is there.

``--init DIR`` fine-tunes each arch from the generator ``DIR/<arch>/<official file>`` (fresh discriminator, the
attacker's case) instead of training from scratch; the record of that generator (``DIR/<arch>/training.json``) is
kept under ``"init"`` of the new record, so a shipped file names every run that led to it. ``--set-block NAME``
applies the recipe keys of ``victim_training.NAME``, e.g. the shipped HiSD's second and third phases (the edit
distillation, then the extractor alone)::

    python scripts/train_demo_victims.py --device cpu --archs hisd --init data/06_models/demo \
        --set-block hisd_edit_distillation
    python scripts/train_demo_victims.py --device cpu --archs hisd --init data/06_models/demo \
        --set-block hisd_edit_distillation --num-iters 1000 --set "distill_parts=[extractor]" style_align_w=5
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from tsdf_pipeline.data.celeba import read_index  # noqa: E402
from tsdf_pipeline.data.splits import split_rows  # noqa: E402
from tsdf_pipeline.data.subsets import build_subset  # noqa: E402
from tsdf_pipeline.models.ensemble import file_sha256  # noqa: E402
from tsdf_pipeline.training.recipes import train_recipe  # noqa: E402

OFFICIAL_FILES = {"stargan": "200000-G.ckpt", "attentiongan": "200000-G.ckpt", "attgan": "weights.199.pth",
                  "hisd": "gen_00600000.pt"}


class TimeBudgetReached(Exception):
    """Raised from the step callback when an arch has used its wall-clock budget."""


def training_data(data_params: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The demo training split at the ingestion stage's resolution and crop: ``[N,3,S,S]``, ``[N,40]``."""
    index = read_index(ROOT / data_params["root"])
    subset, _ = build_subset(index, split_rows(index, "train"), image_size=data_params["image_size"],
                             crop_size=data_params.get("crop_size"), label_sets={}, progress=False)
    return subset["images"], subset["attrs"]


def pinned_teachers(recipe: dict) -> tuple[list[dict], list[dict]]:
    """HiSD's edit teachers (``teachers`` of a recipe; checkpoints relative to the repository) with each file's
    sha256 added: ``(specs for the trainer, absolute paths; specs for the record, paths as written)``."""
    record = [{**spec, "sha256": file_sha256(ROOT / spec["checkpoint"])} for spec in recipe.get("teachers") or []]
    return [{**spec, "checkpoint": str(ROOT / spec["checkpoint"])} for spec in record], record


def teacher_archs(params: dict, arch: str, overrides: dict) -> set[str]:
    """The architectures whose demo checkpoints ``arch``'s recipe (with ``overrides``) uses as edit teachers."""
    recipe = {**(params.get(arch) or {}), **overrides}
    files = {str(Path(spec["checkpoint"])) for spec in recipe.get("teachers") or []}
    return {a for a, name in OFFICIAL_FILES.items() if str(Path("data/06_models/demo") / a / name) in files}


def recorded_command(argv: list[str]) -> str:
    """The command line as run, paths relative to the repo; ``--out`` / ``--work`` (where files go, not what
    they hold) are left out so the record names no machine's folders."""
    args, kept = argv[1:], []
    while args:
        arg = args.pop(0)
        if arg in ("--out", "--work"):
            args.pop(0)
        elif not arg.startswith(("--out=", "--work=")):
            kept.append(arg)
    return "python " + " ".join([f"scripts/{Path(argv[0]).name}", *kept]).replace(f"{ROOT}/", "")


def train_one(arch: str, params: dict, data_params: dict, out: Path, work: Path, device: str,
              max_seconds: float | None, overrides: dict, init: Path | None = None) -> dict:
    images, attrs = training_data(data_params)
    init_checkpoint = None if init is None else init / arch / OFFICIAL_FILES[arch]
    if init_checkpoint is not None and not init_checkpoint.is_file():
        raise SystemExit(f"{arch}: --init needs the generator {init_checkpoint}, which does not exist")
    init_record = None if init is None else _read_record(init / arch / "training.json")
    run_dir = work / (arch if init is None else f"{arch}-finetune")
    recipe = {**params.get("common", {}), **params[arch], **overrides}
    if recipe.get("teachers"):
        overrides["teachers"], recipe["teachers"] = pinned_teachers(recipe)
    start = time.time()

    def stop_when_over_budget(step: int, losses: dict, samples: Path | None) -> None:
        if max_seconds is not None and time.time() - start > max_seconds:
            raise TimeBudgetReached(step)

    try:
        result = train_recipe(arch, params, images, attrs, run_dir, device=device,
                              callback=stop_when_over_budget, init_checkpoint=init_checkpoint, **overrides)
        generator, steps = result.generator_path, result.steps
    except TimeBudgetReached as stop:
        generator, state = run_dir / "generator.pt", run_dir / "train_state.pt"
        if not state.exists():
            raise SystemExit(f"{arch}: the time budget ended at step {stop.args[0]}, before the first checkpoint; "
                             "raise --max-seconds or lower checkpoint_every") from None
        steps = int(torch.load(state, map_location="cpu", weights_only=True)["step"])
    target = out / arch / OFFICIAL_FILES[arch]
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(generator, target)
    record = {"arch": arch, "steps": steps, "device": device, "seconds": round(time.time() - start, 1),
              "torch": torch.__version__, "recipe": recipe,
              "data": data_params["root"], "image_size": data_params["image_size"],
              "command": recorded_command(sys.argv)}
    if init_record is not None:
        record["init"] = init_record
    (target.parent / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    samples = sorted((run_dir / "samples").glob("*.png"))
    if samples:
        shutil.copyfile(samples[-1], target.parent / "samples.png")
    print(f"{arch}: {steps} steps in {record['seconds']} s -> {target}", flush=True)
    return record


def _read_record(path: Path) -> dict:
    """The ``training.json`` of an earlier run (``{}`` when the generator came without one)."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{path}: not a training record ({exc})") from None


_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _key_value(item: str) -> tuple[str, object]:
    """``KEY=VALUE`` with a YAML value; numbers like ``1e-4`` (a string to YAML 1.1) become floats."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set {item!r}: expected KEY=VALUE, e.g. lr_update_step=1")
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str) and _EXPONENT_NUMBER.fullmatch(parsed):  # not 'nan' / 'inf' words
        return key, float(parsed)
    return key, parsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "conf/base/parameters_victim_training.yml"))
    parser.add_argument("--data-config", default=str(ROOT / "conf/base/parameters_data_ingestion.yml"))
    parser.add_argument("--out", default=str(ROOT / "data/06_models/demo"))
    parser.add_argument("--work", default=str(ROOT / "data/06_models/victim_training_work"))
    parser.add_argument("--archs", nargs="+", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument("--parallel", action="store_true", help="one process per arch (GPU: they overlap)")
    parser.add_argument("--num-iters", type=int, default=None, help="override the recipes' num_iters")
    parser.add_argument("--init", default=None, help="fine-tune from the generators in this folder (see above)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override recipe keys of every arch (YAML values), e.g. lr_update_step=1")
    parser.add_argument("--set-block", default=None, metavar="NAME",
                        help="override recipe keys of every arch with the block victim_training.NAME of --config "
                             "(before --num-iters and --set), e.g. hisd_edit_distillation with --init")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs to files)")
    args = parser.parse_args()
    params = yaml.safe_load(Path(args.config).read_text())["victim_training"]
    data_params = yaml.safe_load(Path(args.data_config).read_text())["data_ingestion"]
    archs = args.archs or params["victims"]
    overrides: dict = {}
    if args.set_block is not None:
        if not isinstance(params.get(args.set_block), dict):
            raise SystemExit(f"--set-block {args.set_block}: {args.config} has no block victim_training.{args.set_block}")
        overrides |= params[args.set_block]
    if args.num_iters is not None:
        overrides["num_iters"] = args.num_iters
    overrides |= dict(_key_value(item) for item in args.set)
    # An arch whose edit teachers are trained in this run waits for them (HiSD with `teachers`).
    late = [arch for arch in archs if teacher_archs(params, arch, overrides) & set(archs)]
    waves = [[arch for arch in archs if arch not in late], late]
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if args.parallel and len(archs) > 1:
        base = [sys.executable, __file__, "--config", args.config, "--data-config", args.data_config,
                "--out", args.out, "--work", args.work, "--device", device]
        if args.max_seconds is not None:
            base += ["--max-seconds", str(args.max_seconds)]
        if args.num_iters is not None:
            base += ["--num-iters", str(args.num_iters)]
        if args.init is not None:
            base += ["--init", args.init]
        if args.set_block is not None:
            base += ["--set-block", args.set_block]
        if args.set:
            base += ["--set", *args.set]
        if args.no_progress:
            base += ["--no-progress"]
        for wave in waves:
            procs = [subprocess.Popen([*base, "--archs", arch]) for arch in wave]
            codes = [p.wait() for p in procs]
            if any(codes):
                raise SystemExit(f"training failed for {[a for a, c in zip(wave, codes, strict=True) if c]}")
        return
    if args.no_progress:
        overrides["progress"] = False
    for arch in waves[0] + waves[1]:
        train_one(arch, params, data_params, Path(args.out), Path(args.work), device, args.max_seconds,
                  dict(overrides), None if args.init is None else Path(args.init))


if __name__ == "__main__":
    main()
