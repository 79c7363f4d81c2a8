"""AttentionGAN-v1-multi trainer (Ha0Tang/AttentionGAN ``AttentionGAN-v1-multi/solver.py``).

Upstream trains with exactly the StarGAN objective and schedule on the generator's ``result`` output
(attention-blended image), including the random horizontal flip of its ``data_loader.py`` and the float32
gradient penalty; there is no attention-mask regulariser in the multi-domain solver. Its
discriminator is the StarGAN PatchGAN discriminator (same layers and state-dict names).
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from tsdf_pipeline.training.stargan import StarGANTrainer


class AttentionGANTrainer(StarGANTrainer):
    """StarGAN objective applied to ``AttentionGANGenerator(x, c)[0]`` (the result image)."""

    arch: ClassVar[str] = "attentiongan"

    def generate(self, x: Tensor, c: Tensor) -> Tensor:
        result, _attention, _content = self.generator(x, c)
        return result
