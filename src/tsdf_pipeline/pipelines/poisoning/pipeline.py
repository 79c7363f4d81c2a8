"""``poisoning`` pipeline: TSDF stage 2 from the stage-1 ``w1``."""

from kedro.pipeline import Node, Pipeline

from tsdf_pipeline.pipelines.poisoning.nodes import run_stage2


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(run_stage2, ["victim_ensemble", "optimisation_set", "perturbations", "params:poisoning",
                              "params:interruption", "params:detectors"],
                 ["poisoned_perturbation", "poisoning_history", "poisoning_metrics"], name="run_tsdf_stage2"),
        ]
    )
