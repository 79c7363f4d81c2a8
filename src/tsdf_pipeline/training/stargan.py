"""StarGAN trainer (yunjey/stargan ``Solver.train``, CelebA): WGAN-GP + domain classification + cycle loss.

Per iteration: one D step; every ``n_critic``-th iteration also one G step. Each training image is mirrored
left-right with probability 1/2 (upstream ``data_loader.get_loader``: ``T.RandomHorizontalFlip()`` in train
mode). Targets are the batch's own labels in a random order (``randperm``). Classification loss: BCE with
logits summed over attributes and averaged over the batch. The gradient penalty is computed in float32 (as
upstream, which has no mixed precision) even when the rest of the step runs under bf16 autocast on CUDA.
Learning rates step down during the last ``num_iters_decay`` iterations (see ``StarGANConfig``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from tsdf_pipeline.models import build_discriminator, build_generator
from tsdf_pipeline.models.targets import stargan_targets
from tsdf_pipeline.training.base import ArchTrainer, grid_rows, set_requires_grad
from tsdf_pipeline.training.config import StarGANConfig
from tsdf_pipeline.training.dataset import BatchSampler, TensorFaceDataset, random_horizontal_flip
from tsdf_pipeline.training.losses import gradient_penalty


def classification_loss(logit: Tensor, target: Tensor) -> Tensor:
    """Multi-label BCE with logits, summed over labels and averaged over the batch: ``[N,C]`` -> scalar."""
    return F.binary_cross_entropy_with_logits(logit.float(), target, reduction="sum") / logit.shape[0]


def linear_decay_lr(base_lr: float, step: int, num_iters: int, num_iters_decay: int, update_step: int) -> float:
    """Learning rate of 1-based iteration ``step``: ``base_lr`` minus ``base_lr/num_iters_decay`` for every
    earlier iteration ``k`` with ``k % update_step == 0`` and ``k > num_iters - num_iters_decay``."""
    if num_iters_decay <= 0:
        return base_lr
    start = num_iters - num_iters_decay
    last = step - 1
    drops = max(0, last // update_step - max(start, 0) // update_step)
    return base_lr - base_lr / num_iters_decay * drops


class StarGANTrainer(ArchTrainer):
    """StarGAN G/D on the ``selected_attrs`` columns of the dataset."""

    arch: ClassVar[str] = "stargan"
    discriminator_arch: ClassVar[str] = "stargan"
    config: StarGANConfig

    def __init__(self, config: StarGANConfig, dataset: TensorFaceDataset, device: torch.device) -> None:
        super().__init__(config, dataset, device)
        self.label_columns = self.columns(config.selected_attrs)
        self.generator = build_generator(self.arch, **self.generator_config())
        self.discriminator = build_discriminator(self.discriminator_arch, **self.discriminator_config())
        betas = (config.beta1, config.beta2)
        self.optimizers = {
            "G": torch.optim.Adam(self.generator.parameters(), config.g_lr, betas),
            "D": torch.optim.Adam(self.discriminator.parameters(), config.d_lr, betas),
        }

    def generator_config(self) -> dict[str, Any]:
        c = self.config
        return {"conv_dim": c.g_conv_dim, "c_dim": len(c.selected_attrs), "repeat_num": c.g_repeat_num}

    def discriminator_config(self) -> dict[str, Any]:
        c = self.config
        return {"image_size": c.image_size, "conv_dim": c.d_conv_dim, "c_dim": len(c.selected_attrs),
                "repeat_num": c.d_repeat_num}

    def generate(self, x: Tensor, c: Tensor) -> Tensor:
        """Edited images ``[N,3,H,W]`` (AttentionGAN overrides this to use its ``result``)."""
        return self.generator(x, c)

    def set_step_lr(self, step: int) -> None:
        c = self.config
        for name, base in (("G", c.g_lr), ("D", c.d_lr)):
            lr = linear_decay_lr(base, step, c.num_iters, c.num_iters_decay, c.lr_update_step)
            for group in self.optimizers[name].param_groups:
                group["lr"] = lr

    def train_step(self, step: int, sampler: BatchSampler, update_generator: bool = True) -> dict[str, Tensor]:
        c = self.config
        G, D = self.generator, self.discriminator
        x_real, attrs40 = self.draw(sampler)
        # yunjey/stargan data_loader.py L75-76 (same in AttentionGAN-v1-multi): RandomHorizontalFlip in training,
        # applied by the loader, i.e. before the target labels are drawn (solver.py L223).
        x_real = self.to_input(random_horizontal_flip(x_real))
        label_org = attrs40[:, self.label_columns.to(attrs40.device)]
        label_trg = label_org[torch.randperm(label_org.shape[0]).to(label_org.device)]
        G.train(update_generator)  # D warm-up: the frozen G as at inference (TSDF release update_D: gen.eval())
        D.train()

        # Discriminator: real/fake critic, classification of real images, gradient penalty.
        set_requires_grad(D, True)
        with self.autocast():
            out_src, out_cls = D(x_real)
            d_loss_real = -out_src.float().mean()
            d_loss_cls = classification_loss(out_cls, label_org)
            with torch.no_grad():
                x_fake = self.generate(x_real, label_trg)
            out_src, _ = D(x_fake)
            d_loss_fake = out_src.float().mean()
            # solver.py L254-257 / L128-140 run in float32; bf16 double backward would make the penalty noisy.
            with torch.autocast(device_type=self.device.type, enabled=False):
                d_loss_gp = gradient_penalty(lambda x: D(x)[0], x_real.float(), x_fake.float())
            d_loss = d_loss_real + d_loss_fake + c.lambda_cls * d_loss_cls + c.lambda_gp * d_loss_gp
        self.optimizers["D"].zero_grad(set_to_none=True)
        d_loss.backward()
        self.optimizers["D"].step()
        losses = {"D/loss_real": d_loss_real, "D/loss_fake": d_loss_fake, "D/loss_cls": d_loss_cls,
                  "D/loss_gp": d_loss_gp}

        # Generator: fool D, be classified as the target, reconstruct the input from the fake.
        if update_generator and step % c.n_critic == 0:
            set_requires_grad(D, False)
            with self.autocast():
                x_fake = self.generate(x_real, label_trg)
                out_src, out_cls = D(x_fake)
                g_loss_fake = -out_src.float().mean()
                g_loss_cls = classification_loss(out_cls, label_trg)
                x_rec = self.generate(x_fake, label_org)
                g_loss_rec = (x_real.float() - x_rec.float()).abs().mean()
                g_loss = g_loss_fake + c.lambda_rec * g_loss_rec + c.lambda_cls * g_loss_cls
                if c.lambda_id:  # identity term (not upstream): the real image's own labels reconstruct it
                    g_loss_id = (self.generate(x_real, label_org).float() - x_real.float()).abs().mean()
                    g_loss = g_loss + c.lambda_id * g_loss_id
                    losses["G/loss_id"] = g_loss_id
            self.optimizers["G"].zero_grad(set_to_none=True)
            g_loss.backward()
            self.optimizers["G"].step()
            losses.update({"G/loss_fake": g_loss_fake, "G/loss_rec": g_loss_rec, "G/loss_cls": g_loss_cls})
        return {k: v.detach() for k, v in losses.items()}

    @torch.no_grad()
    def sample_grid(self, images: Tensor, attrs40: Tensor) -> Tensor:
        """Columns: input, then one edit per ``create_labels`` target (hair colours set, others flipped)."""
        x = self.to_input(images)
        c_org = attrs40[:, self.label_columns]
        columns = [x]
        with self.autocast():
            for c_trg in stargan_targets(c_org, self.config.selected_attrs):
                columns.append(self.generate(x, self.to_input(c_trg)))
        return grid_rows([col.cpu() for col in columns])
