"""``--env celeba`` (paper scale) merges over ``conf/base`` key by key: no demo-size value may leak into it."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from kedro.config import OmegaConfigLoader

from tests.kedro_project import PROJECT
from tsdf_pipeline import settings
from tsdf_pipeline.defense import make_config as method_config
from tsdf_pipeline.pipelines.attacker_retraining.nodes import attacker_overrides
from tsdf_pipeline.pipelines.poisoning.nodes import poisoning_config
from tsdf_pipeline.training import make_config as training_config
from tsdf_pipeline.training.recipes import recipe_config

# Logging cadence of the paper-scale recipes (upstream logs every 10 iterations; not a training setting).
CADENCE = {"log_every"}


@pytest.fixture(scope="module")
def paper_params() -> dict[str, Any]:
    args = {k: v for k, v in settings.CONFIG_LOADER_ARGS.items() if k not in ("base_env", "default_run_env")}
    loader = OmegaConfigLoader(str(PROJECT / "conf"), base_env="base", default_run_env="celeba", **args)
    return loader["parameters"]


def differences(got: Any, reference: Any) -> dict[str, tuple[Any, Any]]:
    a, b = dataclasses.asdict(got), dataclasses.asdict(reference)
    return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


@pytest.mark.parametrize("arch", ["stargan", "attentiongan", "attgan", "hisd"])
def test_paper_scale_training_recipes_are_upstream(paper_params: dict[str, Any], arch: str) -> None:
    """What the attacker's fine-tuning starts from (e.g. HiSD's 1:1:1 loss weights, R1 1, colour jitter 0.1)."""
    recipe = recipe_config(arch, paper_params["victim_training"])
    assert set(differences(recipe, training_config(arch))) <= CADENCE


@pytest.mark.parametrize("method", ["tsdf", "cmua", "pgd", "noise"])
def test_paper_scale_stage1_methods_use_the_release_values(paper_params: dict[str, Any], method: str) -> None:
    """The release's hyperparameters (the configs' defaults) on any device (``auto``: CUDA when present)."""
    config = method_config(method, dict(paper_params["interruption"][method]))
    assert set(differences(config, method_config(method))) <= {"device"}
    assert getattr(config, "device", "auto") == "auto"


def test_paper_scale_stage2_embeds_the_paper_stage1(paper_params: dict[str, Any]) -> None:
    config = poisoning_config(dict(paper_params["poisoning"]), dict(paper_params["interruption"]))
    assert differences(config.interruption, method_config("tsdf", {"device": "auto"})) == {}
    assert config.detectors == ["retinaface", "s3fd", "dsfd"]
    assert (config.steps, config.epochs) == (50, 30)


def test_paper_scale_data_and_victims_are_the_papers(paper_params: dict[str, Any]) -> None:
    """256 px CMUA crops, the first 128 training images, official generator sizes (no demo widths)."""
    data = paper_params["data_ingestion"]
    assert (data["image_size"], data["crop_size"]) == (256, 170)
    assert (data["optimisation"]["split"], data["optimisation"]["count"]) == ("train", 128)
    victims = paper_params["model_loading"]["victims"]
    assert set(paper_params["model_loading"]["ensemble"]) == {"stargan", "attentiongan", "attgan", "hisd"}
    assert all(spec["config"] is None for spec in victims.values())  # None: the official architecture sizes


def test_paper_scale_attacker_recipe_builds_for_its_victim(paper_params: dict[str, Any]) -> None:
    """The demo's overrides (StarGAN keys such as ``g_lr``) must not reach HiSD's config at paper scale."""
    params = paper_params["attacker_retraining"]
    assert params["victim"] == "hisd"
    recipe = recipe_config("hisd", paper_params["victim_training"], **attacker_overrides("hisd", params))
    assert (recipe.batch_size, recipe.discriminator_warmup_iters, recipe.num_iters) == (8, 10000, 20000)
    upstream = training_config("hisd")
    assert (recipe.lr_gen_others, recipe.lr_dis) == (upstream.lr_gen_others, upstream.lr_dis)
