"""The demo quality-bar script: the per-direction floor of the flip rates, and one victim end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.script_modules import ROOT, load_script


def test_change_rates_count_each_direction_among_its_own_images():
    male = np.array([True, True, True, False, False])
    changed = np.array([True, False, False, True, True])
    rates = load_script("demo_quality_bar").change_rates(changed, male)
    assert rates == {"gender_change_rate": pytest.approx(3 / 5), "gender_change_female_to_male": 1.0,
                     "gender_change_male_to_female": pytest.approx(1 / 3)}


def test_hisd_bar_reports_its_self_translation_floor(tmp_path):
    shipped = ROOT / "data/06_models/demo/hisd"
    (tmp_path / "hisd").mkdir()
    shutil.copyfile(shipped / "gen_00600000.pt", tmp_path / "hisd/gen_00600000.pt")
    subprocess.run([sys.executable, str(ROOT / "scripts/demo_quality_bar.py"), "--models", str(tmp_path),
                    "--victims", "hisd"], check=True, capture_output=True, cwd=ROOT)
    rows = json.loads((tmp_path / "quality_bar.json").read_text())["hisd"]
    assert (tmp_path / "demo_hisd.png").is_file()
    floor = rows["self_translation"]
    assert 0 < floor["mean_abs_change"] < 0.5
    for key in ("gender_change_rate", "gender_change_female_to_male", "gender_change_male_to_female"):
        assert 0.0 <= floor[key] <= 1.0
    # The reference edit (to male) is scored on the female images, the latent edit to female on the male ones.
    assert rows["ref_Gender"]["gender_flip_images"] + rows["latent_Gender_female"]["gender_flip_images"] == 48
    # Beside the configured reference (a training image), every male test image as the reference in turn.
    held_out = rows["ref_Gender_held_out_references"]
    assert held_out["references"] == rows["latent_Gender_female"]["gender_flip_images"]
    assert held_out["gender_flip_images"] == rows["ref_Gender"]["gender_flip_images"]
    rates = [held_out[f"gender_flip_rate{k}"] for k in ("_min", "", "_max")]
    assert 0.0 <= rates[0] <= rates[1] <= rates[2] <= 1.0
