"""The core layer (data, models, defense, training, metrics) must import with torch/torchvision/numpy/pillow/tqdm
only: no kedro, mlflow, pandas, matplotlib, yaml or scipy (the GPU machine has torch but not kedro).
``facenet-pytorch`` is the one extra, imported only by the MTCNN detector wrapper."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

CORE = ("data", "models", "defense", "training", "metrics")
SRC = Path(__file__).resolve().parents[1] / "src" / "tsdf_pipeline"
BLOCKED = ("kedro", "mlflow", "kedro_mlflow", "kedro_datasets", "pandas", "matplotlib", "yaml", "scipy", "skimage")


def _core_modules() -> list[str]:
    mods = []
    for pkg in CORE:
        for path in sorted((SRC / pkg).rglob("*.py")):
            rel = path.relative_to(SRC.parent).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            mods.append(".".join(parts))
    return mods


def test_importing_the_core_loads_no_blocked_package():
    code = textwrap.dedent(
        f"""
        import importlib, sys
        for m in {_core_modules()!r}:
            importlib.import_module(m)
        loaded = sorted({{name.split('.')[0] for name in sys.modules}} & set({BLOCKED!r}))
        print('loaded:', loaded)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "loaded: []"


def test_core_sources_import_no_blocked_package():
    """Also catches imports inside functions, which importing the modules does not run."""
    offenders = []
    for pkg in CORE:
        for path in (SRC / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
                offenders += [f"{path}:{node.lineno} {n}" for n in names if n.split(".")[0] in BLOCKED]
    assert not offenders
