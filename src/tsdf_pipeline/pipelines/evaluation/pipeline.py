"""``evaluation`` pipeline: interruption metrics of every method, stage-2 (poisoning) metrics, persistence."""

from kedro.pipeline import Node, Pipeline

from tsdf_pipeline.pipelines.evaluation.nodes import evaluate_methods
from tsdf_pipeline.pipelines.evaluation.persistence_nodes import evaluate_persistence
from tsdf_pipeline.pipelines.evaluation.poisoning_nodes import evaluate_poisoning


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(evaluate_methods, ["victim_ensemble", "evaluation_set", "perturbations", "params:evaluation"],
                 ["interruption_table", "interruption_summary", "evaluation_metrics", "interruption_figures"],
                 name="evaluate_interruption"),
            Node(evaluate_poisoning,
                 ["victim_ensemble", "evaluation_set", "perturbations", "poisoned_perturbation", "interruption_table",
                  "params:evaluation", "params:detectors"],
                 ["poisoning_table", "poisoning_summary", "poisoning_evaluation_metrics", "poisoning_figures"],
                 name="evaluate_poisoning"),
            Node(evaluate_persistence,
                 ["retrained_models", "evaluation_set", "perturbations", "poisoned_perturbation",
                  "params:attacker_retraining", "params:evaluation", "params:detectors", "params:data_ingestion"],
                 ["persistence_table", "persistence_report", "persistence_metrics", "persistence_plot"],
                 name="evaluate_persistence"),
        ]
    )
