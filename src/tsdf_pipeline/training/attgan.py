"""AttGAN trainer (elvisyjlin/AttGAN-PyTorch ``train.py`` + ``AttGAN.trainD/trainG``, mode ``wgan``).

Each iteration is a D step, except every ``n_d + 1``-th one, which is a G step. Target attributes are the
batch's own in a random order; generator conditions are ``(att*2-1)*thres_int`` (the target optionally
rescaled at random, ``b_distribution``). G's BatchNorm runs in train mode during training (it also updates
its running statistics when D's fake images are generated, as upstream); samples use eval mode. The gradient
penalty is computed in float32 (as upstream) even when the rest of the step runs under bf16 autocast on CUDA.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from tsdf_pipeline.models import build_discriminator, build_generator
from tsdf_pipeline.models.targets import attgan_targets
from tsdf_pipeline.training.base import ArchTrainer, eval_mode, grid_rows, set_requires_grad
from tsdf_pipeline.training.config import AttGANConfig
from tsdf_pipeline.training.dataset import BatchSampler, TensorFaceDataset
from tsdf_pipeline.training.losses import gradient_penalty

B_DISTRIBUTIONS = ("none", "uniform", "truncated_normal")


def scale_target(att_b: Tensor, thres_int: float, b_distribution: str) -> Tensor:
    """Generator condition for target labels ``att_b [N,A]`` in {0,1} (upstream ``att_b_``).

    "none": ``(att_b*2-1)*thres_int``; "uniform": ``(att_b*2-1) * U(0,1) * 2*thres_int``;
    "truncated_normal": ``(att_b*2-1) * (fmod(N(0,1),2)+2)/4 * 2*thres_int``.
    """
    sign = att_b * 2 - 1
    if b_distribution == "none":
        return sign * thres_int
    if b_distribution == "uniform":
        return sign * torch.rand_like(att_b) * (2 * thres_int)
    if b_distribution == "truncated_normal":
        return sign * (torch.fmod(torch.randn_like(att_b), 2) + 2) / 4.0 * (2 * thres_int)
    raise ValueError(f"b_distribution must be one of {B_DISTRIBUTIONS}, got {b_distribution!r}")


class AttGANTrainer(ArchTrainer):
    """AttGAN G/D on the ``attrs`` columns of the dataset."""

    arch: ClassVar[str] = "attgan"
    discriminator_arch: ClassVar[str] = "attgan"
    config: AttGANConfig

    def __init__(self, config: AttGANConfig, dataset: TensorFaceDataset, device: torch.device) -> None:
        if config.b_distribution not in B_DISTRIBUTIONS:
            raise ValueError(f"AttGANConfig.b_distribution must be one of {B_DISTRIBUTIONS}, "
                             f"got {config.b_distribution!r}")
        super().__init__(config, dataset, device)
        self.label_columns = self.columns(config.attrs)
        self.iters_per_epoch = max(1, len(dataset) // config.batch_size)
        self.generator = build_generator(self.arch, **self.generator_config())
        self.discriminator = build_discriminator(self.discriminator_arch, **self.discriminator_config())
        betas = (config.beta1, config.beta2)
        self.optimizers = {
            "G": torch.optim.Adam(self.generator.parameters(), config.lr, betas),
            "D": torch.optim.Adam(self.discriminator.parameters(), config.lr, betas),
        }

    def generator_config(self) -> dict[str, Any]:
        c = self.config
        return {"enc_dim": c.enc_dim, "enc_layers": c.enc_layers, "dec_dim": c.dec_dim, "dec_layers": c.dec_layers,
                "n_attrs": len(c.attrs), "shortcut_layers": c.shortcut_layers, "inject_layers": c.inject_layers,
                "img_size": c.image_size}

    def discriminator_config(self) -> dict[str, Any]:
        c = self.config
        return {"dim": c.dis_dim, "fc_dim": c.dis_fc_dim, "n_layers": c.dis_layers, "img_size": c.image_size,
                "n_attrs": len(c.attrs)}

    def set_step_lr(self, step: int) -> None:
        epoch = (step - 1) // self.iters_per_epoch
        lr = self.config.lr / 10 ** (epoch // self.config.lr_decay_epochs)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr

    def train_step(self, step: int, sampler: BatchSampler, update_generator: bool = True) -> dict[str, Tensor]:
        c = self.config
        G, D = self.generator, self.discriminator
        img_a, attrs40 = self.draw(sampler)
        att_a = attrs40[:, self.label_columns.to(attrs40.device)]
        att_b = att_a[torch.randperm(att_a.shape[0]).to(att_a.device)]
        att_a_ = (att_a * 2 - 1) * c.thres_int
        att_b_ = scale_target(att_b, c.thres_int, c.b_distribution)
        G.train(update_generator)  # D warm-up: the frozen G as at inference (TSDF release update_D: gen.eval())
        D.train()

        if not update_generator or step % (c.n_d + 1) != 0:
            set_requires_grad(D, True)
            with self.autocast():
                with torch.no_grad():
                    img_fake = G(img_a, att_b_)
                d_real, dc_real = D(img_a)
                d_fake, _ = D(img_fake)
                df_loss = d_fake.float().mean() - d_real.float().mean()
                # float32 as upstream (no mixed precision): a bf16 double backward makes the penalty noisy.
                with torch.autocast(device_type=self.device.type, enabled=False):
                    df_gp = gradient_penalty(lambda x: D(x)[0], img_a.float(), img_fake.float(),
                                             alpha_weighs_real=False)
                dc_loss = F.binary_cross_entropy_with_logits(dc_real.float(), att_a)
                d_loss = df_loss + c.lambda_gp * df_gp + c.lambda_3 * dc_loss
            self.optimizers["D"].zero_grad(set_to_none=True)
            d_loss.backward()
            self.optimizers["D"].step()
            losses = {"D/d_loss": d_loss, "D/df_loss": df_loss, "D/df_gp": df_gp, "D/dc_loss": dc_loss}
        else:
            set_requires_grad(D, False)
            with self.autocast():
                zs_a = G.encode(img_a)
                img_fake = G.decode(zs_a, att_b_)
                img_recon = G.decode(zs_a, att_a_)
                d_fake, dc_fake = D(img_fake)
                gf_loss = -d_fake.float().mean()
                gc_loss = F.binary_cross_entropy_with_logits(dc_fake.float(), att_b)
                gr_loss = (img_recon.float() - img_a.float()).abs().mean()
                g_loss = gf_loss + c.lambda_2 * gc_loss + c.lambda_1 * gr_loss
            self.optimizers["G"].zero_grad(set_to_none=True)
            g_loss.backward()
            self.optimizers["G"].step()
            losses = {"G/g_loss": g_loss, "G/gf_loss": gf_loss, "G/gc_loss": gc_loss, "G/gr_loss": gr_loss}
        return {k: v.detach() for k, v in losses.items()}

    @torch.no_grad()
    def sample_grid(self, images: Tensor, attrs40: Tensor) -> Tensor:
        """Columns: input, reconstruction, then one edit per attribute (``test_int`` on the edited one)."""
        c = self.config
        x = self.to_input(images)
        att_a = attrs40[:, self.label_columns]
        columns = [x]
        with eval_mode(self.generator), self.autocast():
            for cond in attgan_targets(att_a, c.attrs, c.thres_int, c.test_int):
                columns.append(self.generator(x, self.to_input(cond)))
        return grid_rows([col.cpu() for col in columns])
