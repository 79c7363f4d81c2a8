"""``interruption`` pipeline: TSDF stage 1 and the baselines (CMUA with its optional factor search, per-image
PGD, noise) on one ensemble."""

from kedro.pipeline import Node, Pipeline

from tsdf_pipeline.pipelines.interruption.nodes import run_methods, search_cmua_factors


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(search_cmua_factors, ["victim_ensemble", "optimisation_set", "params:interruption"],
                 ["cmua_factors", "cmua_search_trials", "cmua_search_metrics"], name="search_cmua_factors"),
            Node(run_methods, ["victim_ensemble", "optimisation_set", "evaluation_set", "cmua_factors",
                               "params:interruption"],
                 ["perturbations", "interruption_history", "interruption_metrics"], name="run_interruption_methods"),
        ]
    )
