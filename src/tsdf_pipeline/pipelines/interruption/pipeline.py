"""``interruption`` pipeline: TSDF stage 1 and the baselines (CMUA, per-image PGD, noise) on one ensemble."""

from kedro.pipeline import Node, Pipeline

from tsdf_pipeline.pipelines.interruption.nodes import run_methods


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(run_methods, ["victim_ensemble", "optimisation_set", "evaluation_set", "params:interruption"],
                 ["perturbations", "interruption_history", "interruption_metrics"], name="run_interruption_methods"),
        ]
    )
