"""The demo-victim training script records a command that names no machine's folders."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("train_demo_victims", ROOT / "scripts/train_demo_victims.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recorded_command_drops_output_folders_and_keeps_the_recipe_arguments():
    command = _script().recorded_command([
        str(ROOT / "scripts/train_demo_victims.py"), "--config", str(ROOT / "conf/base/x.yml"), "--out", "/elsewhere/demo",
        "--work=/elsewhere/work", "--device", "cuda", "--max-seconds", "457.0", "--archs", "hisd"])
    assert command == ("python scripts/train_demo_victims.py --config conf/base/x.yml --device cuda "
                       "--max-seconds 457.0 --archs hisd")
