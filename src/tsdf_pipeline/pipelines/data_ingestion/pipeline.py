"""``data_ingestion`` pipeline."""

from kedro.pipeline import Node, Pipeline

from tsdf_pipeline.pipelines.data_ingestion.nodes import build_subsets, read_annotations


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(read_annotations, "params:data_ingestion", "celeba_attributes", name="read_celeba_annotations"),
            Node(
                build_subsets,
                ["celeba_attributes", "params:data_ingestion"],
                ["optimisation_set", "evaluation_set", "training_set", "ingestion_report", "ingestion_metrics"],
                name="build_celeba_subsets",
            ),
        ]
    )
