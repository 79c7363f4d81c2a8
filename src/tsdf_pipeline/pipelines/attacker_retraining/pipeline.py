"""``attacker_retraining`` pipeline: the attacker's data preparation, run for real, and fine-tuning per branch."""

from kedro.pipeline import Node, Pipeline

from tsdf_pipeline.pipelines.attacker_retraining.nodes import collect_photos, prepare_attacker_data, retrain


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(collect_photos, ["training_set", "perturbations", "poisoned_perturbation",
                                  "params:attacker_retraining"], "attacker_photos", name="collect_attacker_photos"),
            Node(prepare_attacker_data, ["attacker_photos", "training_set", "params:attacker_retraining",
                                         "params:detectors"],
                 ["attacker_datasets", "attacker_preparation", "attacker_preparation_metrics", "attacker_figures"],
                 name="prepare_attacker_data"),
            Node(retrain, ["attacker_datasets", "victim_ensemble", "params:attacker_retraining",
                           "params:victim_training"],
                 ["retrained_models", "retraining_history", "retraining_metrics"], name="retrain_attacker_models"),
        ]
    )
