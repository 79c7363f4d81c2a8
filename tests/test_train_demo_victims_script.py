"""The demo-victim training script: its record names no machine's folders; ``--init`` fine-tunes; edit teachers
train first and are pinned by sha256."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
import yaml

from tests.script_modules import ROOT, load_script
from tsdf_pipeline.models.ensemble import file_sha256


def test_recorded_command_drops_output_folders_and_keeps_the_recipe_arguments():
    command = load_script("train_demo_victims").recorded_command([
        str(ROOT / "scripts/train_demo_victims.py"), "--config", str(ROOT / "conf/base/x.yml"), "--out", "/elsewhere/demo",
        "--work=/elsewhere/work", "--device", "cuda", "--max-seconds", "457.0", "--archs", "hisd"])
    assert command == ("python scripts/train_demo_victims.py --config conf/base/x.yml --device cuda "
                       "--max-seconds 457.0 --archs hisd")


def test_set_values_are_yaml_with_exponent_numbers_as_floats():
    parse = load_script("train_demo_victims")._key_value
    assert parse("lr_gen_mappers=1e-4") == ("lr_gen_mappers", 1e-4)  # YAML 1.1 alone reads a string
    assert parse("condition_attrs=[Male, Young]") == ("condition_attrs", ["Male", "Young"])
    assert parse("progress=false") == ("progress", False)
    assert parse("lambda_cls=3") == ("lambda_cls", 3)
    assert parse("name=stargan") == ("name", "stargan")
    assert parse("name=nan") == ("name", "nan")  # only exponent-notation numbers are converted


def test_init_fine_tunes_the_shipped_generator_and_keeps_its_record(tmp_path):
    """``--init`` starts from the shipped generator (fresh D) and nests that generator's record under "init"."""
    out, work = tmp_path / "out", tmp_path / "work"
    subprocess.run([sys.executable, str(ROOT / "scripts/train_demo_victims.py"), "--device", "cpu", "--archs",
                    "stargan", "--num-iters", "5", "--no-progress", "--init", "data/06_models/demo",
                    "--out", str(out), "--work", str(work)], cwd=ROOT, check=True, capture_output=True)
    record = json.loads((out / "stargan/training.json").read_text())
    shipped = json.loads((ROOT / "data/06_models/demo/stargan/training.json").read_text())
    assert record["steps"] == 5 and record["recipe"]["num_iters"] == 5
    assert record["init"] == shipped
    assert "--init data/06_models/demo" in record["command"] and str(tmp_path) not in record["command"]
    assert (work / "stargan-finetune/train_state.pt").is_file() and not (work / "stargan").exists()
    tuned = torch.load(out / "stargan/200000-G.ckpt", weights_only=True)
    start = torch.load(ROOT / "data/06_models/demo/stargan/200000-G.ckpt", weights_only=True)
    assert tuned.keys() == start.keys()
    drift = max(float((tuned[k].float() - start[k].float()).abs().max()) for k in start)
    assert 0 < drift < 0.05, "one G update (step 5 of n_critic 5) moves the loaded weights a little"


def test_init_without_the_generator_names_the_missing_file(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts/train_demo_victims.py"), "--device", "cpu",
                             "--archs", "hisd", "--num-iters", "1", "--init", str(tmp_path), "--out",
                             str(tmp_path / "out"), "--work", str(tmp_path / "work")],
                            check=False, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert str(tmp_path / "hisd/gen_00600000.pt") in result.stderr and "does not exist" in result.stderr


def test_hisd_trains_after_its_edit_teachers_and_records_their_sha256(tmp_path):
    """A recipe with edit teachers (HiSD's ``teachers``) runs after the archs it names, and its record pins
    each teacher file by sha256 with the path as written (relative to the repository)."""
    script = load_script("train_demo_victims")
    config = yaml.safe_load((ROOT / "conf/base/parameters_victim_training.yml").read_text())
    models = yaml.safe_load((ROOT / "conf/base/parameters_model_loading.yml").read_text())["model_loading"]
    stargan = {"arch": "stargan", "checkpoint": "data/06_models/demo/stargan/200000-G.ckpt",
               **models["victims"]["stargan"]}
    config["victim_training"]["hisd"] |= {"teacher_w": 1.0, "teachers": [stargan]}
    assert script.teacher_archs(config["victim_training"], "hisd", {}) == {"stargan"}
    assert script.teacher_archs(config["victim_training"], "stargan", {}) == set()
    (tmp_path / "recipes.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, str(ROOT / "scripts/train_demo_victims.py"), "--device", "cpu",
                             "--config", str(tmp_path / "recipes.yml"), "--archs", "hisd", "stargan",
                             "--num-iters", "1", "--no-progress", "--set", "checkpoint_every=1",
                             "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")],
                            cwd=ROOT, check=True, capture_output=True, text=True)
    assert result.stdout.index("stargan: 1 steps") < result.stdout.index("hisd: 1 steps")
    teachers = json.loads((tmp_path / "out/hisd/training.json").read_text())["recipe"]["teachers"]
    assert teachers == [{**stargan, "sha256": file_sha256(ROOT / stargan["checkpoint"])}]


def test_set_block_runs_the_hisd_edit_distillation_and_pins_its_teachers(tmp_path):
    """``--set-block hisd_edit_distillation`` fine-tunes the shipped HiSD by edit distillation (``--num-iters``
    still wins), records the block's keys and pins its teachers; an unknown block is named."""
    out = tmp_path / "out"
    run = [sys.executable, str(ROOT / "scripts/train_demo_victims.py"), "--device", "cpu", "--archs", "hisd",
           "--no-progress", "--init", "data/06_models/demo", "--out", str(out), "--work", str(tmp_path / "work")]
    subprocess.run([*run, "--set-block", "hisd_edit_distillation", "--num-iters", "2"], cwd=ROOT, check=True,
                   capture_output=True)
    record = json.loads((out / "hisd/training.json").read_text())
    assert record["steps"] == 2 and record["recipe"]["distill_tags"] == ["Gender"]
    assert [t["sha256"] for t in record["recipe"]["teachers"]] == [
        file_sha256(ROOT / t["checkpoint"]) for t in record["recipe"]["teachers"]]
    assert record["init"] == json.loads((ROOT / "data/06_models/demo/hisd/training.json").read_text())
    missing = subprocess.run([*run, "--set-block", "no_such_block"], cwd=ROOT, check=False, capture_output=True,
                             text=True)
    assert missing.returncode != 0 and "has no block victim_training.no_such_block" in missing.stderr
