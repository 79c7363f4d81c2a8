"""``evaluation`` pipeline: interruption metrics of every method on the evaluation subset."""

from kedro.pipeline import Node, Pipeline

from tsdf_pipeline.pipelines.evaluation.nodes import evaluate_methods


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(evaluate_methods, ["victim_ensemble", "evaluation_set", "perturbations", "params:evaluation"],
                 ["interruption_table", "interruption_summary", "evaluation_metrics", "interruption_figures"],
                 name="evaluate_interruption"),
        ]
    )
