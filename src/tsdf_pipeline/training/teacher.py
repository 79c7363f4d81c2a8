"""Edit teachers: frozen label-conditioned victims whose attribute edits supervise a HiSD translator.

Not upstream (``HiSDConfig.teacher_w`` inside HiSD's GAN loss, ``HiSDConfig.distill_tags`` without D). At demo
size HiSD's unpaired objective does not learn a gender edit (docs/fidelity.md, "HiSD demo run"), while StarGAN,
AttentionGAN and AttGAN trained on the same images do. A teacher turns their edits into paired residuals: for an
image ``x`` with labels ``a`` and a HiSD target attribute whose tag rule sets some label columns, the edit is
``mean_k (T_k(x, a') − T_k(x, a))``, where ``a'`` is ``a`` with the rule's columns set and ``T_k(x, ·)`` is teacher
``k``'s output for those labels (its reconstruction target, ``Victim.targets(mode="train")``). Differencing two
outputs of one teacher keeps its edit and drops its reconstruction error (blur, colour shifts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from tsdf_pipeline.data.attributes import attr_indices
from tsdf_pipeline.models.ensemble import load_victim
from tsdf_pipeline.models.victims import Victim

LABEL_ARCHS = ("stargan", "attentiongan", "attgan")


class EditTeacher:
    """Frozen teachers (victim specs as in ``model_loading.victims``: ``{name?, arch, checkpoint, sha256?,
    config, options}``, label-conditioned architectures only) for HiSD tag rules
    (tag -> attribute -> {CelebA column: 0/1}); every rule column must be one of every teacher's attributes."""

    def __init__(self, specs: Sequence[Mapping[str, Any]], tag_rules: Mapping[str, Mapping[str, Mapping[str, int]]],
                 device: torch.device) -> None:
        if not specs:
            raise ValueError("HiSDConfig.teachers is empty; teacher_w > 0 and distill_tags need at least one victim spec")
        self.victims: list[Victim] = []
        for k, spec in enumerate(specs):
            if spec.get("arch") not in LABEL_ARCHS:
                raise ValueError(f"HiSDConfig.teachers[{k}]: arch must be one of {list(LABEL_ARCHS)}, "
                                 f"got {spec.get('arch')!r}")
            victim = load_victim(spec).to(device).eval()
            victim.requires_grad_(False)
            for tag, attributes in tag_rules.items():
                for attribute, rule in attributes.items():
                    missing = sorted(set(rule) - set(victim.attrs))
                    if missing:
                        raise ValueError(f"HiSDConfig.teachers[{k}] ({spec['checkpoint']}) edits {victim.attrs}; "
                                         f"tag_rules[{tag!r}][{attribute!r}] also sets {missing}")
            self.victims.append(victim)
        self.rules = [[dict(zip(attr_indices(list(rule)), map(float, rule.values()), strict=True))
                       for rule in attributes.values()] for attributes in tag_rules.values()]

    @torch.no_grad()
    def edit(self, x: Tensor, attrs40: Tensor, tag: int, attribute: int) -> Tensor:
        """The teachers' mean edit ``[B,3,H,W]`` of ``x [B,3,H,W]`` in [-1,1] (labels ``attrs40 [B,40]`` in {0,1})
        to ``attribute`` of ``tag``: zero for images whose labels already match the attribute's rule."""
        edited = attrs40.clone()
        for column, value in self.rules[tag][attribute].items():
            edited[:, column] = value
        both, pair = torch.cat([attrs40, edited]), torch.cat([x, x])
        delta = torch.zeros_like(x)
        for victim in self.victims:
            before, after = victim.edit(pair, victim.targets(both, mode="train"))[0].chunk(2)
            delta += (after - before).to(x.dtype)
        return delta / len(self.victims)
