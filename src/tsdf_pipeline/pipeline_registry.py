"""Project pipelines: only stages that work are registered."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from tsdf_pipeline.pipelines import (
    attacker_retraining,
    data_ingestion,
    evaluation,
    interruption,
    model_loading,
    poisoning,
    victim_training,
)


def register_pipelines() -> dict[str, Pipeline]:
    """Map pipeline names to ``Pipeline`` objects; ``__default__`` chains every stage on the active config."""
    pipelines = {
        "data_ingestion": data_ingestion.create_pipeline(),
        "model_loading": model_loading.create_pipeline(),
        "interruption": interruption.create_pipeline(),
        "poisoning": poisoning.create_pipeline(),
        "attacker_retraining": attacker_retraining.create_pipeline(),
        "evaluation": evaluation.create_pipeline(),
    }
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    # Training the victims takes far longer than the default run's budget; the default uses the shipped ones.
    pipelines["victim_training"] = victim_training.create_pipeline()
    return pipelines
