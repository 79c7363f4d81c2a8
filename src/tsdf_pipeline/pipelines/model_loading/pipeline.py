"""``model_loading`` pipeline: checkpoints → validated victim ensemble + model cards."""

from kedro.pipeline import Node, Pipeline

from tsdf_pipeline.models.registry import ARCHS
from tsdf_pipeline.pipelines.model_loading.nodes import validate_ensemble, victim_specs


def create_pipeline(**kwargs) -> Pipeline:
    checkpoints = {f"{arch}_checkpoint": f"{arch}_checkpoint" for arch in ARCHS}
    return Pipeline(
        [
            Node(victim_specs, {"params": "params:model_loading", **checkpoints}, "victim_specs",
                 name="resolve_victim_checkpoints"),
            Node(validate_ensemble, ["victim_specs", "evaluation_set", "params:model_loading"],
                 ["victim_ensemble", "model_cards", "model_loading_metrics"], name="validate_victims"),
        ]
    )
