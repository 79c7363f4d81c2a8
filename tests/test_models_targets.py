"""Edit-target rules against the official-code parity fixtures and hand-computed vectors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tsdf_pipeline.data.attributes import ATTGAN_ATTRS, STARGAN_ATTRS
from tsdf_pipeline.models.targets import (
    attgan_conflicts,
    attgan_edit_vectors,
    attgan_targets,
    stargan_targets,
)

PARITY = Path(__file__).parent / "fixtures" / "parity"


def _inputs(model: str) -> dict:
    return torch.load(PARITY / f"{model}.pt", map_location="cpu", weights_only=True)["inputs"]


def _row(attrs, on=()):
    """One-row label tensor [1, A] with the named attributes on."""
    return torch.tensor([[1.0 if a in on else 0.0 for a in attrs]])


@pytest.mark.parametrize("model", ["stargan", "attentiongan"])
def test_stargan_targets_match_official_create_labels(model):
    inputs = _inputs(model)
    c_trg = stargan_targets(inputs["c_org"], STARGAN_ATTRS)
    assert c_trg.shape == (5, 2, 5)
    assert torch.equal(c_trg, inputs["c_trg"])


def test_stargan_targets_hand_computed():
    c_org = torch.tensor([[1.0, 0, 0, 1, 0], [0, 0, 0, 0, 1]])
    expected = torch.tensor([
        [[1.0, 0, 0, 1, 0], [1, 0, 0, 0, 1]],  # Black_Hair: one-hot
        [[0.0, 1, 0, 1, 0], [0, 1, 0, 0, 1]],  # Blond_Hair
        [[0.0, 0, 1, 1, 0], [0, 0, 1, 0, 1]],  # Brown_Hair
        [[1.0, 0, 0, 0, 0], [0, 0, 0, 1, 1]],  # Male flipped
        [[1.0, 0, 0, 1, 1], [0, 0, 0, 0, 0]],  # Young flipped
    ])
    assert torch.equal(stargan_targets(c_org, STARGAN_ATTRS), expected)
    assert torch.equal(c_org, torch.tensor([[1.0, 0, 0, 1, 0], [0, 0, 0, 0, 1]])), "input was modified"


def test_stargan_targets_gray_hair_joins_the_one_hot_group():
    attrs = ["Gray_Hair", "Black_Hair", "Smiling"]
    c_trg = stargan_targets(torch.tensor([[0.0, 1, 1]]), attrs)
    assert c_trg[:, 0].tolist() == [[1, 0, 1], [0, 1, 1], [0, 1, 0]]


def test_stargan_targets_rejects_wrong_width():
    with pytest.raises(ValueError, match=r"\[N, 5\]"):
        stargan_targets(torch.zeros(2, 4), STARGAN_ATTRS)


def test_attgan_vectors_match_official_att_b_and_att_b_scaled():
    inputs = _inputs("attgan")
    assert torch.equal(attgan_edit_vectors(inputs["att_a"], ATTGAN_ATTRS), inputs["att_b"])
    scaled = attgan_targets(inputs["att_a"], ATTGAN_ATTRS, thres_int=0.5, test_int=1.0)
    assert scaled.shape == (14, 2, 13)
    assert torch.equal(scaled, inputs["att_b_"])


def test_attgan_targets_scaling_hand_computed():
    att_a = _row(ATTGAN_ATTRS, on=("Male", "Young"))
    base = (att_a * 2 - 1) * 0.5
    out = attgan_targets(att_a, ATTGAN_ATTRS, thres_int=0.5, test_int=1.0)
    assert torch.equal(out[0], base)
    male = ATTGAN_ATTRS.index("Male")
    expected = base.clone()
    expected[0, male] = -1.0  # flipped off, rescaled to test_int
    assert torch.equal(out[1 + male], expected)
    eyeglasses = ATTGAN_ATTRS.index("Eyeglasses")
    assert out[1 + eyeglasses, 0, eyeglasses] == 1.0
    # A different test_int only changes the edited attribute.
    out_half = attgan_targets(att_a, ATTGAN_ATTRS, thres_int=0.5, test_int=0.5)
    assert out_half[1 + eyeglasses, 0, eyeglasses] == 0.5
    assert torch.equal(out_half[0], base)


def test_attgan_conflict_bald_on_turns_bangs_off():
    att = _row(ATTGAN_ATTRS, on=("Bald", "Bangs", "Black_Hair"))
    out = attgan_conflicts(att, "Bald", ATTGAN_ATTRS)
    assert out.tolist() == _row(ATTGAN_ATTRS, on=("Bald", "Black_Hair")).tolist()
    assert att[0, ATTGAN_ATTRS.index("Bangs")] == 1, "input was modified"


def test_attgan_conflict_only_when_edited_attribute_is_on():
    att = _row(ATTGAN_ATTRS, on=("Bangs",))  # Bald flipped OFF: nothing else changes
    assert torch.equal(attgan_conflicts(att, "Bald", ATTGAN_ATTRS), att)


def test_attgan_conflict_bangs_on_turns_bald_and_receding_hairline_off():
    attrs = ["Bald", "Bangs", "Receding_Hairline", "Smiling"]
    att = torch.tensor([[1.0, 1, 1, 1], [0, 1, 1, 0]])
    out = attgan_conflicts(att, "Bangs", attrs)
    assert out.tolist() == [[0, 1, 0, 1], [0, 1, 0, 0]]


def test_attgan_conflict_receding_hairline_on_turns_bangs_off():
    attrs = ["Receding_Hairline", "Bangs"]
    assert attgan_conflicts(torch.tensor([[1.0, 1]]), "Receding_Hairline", attrs).tolist() == [[1, 0]]


def test_attgan_conflict_hair_colour_one_hot_among_present_colours():
    att = _row(ATTGAN_ATTRS, on=("Black_Hair", "Blond_Hair", "Brown_Hair", "Male"))
    out = attgan_conflicts(att, "Blond_Hair", ATTGAN_ATTRS)
    assert out.tolist() == _row(ATTGAN_ATTRS, on=("Blond_Hair", "Male")).tolist()
    attrs = ["Gray_Hair", "Black_Hair"]
    assert attgan_conflicts(torch.tensor([[1.0, 1]]), "Gray_Hair", attrs).tolist() == [[1, 0]]


def test_attgan_conflict_straight_wavy_and_mustache_no_beard():
    attrs = ["Straight_Hair", "Wavy_Hair", "Mustache", "No_Beard"]
    att = torch.tensor([[1.0, 1, 1, 1]])
    assert attgan_conflicts(att, "Straight_Hair", attrs).tolist() == [[1, 0, 1, 1]]
    assert attgan_conflicts(att, "Wavy_Hair", attrs).tolist() == [[0, 1, 1, 1]]
    assert attgan_conflicts(att, "Mustache", attrs).tolist() == [[1, 1, 1, 0]]
    assert attgan_conflicts(att, "No_Beard", attrs).tolist() == [[1, 1, 0, 1]]


def test_attgan_conflict_absent_attributes_are_skipped():
    # Upstream only touches conflicting attributes present in the list; no error for absent ones.
    attrs = ["Bald", "Smiling"]  # no Bangs / Receding_Hairline
    att = torch.tensor([[1.0, 1]])
    assert torch.equal(attgan_conflicts(att, "Bald", attrs), att)
    # Gray_Hair is absent from the official 13 attributes: Black on leaves only Blond/Brown to clear.
    att = _row(ATTGAN_ATTRS, on=("Black_Hair", "Brown_Hair"))
    assert attgan_conflicts(att, "Black_Hair", ATTGAN_ATTRS).tolist() == _row(
        ATTGAN_ATTRS, on=("Black_Hair",)
    ).tolist()
    # Attributes without a conflict rule change nothing.
    att = _row(ATTGAN_ATTRS, on=("Eyeglasses", "Bangs", "Bald"))
    assert torch.equal(attgan_conflicts(att, "Eyeglasses", ATTGAN_ATTRS), att)


def test_attgan_conflict_rejects_unknown_edited_attribute():
    with pytest.raises(ValueError, match="Smiling"):
        attgan_conflicts(torch.zeros(1, 13), "Smiling", ATTGAN_ATTRS)


def test_attgan_edit_vectors_flip_and_resolve_each_attribute():
    att_a = _row(ATTGAN_ATTRS, on=("Bangs", "Brown_Hair", "No_Beard"))
    vectors = attgan_edit_vectors(att_a, ATTGAN_ATTRS)
    assert vectors.shape == (14, 1, 13)
    assert torch.equal(vectors[0], att_a)
    idx = ATTGAN_ATTRS.index
    assert vectors[1 + idx("Bald")].tolist() == _row(
        ATTGAN_ATTRS, on=("Bald", "Brown_Hair", "No_Beard")
    ).tolist()
    assert vectors[1 + idx("Black_Hair")].tolist() == _row(
        ATTGAN_ATTRS, on=("Bangs", "Black_Hair", "No_Beard")
    ).tolist()
    assert vectors[1 + idx("Mustache")].tolist() == _row(
        ATTGAN_ATTRS, on=("Bangs", "Brown_Hair", "Mustache")
    ).tolist()
    assert vectors[1 + idx("Brown_Hair")].tolist() == _row(ATTGAN_ATTRS, on=("Bangs", "No_Beard")).tolist()
