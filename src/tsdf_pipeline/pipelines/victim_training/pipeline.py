"""``victim_training`` pipeline: one node ``train_<arch>`` per architecture (select a subset with ``--nodes``).

Not part of ``__default__``: training replaces the shipped/official victims only when asked for.
"""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from tsdf_pipeline.models.registry import ARCHS
from tsdf_pipeline.pipelines.victim_training.nodes import train_victim


def outputs(arch: str) -> list[str]:
    """Catalog names of one victim's outputs (see conf/base/catalog_victim_training.yml)."""
    prefix = f"victim_training_{arch}"
    return [f"trained_{arch}_generator", f"{prefix}_card", f"{prefix}_history", f"{prefix}_samples",
            f"{prefix}_metrics"]


def create_pipeline(**kwargs) -> Pipeline:
    nodes = []
    for arch in ARCHS:
        func = update_wrapper(partial(train_victim, arch), train_victim)
        nodes.append(Node(func, ["training_set", "params:victim_training"], outputs(arch), name=f"train_{arch}"))
    return Pipeline(nodes)
