"""The core layer (data, models, defense, training, metrics) must import without kedro or mlflow."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

CORE = ("data", "models", "defense", "training", "metrics")
SRC = Path(__file__).resolve().parents[1] / "src" / "tsdf_pipeline"


def _core_modules() -> list[str]:
    mods = []
    for pkg in CORE:
        for path in sorted((SRC / pkg).rglob("*.py")):
            rel = path.relative_to(SRC.parent).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            mods.append(".".join(parts))
    return mods


def test_core_imports_with_kedro_and_mlflow_hidden():
    code = textwrap.dedent(
        f"""
        import importlib, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('kedro', 'mlflow', 'kedro_mlflow', 'kedro_datasets'):
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        for m in {_core_modules()!r}:
            importlib.import_module(m)
        print('ok')
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_core_sources_never_mention_kedro_or_mlflow_imports():
    offenders = [
        f"{path}:{i}"
        for pkg in CORE
        for path in (SRC / pkg).rglob("*.py")
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if line.lstrip().startswith(("import ", "from ")) and any(
            tok in line.split("#")[0] for tok in ("kedro", "mlflow"))
    ]
    assert not offenders
