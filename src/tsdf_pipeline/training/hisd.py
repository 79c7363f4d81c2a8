"""HiSD trainer (imlixinyang/HiSD ``core/trainer.py``, ``core/train.py``).

Per iteration: pick a tag ``i`` and two distinct attributes ``j`` (source) and ``j_trg``; draw a batch of
images with attribute ``j`` of tag ``i``. G step (non-translation, self-translation and latent-guided
cycle paths; adversarial + style + image reconstruction losses), then D step (hinge loss with R1 on real
images), both with gradient-norm clipping, then the EMA update of ``gen_test``. Tag-irrelevant conditions
fed to D are the ``condition_attrs`` columns as ±1.
"""

from __future__ import annotations

import copy
import os
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tsdf_pipeline.data.attributes import CELEBA_ATTRS
from tsdf_pipeline.models import build_generator, load_generator, save_generator
from tsdf_pipeline.models.checkpoints import load_state_dict_strict, read_checkpoint, unwrap_state_dict
from tsdf_pipeline.models.hisd import HiSDDiscriminator
from tsdf_pipeline.training.base import ArchTrainer, grid_rows, set_requires_grad
from tsdf_pipeline.training.config import DISTILL_PARTS, HiSDConfig
from tsdf_pipeline.training.dataset import (
    BatchSampler,
    TensorFaceDataset,
    random_color_jitter,
    random_horizontal_flip,
)
from tsdf_pipeline.training.teacher import EditTeacher

# Datasets up to this size are kept on the training device (demo / attacker sets at 64-128 px).
_DEVICE_DATASET_MAX_BYTES = 2 << 30


def tag_pools(attrs40: Tensor, tag_rules: dict[str, dict[str, dict[str, int]]]) -> dict[tuple[int, int], Tensor]:
    """Dataset rows per ``(tag index, attribute index)``: rows whose ``attrs40 [N,40]`` columns match the rule.

    ``tag_rules``: tag -> attribute -> {CelebA column name: required value 0/1}. A tag needs at least two
    attributes. Rows matching no attribute of a tag are not used for that tag.
    """
    if not tag_rules:
        raise ValueError("HiSDConfig.tag_rules is empty; expected tag -> attribute -> {column: 0/1}")
    columns = {name: i for i, name in enumerate(CELEBA_ATTRS)}
    pools: dict[tuple[int, int], Tensor] = {}
    for ti, (tag, attributes) in enumerate(tag_rules.items()):
        if len(attributes) < 2:
            raise ValueError(f"HiSDConfig.tag_rules[{tag!r}] needs at least two attributes, got {list(attributes)}")
        for ai, (attribute, rule) in enumerate(attributes.items()):
            where = f"HiSDConfig.tag_rules[{tag!r}][{attribute!r}]"
            if not rule:
                raise ValueError(f"{where} is empty; expected {{CelebA column: 0 or 1}}")
            match = torch.ones(attrs40.shape[0], dtype=torch.bool)
            for column, value in rule.items():
                if column not in columns:
                    raise ValueError(f"{where}: unknown CelebA attribute {column!r}")
                if value not in (0, 1):
                    raise ValueError(f"{where}[{column!r}] must be 0 or 1, got {value!r}")
                match &= attrs40[:, columns[column]] == value
            pools[(ti, ai)] = torch.nonzero(match).flatten()
    return pools


def pool_name(tag_rules: dict[str, dict[str, dict[str, int]]], tag: int, attribute: int) -> str:
    tag_name = list(tag_rules)[tag]
    return f"{tag_name}/{list(tag_rules[tag_name])[attribute]}"


def r1_penalty(d_out: Tensor, x: Tensor) -> Tensor:
    """``mean_n sum |d sum(d_out) / d x_n|^2`` (HiSD ``compute_grad2``); ``x`` must require grad."""
    (grad,) = torch.autograd.grad(d_out.float().sum(), x, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()


@torch.no_grad()
def update_average(target: nn.Module, source: nn.Module, beta: float) -> None:
    """EMA of parameters: ``target = beta*target + (1-beta)*source`` (upstream ``core/trainer.py``
    ``update_average``; buffers are not averaged). One fused ``lerp`` over all parameters instead of a
    python loop of two kernels per parameter."""
    src = dict(source.named_parameters())
    tgt = [p for _, p in target.named_parameters()]
    torch._foreach_lerp_(tgt, [src[name] for name, _ in target.named_parameters()], 1.0 - beta)


class HiSDTrainer(ArchTrainer):
    """HiSD ``gen`` / ``dis`` with the EMA generator ``gen_test`` (:attr:`generator_ema`)."""

    arch: ClassVar[str] = "hisd"
    discriminator_arch: ClassVar[str] = "hisd"
    config: HiSDConfig

    def __init__(self, config: HiSDConfig, dataset: TensorFaceDataset, device: torch.device) -> None:
        super().__init__(config, dataset, device)
        # fp32 like upstream: the R1 penalty's double backward and HiSD's std-based instance norms are
        # fragile in bf16, and the small demo models are launch-bound, so autocast buys nothing.
        self.use_amp = False
        self.fuse_batches = device.type == "cuda"
        self.pools = tag_pools(dataset.attrs40, config.tag_rules)
        self.condition_columns = self.columns(config.condition_attrs)
        self.generator = build_generator(self.arch, **self.generator_config())
        # The model registry has no "hisd" discriminator entry; the class is used directly.
        self.discriminator = HiSDDiscriminator(**self.discriminator_config())
        if self.discriminator.input_size not in (None, config.image_size):
            raise ValueError(f"HiSD config: dis_head_kernel {config.dis_head_kernel} with "
                             f"{len(config.dis_channels)} dis_channels needs image_size "
                             f"{self.discriminator.input_size}, got {config.image_size}")
        self.generator_ema = copy.deepcopy(self.generator)
        G, betas = self.generator, (config.beta1, config.beta2)
        self.distill = self._distill_tag_indices()
        # Edit distillation: the frozen start generator (filled at step 1, checkpointed for resuming).
        self.anchor = copy.deepcopy(self.generator).requires_grad_(False) if self.distill else None
        if self.distill:
            parts = config.distill_parts
            others = [*([G.extractors] if "extractor" in parts else []),
                      *(G.translators[t] for t in self.distill if "translators" in parts)]
            mappers = [G.mappers[t] for t in self.distill if "mappers" in parts]
            G.requires_grad_(False)  # the encoder, decoder, other tags and parts not in distill_parts stay as loaded
            for module in [*others, *mappers]:
                module.requires_grad_(True)
            groups = [group for group in ({"params": [p for m in others for p in m.parameters()]},
                                          {"params": [p for m in mappers for p in m.parameters()],
                                           "lr": config.lr_gen_mappers}) if group["params"]]
        else:
            groups = [{"params": G.encoder.parameters()}, {"params": G.translators.parameters()},
                      {"params": G.extractors.parameters()}, {"params": G.decoder.parameters()},
                      {"params": G.mappers.parameters(), "lr": config.lr_gen_mappers}]
        self.optimizers = {
            "G": torch.optim.Adam(groups, lr=config.lr_gen_others, betas=betas, weight_decay=config.weight_decay,
                                  foreach=True),
            "D": torch.optim.Adam(self.discriminator.parameters(), lr=config.lr_dis, betas=betas,
                                  weight_decay=config.weight_decay, foreach=True),
        }
        self.noise_dim = int(self.generator_config()["noise_dim"])
        self._num_attributes = [len(a) for a in config.tag_rules.values()]
        self._pool_names = [[pool_name(config.tag_rules, t, a) for a in range(n)]
                            for t, n in enumerate(self._num_attributes)]
        self._device_images: Tensor | None = None
        self._device_attrs40: Tensor | None = None
        self.teacher = (EditTeacher(config.teachers, config.tag_rules, device)
                        if config.teacher_w or self.distill else None)

    def _distill_tag_indices(self) -> list[int]:
        """Indices of ``distill_tags`` in ``tag_rules``; unknown names or parts, ``teacher_w`` 0, a D warm-up (no D
        here) and ``style_align_w`` outside a distillation or with a frozen extractor are refused."""
        c, names = self.config, list(self.config.tag_rules)
        unknown_parts = sorted(set(c.distill_parts) - set(DISTILL_PARTS))
        if unknown_parts or not c.distill_parts:
            raise ValueError(f"HiSDConfig.distill_parts: expected a non-empty subset of {list(DISTILL_PARTS)}, got "
                             f"{list(c.distill_parts)}")
        if c.style_align_w and not c.distill_tags:
            raise ValueError(f"HiSDConfig.style_align_w {c.style_align_w} acts in the edit distillation only; "
                             "set distill_tags or style_align_w: 0")
        if c.style_align_w and "extractor" not in c.distill_parts:
            raise ValueError(f"HiSDConfig.style_align_w {c.style_align_w} trains the extractor, which distill_parts "
                             f"{list(c.distill_parts)} keeps frozen; add 'extractor' or set style_align_w: 0")
        unknown = [t for t in c.distill_tags if t not in names]
        if unknown:
            raise ValueError(f"HiSDConfig.distill_tags: unknown tags {unknown}; tag_rules has {names}")
        if c.distill_tags and c.teacher_w <= 0:
            raise ValueError(f"HiSDConfig.distill_tags: teacher_w weighs the distilled edit, expected > 0, got "
                             f"{c.teacher_w}")
        if c.distill_tags and c.discriminator_warmup_iters:
            raise ValueError("HiSDConfig.distill_tags: the edit distillation trains no D, so "
                             f"discriminator_warmup_iters must be 0, got {c.discriminator_warmup_iters}")
        return [names.index(t) for t in c.distill_tags]

    def modules(self) -> dict[str, nn.Module]:
        return {**super().modules(), **({"G_anchor": self.anchor} if self.anchor is not None else {})}

    def _tags(self, with_conditions: bool) -> list[dict[str, Any]]:
        tags = []
        for tag, attributes in self.config.tag_rules.items():
            entry: dict[str, Any] = {"name": tag, "attributes": list(attributes)}
            if with_conditions:
                entry["tag_irrelevant_conditions_dim"] = len(self.config.condition_attrs)
            tags.append(entry)
        return tags

    def generator_config(self) -> dict[str, Any]:
        return {**self.config.generator, "input_dim": 3, "new_size": self.config.image_size,
                "tags": self._tags(with_conditions=False)}

    def discriminator_config(self) -> dict[str, Any]:
        return {"input_dim": 3, "style_dim": self.generator_config()["style_dim"],
                "channels": list(self.config.dis_channels), "tags": self._tags(with_conditions=True),
                "head_kernel": self.config.dis_head_kernel, "classifier": self.config.cls_w > 0}

    def sampling_pools(self) -> dict[str, Tensor]:
        """One pool per tag attribute (with ``distill_tags``, of those tags only)."""
        return {pool_name(self.config.tag_rules, t, a): rows for (t, a), rows in self.pools.items()
                if not self.distill or t in self.distill}

    def load_init(self, generator_path: str | os.PathLike, discriminator_path: str | os.PathLike | None) -> None:
        """``gen`` from the checkpoint's ``'gen'`` entry when present (else ``'gen_test'``), ``gen_test`` from
        ``'gen_test'``; D from the official ``{'dis': state_dict}`` file when given. An edit distillation
        (``distill_tags``) starts both from ``'gen_test'``, the generator a victim runs: the parts it keeps frozen
        are then that generator's."""
        assert self.generator_ema is not None
        cfg = self.generator_config()
        self.generator_ema.load_state_dict(load_generator(self.arch, generator_path, **cfg).state_dict())
        ckpt = read_checkpoint(generator_path)
        key = "gen" if isinstance(ckpt, dict) and "gen" in ckpt and not self.distill else "gen_test"
        self.generator.load_state_dict(
            load_generator(self.arch, generator_path, wrapper_key=key, **cfg).state_dict())
        if discriminator_path is not None:
            sd = unwrap_state_dict(read_checkpoint(discriminator_path), "dis", path=discriminator_path)
            load_state_dict_strict(self.discriminator, sd, source=str(discriminator_path), arch="hisd discriminator")

    def save_generator(self, path: os.PathLike) -> None:
        """``{'gen': G, 'gen_test': EMA G}``, the upstream training snapshot layout."""
        assert self.generator_ema is not None
        save_generator(self.arch, self.generator_ema, path, extra={"gen": {k: v.detach().cpu() for k, v in self.generator.state_dict().items()}})

    def set_step_lr(self, step: int) -> None:
        """Constant learning rates (upstream has no schedule)."""

    def _draw_on_device(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(images, conditions, attrs40)`` of dataset ``rows``; the conditions are D's tag-irrelevant
        conditions as ±1. Gathered from a device-resident copy of the dataset (one index kernel per batch
        instead of a host gather plus a host-to-device copy every step)."""
        if self.dataset.images.nbytes > _DEVICE_DATASET_MAX_BYTES:  # large sets: host gather + copy per batch
            images, attrs40 = self.draw_rows(rows)
        else:
            if self._device_images is None:
                self._device_images = self.to_input(self.dataset.images)
                self._device_attrs40 = self.dataset.attrs40.to(self.device)
            assert self._device_attrs40 is not None
            rows = rows.to(self.device, non_blocking=True)
            images, attrs40 = self._device_images.index_select(0, rows), self._device_attrs40.index_select(0, rows)
        return images, attrs40[:, self.condition_columns.to(attrs40.device)] * 2 - 1, attrs40

    def _augment(self, x: Tensor) -> Tensor:
        """Upstream's loader (core/utils.py ``get_data_iters``): ColorJitter, then RandomHorizontalFlip, per image.
        Its Resize + RandomCrop to the same size are no-ops here: the data are already square at the model size
        (so the jitter acts after the resize rather than before it)."""
        x = random_color_jitter(x, self.config.color_jitter)
        return self.to_input(random_horizontal_flip(x))

    def _batched(self, fn: Any, *args: tuple[Tensor, ...]) -> list[Tensor]:
        """``[fn(*a) for a in args]``. The decoder, translators and D treat every sample on its own (instance
        norms only), so on CUDA the calls run as one concatenated batch: same values, a third of the kernel
        launches (the small demo models are launch-bound). On CPU separate calls are faster."""
        if not self.fuse_batches:
            return [fn(*a) for a in args]
        return list(fn(*(torch.cat(t) for t in zip(*args, strict=True))).split(args[0][0].shape[0]))

    def _reference_translation(self, sampler: BatchSampler, e: Tensor, i: int, j_trg: int) -> tuple[Tensor, Tensor]:
        """``(s_ref, x_ref_trg)``: the style of a batch drawn from tag ``i``'s attribute ``j_trg`` pool and the
        translation of the codes ``e`` with it (``HiSDConfig.ref_w``; not upstream)."""
        G = self.generator
        s_ref = G.extract(self._reference_batch(sampler, i, j_trg), i)
        return s_ref, G.decode(G.translate(e, s_ref, i))

    def _reference_batch(self, sampler: BatchSampler, i: int, j: int) -> Tensor:
        """A fresh augmented batch ``[B,3,S,S]`` in [-1,1] of tag ``i``'s attribute ``j`` pool."""
        return self._augment(self._draw_on_device(sampler.next(self._pool_names[i][j]))[0])

    def distill_step(self, step: int, sampler: BatchSampler) -> dict[str, Tensor]:
        """One edit-distillation step (``HiSDConfig.distill_tags``): regression onto the anchor's self-translation
        plus the teachers' edit, and of the extracted styles onto mapped ones (``style_align_w``); no D."""
        c, G = self.config, self.generator
        assert self.anchor is not None and self.teacher is not None and self.generator_ema is not None
        if step == 1:  # the run starts from the loaded generator: that is the anchor
            self.anchor.load_state_dict(G.state_dict())
        i = self.distill[int(torch.randint(len(self.distill), (1,)))]
        j, j_trg = torch.randperm(self._num_attributes[i])[:2].tolist()
        x, _, attrs40 = self._draw_on_device(sampler.next(self._pool_names[i][j]))
        x = self._augment(x)
        b = x.shape[0]
        with torch.no_grad(), self.autocast():
            e = G.encode(x)  # the encoder and decoder are frozen, so the anchor's equal G's
            anchor = self.anchor
            target_slf = anchor.decode(anchor.translate(e, anchor.extract(x, i), i)).float()
            target_trg = target_slf + c.teacher_scale * self.teacher.edit(x, attrs40, i, j_trg).float()
            x_ref = self._reference_batch(sampler, i, j_trg)
        with self.autocast():
            s_trg = G.map(torch.randn(b, self.noise_dim, device=x.device), i, j_trg)
            s_slf, s_ref = self._batched(lambda x_: G.extract(x_, i), (x,), (x_ref,))
            x_slf, x_trg, x_ref_trg = self._batched(lambda e_, s_: G.decode(G.translate(e_, s_, i)),
                                                    (e, s_slf), (e, s_trg), (e, s_ref))
            g_edit = F.l1_loss(x_trg.float(), target_trg) + F.l1_loss(x_ref_trg.float(), target_trg)
            g_rec = F.l1_loss(x_slf.float(), target_slf)
            g_total = c.teacher_w * g_edit + c.rec_w * g_rec
            losses = {"G/distill_edit": g_edit.detach(), "G/distill_rec": g_rec.detach()}
            if c.style_align_w:  # a real image's extracted style should be a style the mapper gives its attribute
                with torch.no_grad():
                    m_slf, m_ref = (G.map(torch.randn(b, self.noise_dim, device=x.device), i, a).float()
                                    for a in (j, j_trg))
                g_align = F.l1_loss(s_slf.float(), m_slf) + F.l1_loss(s_ref.float(), m_ref)
                g_total = g_total + c.style_align_w * g_align
                losses["G/distill_align"] = g_align.detach()
        self.optimizers["G"].zero_grad(set_to_none=True)
        g_total.backward()
        nn.utils.clip_grad_norm_(G.parameters(), c.grad_clip, foreach=True)
        self._step(self.optimizers["G"])
        update_average(self.generator_ema, G, c.ema_beta)
        return losses

    def train_step(self, step: int, sampler: BatchSampler, update_generator: bool = True) -> dict[str, Tensor]:
        if self.distill:
            return self.distill_step(step, sampler)
        c = self.config
        G, D = self.generator, self.discriminator
        # Tag / attribute choice on the host (upstream core/train.py: random.sample), no device sync.
        n_attrs = self._num_attributes
        i = int(torch.randint(len(n_attrs), (1,)))
        j, j_trg = torch.randperm(n_attrs[i])[:2].tolist()
        x, y, attrs40 = self._draw_on_device(sampler.next(self._pool_names[i][j]))
        b = x.shape[0]
        x = self._augment(x)
        G.train(update_generator)  # D warm-up: the frozen G as at inference (TSDF release update_D: gen.eval())
        D.train()

        if update_generator:
            # Generator step (upstream HiSD.gen_losses); independent paths go through _batched.
            set_requires_grad(D, False)
            set_requires_grad(G, True)
            with self.autocast():
                e = G.encode(x)
                s = G.extract(x, i)
                s_trg = G.map(torch.randn(b, self.noise_dim, device=x.device), i, j_trg)
                e_slf, e_trg = self._batched(lambda e_, s_: G.translate(e_, s_, i), (e, s), (e, s_trg))
                x_rec, x_slf, x_trg = self._batched(G.decode, (e,), (e_slf,), (e_trg,))
                s_trg_rec = G.extract(x_trg, i)
                x_cyc = G.decode(G.translate(G.encode(x_trg), s, i))
                # calc_gen_loss_real (s not detached: ALI part; its gradient to the extractor scaled by ali_w),
                # calc_gen_loss_fake_trg / _fake_cyc (styles detached).
                s_real = s if c.ali_w == 1 else s.detach() + c.ali_w * (s - s.detach())
                out_real, out_trg, out_cyc = (o.float() for o in self._batched(
                    lambda x_, s_, y_: D(x_, s_, y_, i),
                    (x, s_real, y), (x_trg, s_trg.detach(), y), (x_cyc, s.detach(), y)))
                g_adv = (out_real[:, 0, j].mean() + out_real[:, 1, j].mean()
                         - out_trg[:, 0, j_trg].mean() - out_cyc[:, 1, j].mean())
                g_sty = F.l1_loss(s_trg_rec.float(), s_trg.float())
                xf = x.float()
                g_rec = F.l1_loss(x_rec.float(), xf) + F.l1_loss(x_slf.float(), xf) + F.l1_loss(x_cyc.float(), xf)
                g_total = c.adv_w * g_adv + c.sty_w * g_sty + c.rec_w * g_rec
                if c.cls_w:  # auxiliary classifier (not upstream): x_trg should be classified as j_trg
                    g_cls = F.cross_entropy(D.classify(x_trg, i).float(), torch.full((b,), j_trg, device=x.device))
                    g_total = g_total + c.cls_w * g_cls
                if c.ref_w or c.teacher_w:
                    s_ref, x_ref_trg = self._reference_translation(sampler, e, i, j_trg)
                if c.teacher_w:  # edit teachers (not upstream): the latent- and reference-guided translations to
                    # j_trg should differ from the self-translation by the teachers' edit
                    assert self.teacher is not None
                    x_teach = x_slf.detach().float() + c.teacher_scale * self.teacher.edit(x, attrs40, i, j_trg).float()
                    g_teach = F.l1_loss(x_trg.float(), x_teach) + F.l1_loss(x_ref_trg.float(), x_teach)
                    g_total = g_total + c.teacher_w * g_teach
                if c.ref_w:
                    out_ref = D(x_ref_trg, s_ref.detach(), y, i).float()
                    g_ref = (c.adv_w * -out_ref[:, 0, j_trg].mean()
                             + c.sty_w * F.l1_loss(G.extract(x_ref_trg, i).float(), s_ref.detach().float()))
                    g_total = g_total + c.ref_w * g_ref
            self.optimizers["G"].zero_grad(set_to_none=True)
            g_total.backward()
            nn.utils.clip_grad_norm_(G.parameters(), c.grad_clip, foreach=True)  # upstream: clip 100
            self._step(self.optimizers["G"])
        else:  # D warm-up (TSDF release HiSD_Trainer.update_D): the same pairs from the frozen G, no G update
            with torch.no_grad(), self.autocast():
                s = G.extract(x, i)
                s_trg = G.map(torch.randn(b, self.noise_dim, device=x.device), i, j_trg)
                e = G.encode(x)
                x_trg = G.decode(G.translate(e, s_trg, i))
                x_cyc = G.decode(G.translate(G.encode(x_trg), s, i))
                if c.ref_w:
                    s_ref, x_ref_trg = self._reference_translation(sampler, e, i, j_trg)

        if c.mismatch_w:
            with torch.no_grad(), self.autocast():
                s_mismatch = G.extract(self._reference_batch(sampler, i, j_trg), i)
        # Discriminator step on the detached generator outputs (upstream HiSD.dis_losses).
        set_requires_grad(D, True)
        set_requires_grad(G, False)
        x_trg, x_cyc, s, s_trg = x_trg.detach(), x_cyc.detach(), s.detach(), s_trg.detach()
        with self.autocast():
            x_real = x.detach().requires_grad_(True)
            out_real, out_trg, out_cyc = (o.float() for o in self._batched(
                lambda x_, s_, y_: D(x_, s_, y_, i), (x_real, s, y), (x_trg, s_trg, y), (x_cyc, s, y)))
            out_real = out_real[:, :, j]
            d_real = (F.relu(1 - out_real[:, 0]).mean() + F.relu(1 - out_real[:, 1]).mean()
                      + c.r1_w * (r1_penalty(out_real[:, 0], x_real) + r1_penalty(out_real[:, 1], x_real)))
            d_trg = F.relu(1 + out_trg[:, 0, j_trg]).mean()
            d_cyc = F.relu(1 + out_cyc[:, 1, j]).mean()
            d_adv = d_real + d_trg + d_cyc
            if c.mismatch_w:  # matching-aware D (not upstream): x has attribute j, so it is no real j_trg image,
                # even paired with a real j_trg image's style (the styles real j_trg images come with)
                out_mismatch = D(x.detach(), s_mismatch, y, i)[:, 0, j_trg].float()
                d_adv = d_adv + c.mismatch_w * F.relu(1 + out_mismatch).mean()
            if c.ref_w:
                out_ref = D(x_ref_trg.detach(), s_ref.detach(), y, i).float()
                d_adv = d_adv + c.ref_w * F.relu(1 + out_ref[:, 0, j_trg]).mean()
            d_total = d_adv
            if c.cls_w:  # auxiliary classifier (not upstream) on the real batch, whose attribute is j
                d_cls = F.cross_entropy(D.classify(x.detach(), i).float(), torch.full((b,), j, device=x.device))
                d_total = d_adv + c.cls_w * d_cls
        self.optimizers["D"].zero_grad(set_to_none=True)
        d_total.backward()
        nn.utils.clip_grad_norm_(D.parameters(), c.grad_clip, foreach=True)
        self._step(self.optimizers["D"])
        set_requires_grad(G, True)
        losses = {"D/adv": d_adv, **({"D/cls": d_cls} if c.cls_w else {})}
        if update_generator:
            assert self.generator_ema is not None
            update_average(self.generator_ema, G, c.ema_beta)
            losses = {"G/adv": g_adv, "G/sty": g_sty, "G/rec": g_rec, **({"G/ref": g_ref} if c.ref_w else {}),
                      **({"G/cls": g_cls} if c.cls_w else {}), **({"G/teacher": g_teach} if c.teacher_w else {}),
                      **losses}
        return {k: v.detach() for k, v in losses.items()}

    @torch.no_grad()
    def _step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; with ``optimistic``, on ``2·g_t − g_{t−1}`` (``g_{t−1}`` in the optimizer's
        per-parameter state, saved with it; set after Adam's own first step, which initialises that state)."""
        if not self.config.optimistic:
            optimizer.step()
            return
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        current = [p.grad.clone() for p in params]
        for p in params:
            if "previous_grad" in optimizer.state[p]:
                p.grad.mul_(2).sub_(optimizer.state[p]["previous_grad"])
        optimizer.step()
        for p, g in zip(params, current, strict=True):
            optimizer.state[p]["previous_grad"] = g

    @torch.no_grad()
    def sample_grid(self, images: Tensor, attrs40: Tensor) -> Tensor:
        """With ``gen_test``, one block of rows per tag; columns: input, a latent-guided edit to every
        attribute (fixed latents), a reference-guided edit using the inputs in reverse order as references."""
        assert self.generator_ema is not None
        gen = self.generator_ema
        x = self.to_input(images)
        n = x.shape[0]
        noise = torch.Generator().manual_seed(self.config.seed)
        blocks = []
        with self.autocast():
            e = gen.encode(x)
            for i, attributes in enumerate(self.config.tag_rules.values()):
                columns = [x]
                for j in range(len(attributes)):
                    z = torch.randn(n, self.noise_dim, generator=noise).to(self.device)
                    columns.append(gen.decode(gen.translate(e, gen.map(z, i, j), i)))
                columns.append(gen.decode(gen.translate(e, gen.extract(x.flip(0), i), i)))
                blocks.append([col.float().cpu() for col in columns])
        width = max(len(b) for b in blocks)
        filler = torch.full_like(blocks[0][0], -1.0)
        return torch.cat([grid_rows(b + [filler] * (width - len(b))) for b in blocks], dim=1)
