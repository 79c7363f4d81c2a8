"""Official edit-target rules: StarGAN/AttentionGAN ``create_labels`` and AttGAN attribute vectors.

Labels are float tensors with one row per image. The rules follow yunjey/stargan ``Solver.create_labels``
(CelebA branch) and elvisyjlin/AttGAN-PyTorch ``data.check_attribute_conflict`` plus the scaling of its
``test.py`` (used unchanged by CMUA-Watermark and TSDF).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

HAIR_COLOURS: tuple[str, ...] = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")

# AttGAN conflict groups: switching the key attribute ON switches these attributes OFF (when present).
_ATTGAN_CONFLICTS: dict[str, tuple[str, ...]] = {
    "Bald": ("Bangs",),
    "Receding_Hairline": ("Bangs",),
    "Bangs": ("Bald", "Receding_Hairline"),
    **{hair: tuple(h for h in HAIR_COLOURS if h != hair) for hair in HAIR_COLOURS},
    "Straight_Hair": ("Wavy_Hair",),
    "Wavy_Hair": ("Straight_Hair",),
    "Mustache": ("No_Beard",),
    "No_Beard": ("Mustache",),
}


def _check_labels(labels: Tensor, attrs: Sequence[str], what: str) -> None:
    if labels.dim() != 2 or labels.shape[1] != len(attrs):
        raise ValueError(
            f"{what} must have shape [N, {len(attrs)}] (one column per attribute {list(attrs)}), "
            f"got {list(labels.shape)}"
        )


def stargan_targets(c_org: Tensor, attrs: Sequence[str]) -> Tensor:
    """StarGAN / AttentionGAN target labels, one per attribute (``Solver.create_labels``, CelebA).

    ``c_org``: ``[N, C]`` original labels in {0, 1}, columns in the order of ``attrs``.
    Target ``i`` starts from ``c_org``; if ``attrs[i]`` is a hair colour (Black/Blond/Brown/Gray_Hair) it is
    set to 1 and every other hair colour in ``attrs`` to 0, otherwise column ``i`` is flipped
    (``1`` where it was ``0``, else ``0``). Returns ``[C, N, C]`` with ``c_org``'s dtype.
    """
    _check_labels(c_org, attrs, "c_org")
    hair = [i for i, name in enumerate(attrs) if name in HAIR_COLOURS]
    targets = []
    for i in range(len(attrs)):
        c_trg = c_org.clone()
        if i in hair:
            c_trg[:, hair] = 0
            c_trg[:, i] = 1
        else:
            c_trg[:, i] = (c_org[:, i] == 0).to(c_org.dtype)
        targets.append(c_trg)
    return torch.stack(targets)


def attgan_conflicts(att: Tensor, attr_name: str, attrs: Sequence[str]) -> Tensor:
    """Resolve AttGAN attribute conflicts after ``attr_name`` was edited (``check_attribute_conflict``).

    ``att``: ``[N, A]`` labels in {0, 1}, columns in the order of ``attrs``. For rows where ``attr_name`` is
    on (non-zero), each conflicting attribute that is present in ``attrs`` and on is set to
    ``1 - att[:, attr_name]`` (= 0 for binary labels):

    * Bald or Receding_Hairline on -> Bangs off;
    * Bangs on -> Bald and Receding_Hairline off;
    * a hair colour (Black/Blond/Brown/Gray_Hair) on -> the other hair colours off;
    * Straight_Hair / Wavy_Hair and Mustache / No_Beard are mutually exclusive.

    As upstream, conflicting attributes absent from ``attrs`` are skipped (nothing is read or written for
    them), switching an attribute off changes nothing else, and an ``attr_name`` outside ``attrs`` is an
    error. Returns a new ``[N, A]`` tensor; ``att`` is not modified.
    """
    _check_labels(att, attrs, "att")
    names = list(attrs)
    if attr_name not in names:
        raise ValueError(f"edited attribute {attr_name!r} is not in the attribute list {names}")
    out = att.clone()
    i = names.index(attr_name)
    edited_on = out[:, i] != 0
    value = 1 - out[:, i]
    for other in _ATTGAN_CONFLICTS.get(attr_name, ()):
        if other in names:
            j = names.index(other)
            out[:, j] = torch.where(edited_on & (out[:, j] != 0), value, out[:, j])
    return out


def attgan_edit_vectors(att_a: Tensor, attrs: Sequence[str]) -> Tensor:
    """AttGAN target labels in {0, 1}: ``[att_a] + [conflicts(flip_i(att_a)) for each attribute i]``.

    ``att_a``: ``[N, A]`` in {0, 1}. Returns ``[A+1, N, A]``; index 0 is the reconstruction, index ``i > 0``
    flips attribute ``i-1`` and resolves its conflicts with :func:`attgan_conflicts`.
    """
    _check_labels(att_a, attrs, "att_a")
    vectors = [att_a.clone()]
    for i, name in enumerate(attrs):
        flipped = att_a.clone()
        flipped[:, i] = 1 - flipped[:, i]
        vectors.append(attgan_conflicts(flipped, name, attrs))
    return torch.stack(vectors)


def attgan_targets(
    att_a: Tensor, attrs: Sequence[str], thres_int: float = 0.5, test_int: float = 1.0
) -> Tensor:
    """AttGAN generator conditions for all official edits (CMUA / upstream ``test.py``).

    ``att_a``: ``[N, A]`` in {0, 1}. Each vector of :func:`attgan_edit_vectors` is scaled to
    ``(v*2-1)*thres_int`` (±0.5 by default) and, for index ``i > 0``, the edited attribute ``i-1`` is
    rescaled by ``test_int/thres_int`` (±1.0 by default). Returns ``[A+1, N, A]``; index 0 is the
    reconstruction condition.
    """
    if thres_int <= 0:
        raise ValueError(f"thres_int must be > 0, got {thres_int}")
    scaled = (attgan_edit_vectors(att_a, attrs) * 2 - 1) * thres_int
    for i in range(len(attrs)):
        scaled[i + 1, :, i] = scaled[i + 1, :, i] * test_int / thres_int
    return scaled
