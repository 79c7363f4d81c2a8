"""Victims: frozen face-editing generators behind one interface for the defense and the evaluation.

A victim wraps one generator, freezes its parameters and fixes the generator in its official inference
mode (StarGAN / AttentionGAN: InstanceNorm with per-instance statistics, AttGAN: BatchNorm running
statistics, HiSD: no mode-dependent layers), whatever ``train()`` / ``eval()`` is called on the victim.
It stays differentiable in the input image, so perturbations can be optimised through it.

Edit targets (:class:`EditTargets`) are built per batch from the 40 CelebA labels:

* mode ``"all"``: every official edit target plus the reconstruction (evaluation, CMUA ``evaluate.py``);
* mode ``"train"``: the edits TSDF attacks while training (StarGAN / AttentionGAN ``c_trg = c_org``,
  AttGAN ``att_b = att_a``, HiSD the reference-guided glasses edit).

``edit`` returns edits as the generator produces them, without clamping; see ``Victim.output_range``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tsdf_pipeline.data.attributes import ATTGAN_ATTRS, CELEBA_ATTRS, STARGAN_ATTRS, attr_indices
from tsdf_pipeline.models.attentiongan import AttentionGANGenerator
from tsdf_pipeline.models.attgan import AttGANGenerator
from tsdf_pipeline.models.hisd import HiSDGenerator
from tsdf_pipeline.models.stargan import FEATURE_INDEX, StarGANGenerator, tile_condition
from tsdf_pipeline.models.targets import attgan_targets, stargan_targets

MODES: tuple[str, ...] = ("all", "train")
RECON = "recon"


@dataclass
class EditTargets:
    """All edit targets of one victim for one batch.

    ``names``: T target names (e.g. ``["recon", "Black_Hair", ...]`` or ``["ref_Eyeglasses"]``);
    ``cond``: ``[T, N, ...]`` generator condition per target (labels ``[T,N,C]`` or HiSD styles ``[T,N,S]``).
    """

    names: list[str]
    cond: Tensor

    def __post_init__(self) -> None:
        if self.cond.dim() < 2 or self.cond.shape[0] != len(self.names):
            raise ValueError(
                f"EditTargets: cond must be [T, N, ...] with T = len(names) = {len(self.names)}, "
                f"got shape {list(self.cond.shape)}"
            )

    def __len__(self) -> int:
        return len(self.names)


def _repeat_over_targets(x: Tensor, t: int) -> Tensor:
    """``[N, ...]`` -> ``[t*N, ...]``: x repeated once per target (target-major order)."""
    return x.unsqueeze(0).expand(t, *x.shape).reshape(t * x.shape[0], *x.shape[1:])


def _broadcast_over_targets(x: Tensor, t: int) -> Tensor:
    """``[N, ...]`` -> ``[t, N, ...]`` view (no copy) of a target-independent tensor."""
    return x.unsqueeze(0).expand(t, *x.shape)


class Victim(nn.Module):
    """Frozen generator with the uniform edit interface (subclasses: one per architecture).

    Attributes: ``name``, ``arch``, ``attrs`` (label names the generator is conditioned on; HiSD: its tag
    names), ``image_size`` (side length the generator was trained at), ``output_range``: ``(lo, hi)`` when
    the generator ends in a tanh (StarGAN, AttGAN: ``(-1.0, 1.0)``), ``None`` when its edits are unbounded
    (AttentionGAN: ``content`` has no tanh, ``result = content*a + x*(1-a)``; HiSD: ``decode`` has no
    tanh). Edits are never clamped here; metrics clamp where CMUA does.
    """

    arch: str
    output_range: tuple[float, float] | None

    def __init__(self, generator: nn.Module, *, name: str, attrs: Sequence[str], image_size: int) -> None:
        super().__init__()
        self.generator = generator
        self.generator.requires_grad_(False)
        self.name = name
        self.attrs = list(attrs)
        self.image_size = int(image_size)
        self.train(False)

    def train(self, mode: bool = True) -> Victim:
        """Set the wrapper's flag only; the generator always stays in its official inference mode."""
        super().train(mode)
        self.generator.eval()
        return self

    # ---- targets -------------------------------------------------------------------------------------

    def target_names(self, mode: str = "all") -> list[str]:
        """Names of the targets :meth:`targets` builds in ``mode`` (independent of the batch)."""
        _check_mode(mode)
        return self._target_names(mode)

    def _target_names(self, mode: str) -> list[str]:
        raise NotImplementedError

    def targets(self, attrs40: Tensor, mode: str = "all") -> EditTargets:
        """Edit targets for a batch with CelebA labels ``attrs40`` ``[N,40]`` in {0,1} (file column order)."""
        _check_mode(mode)
        if attrs40.dim() != 2 or attrs40.shape[1] != len(CELEBA_ATTRS):
            raise ValueError(
                f"{self.name}: attrs40 must be [N, {len(CELEBA_ATTRS)}] CelebA labels in "
                f"list_attr_celeba.txt column order, got shape {list(attrs40.shape)}"
            )
        return EditTargets(self._target_names(mode), self._conditions(attrs40.to(torch.float32), mode))

    def _conditions(self, attrs40: Tensor, mode: str) -> Tensor:
        raise NotImplementedError

    # ---- forward passes ------------------------------------------------------------------------------

    def edit(self, x: Tensor, t: EditTargets) -> Tensor:
        """Edits of x ``[N,3,H,W]`` in [-1,1] for every target, ``[T,N,3,H,W]``: one batched pass over T*N."""
        return self.edit_with_feature(x, t)[0]

    def forward(self, x: Tensor, t: EditTargets) -> Tensor:
        """Same as :meth:`edit`."""
        return self.edit(x, t)

    def edit_with_feature(self, x: Tensor, t: EditTargets) -> tuple[Tensor, Tensor]:
        """``(edits [T,N,3,H,W], middle feature [T,N,C,h,w])`` from the same pass."""
        raise NotImplementedError

    def feature(self, x: Tensor, t: EditTargets) -> Tensor:
        """Middle feature TSDF stage 1 attacks, ``[T,N,C,h,w]`` (only the layers needed to compute it)."""
        raise NotImplementedError

    def _check_batch(self, x: Tensor, t: EditTargets) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: x must be [N,3,H,W] images in [-1,1], got shape {list(x.shape)}")
        if t.cond.shape[1] != x.shape[0]:
            raise ValueError(
                f"{self.name}: targets were built for a batch of {t.cond.shape[1]} images, x has {x.shape[0]}"
            )

    # ---- model card ----------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Model-card facts: name, arch, attrs, image_size, output range, target names per mode, #params."""
        lo_hi = self.output_range
        return {
            "name": self.name,
            "arch": self.arch,
            "attrs": list(self.attrs),
            "image_size": self.image_size,
            "output_range": "unbounded" if lo_hi is None else f"[{lo_hi[0]:g}, {lo_hi[1]:g}]",
            "target_names": {mode: self._target_names(mode) for mode in MODES},
            "num_params": sum(p.numel() for p in self.generator.parameters()),
        }


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown target mode {mode!r}; expected one of {list(MODES)}")


def _register_label_columns(victim: nn.Module, columns: list[int]) -> None:
    """The CelebA columns of the victim's labels as a non-persistent buffer (it follows the victim to its device),
    so that picking them from ``attrs40`` on that device copies no index from the host (a sync on CUDA) per call."""
    victim.register_buffer("label_columns", torch.tensor(columns, dtype=torch.long), persistent=False)


def _check_label_width(arch: str, attrs: Sequence[str], width: int, what: str) -> None:
    if len(attrs) != width:
        raise ValueError(
            f"{arch} victim: {len(attrs)} attrs {list(attrs)} but the generator's {what} is {width}"
        )


class _LabelVictim(Victim):
    """StarGAN / AttentionGAN: condition = CelebA labels of ``attrs``; targets follow ``create_labels``."""

    def __init__(self, generator: nn.Module, *, name: str, attrs: Sequence[str], image_size: int) -> None:
        columns = attr_indices(list(attrs))  # unknown names raise KeyError here, not at the first batch
        _check_label_width(self.arch, attrs, generator.c_dim, "c_dim")
        super().__init__(generator, name=name, attrs=attrs, image_size=image_size)
        _register_label_columns(self, columns)

    def _target_names(self, mode: str) -> list[str]:
        return [RECON] + (self.attrs if mode == "all" else [])

    def _conditions(self, attrs40: Tensor, mode: str) -> Tensor:
        c_org = attrs40.index_select(1, self.label_columns.to(attrs40.device))
        if mode == "train":
            return c_org.unsqueeze(0)
        return torch.cat([c_org.unsqueeze(0), stargan_targets(c_org, self.attrs)])

    def _flat(self, x: Tensor, t: EditTargets) -> tuple[Tensor, Tensor]:
        self._check_batch(x, t)
        return _repeat_over_targets(x, len(t)), t.cond.to(x).reshape(len(t) * x.shape[0], -1)

    def _image_and_feature(self, xs: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def edit_with_feature(self, x: Tensor, t: EditTargets) -> tuple[Tensor, Tensor]:
        y, feat = self._image_and_feature(*self._flat(x, t))
        return y.reshape(len(t), *x.shape), feat.reshape(len(t), x.shape[0], *feat.shape[1:])

    def feature(self, x: Tensor, t: EditTargets) -> Tensor:
        """``main[8]`` output (after the second down-sampling) ``[T,N,4*conv_dim,H/4,W/4]``."""
        feat = self.generator.main[: FEATURE_INDEX + 1](tile_condition(*self._flat(x, t)))
        return feat.reshape(len(t), x.shape[0], *feat.shape[1:])


class StarGANVictim(_LabelVictim):
    """StarGAN: edits in [-1,1] (tanh); targets ``recon`` (c_org) + one per attribute (create_labels)."""

    arch = "stargan"
    output_range = (-1.0, 1.0)

    def _image_and_feature(self, xs: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        return self.generator.forward_with_feature(xs, c)


class AttentionGANVictim(_LabelVictim):
    """AttentionGAN: the edit is ``result = content*a + x*(1-a)``; content has no tanh, so it is unbounded."""

    arch = "attentiongan"
    output_range = None

    def _image_and_feature(self, xs: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        (result, _, _), feat = self.generator.forward_with_feature(xs, c)
        return result, feat


class AttGANVictim(Victim):
    """AttGAN: edits in [-1,1] (tanh); targets ``recon`` (att_a) + one flip per attribute (with conflicts).

    Conditions are scaled as upstream: ``(v*2-1)*thres_int``, the edited attribute to ``±test_int``.
    The encoder runs once on the N images; the decoder runs once on the T*N (maps repeated per target).
    Middle feature: the deepest encoder map ``[T,N,min(enc_dim*2^(L-1),1024),S/2^L,S/2^L]``, the same
    for every target.
    """

    arch = "attgan"
    output_range = (-1.0, 1.0)

    def __init__(self, generator: AttGANGenerator, *, name: str, attrs: Sequence[str], image_size: int,
                 thres_int: float, test_int: float) -> None:
        columns = attr_indices(list(attrs))
        _check_label_width(self.arch, attrs, generator.n_attrs, "n_attrs")
        if thres_int <= 0:
            raise ValueError(f"attgan victim: thres_int must be > 0, got {thres_int}")
        super().__init__(generator, name=name, attrs=attrs, image_size=image_size)
        _register_label_columns(self, columns)
        self.thres_int = float(thres_int)
        self.test_int = float(test_int)

    def _target_names(self, mode: str) -> list[str]:
        return [RECON] + (self.attrs if mode == "all" else [])

    def _conditions(self, attrs40: Tensor, mode: str) -> Tensor:
        att_a = attrs40.index_select(1, self.label_columns.to(attrs40.device))
        if mode == "train":
            return ((att_a * 2 - 1) * self.thres_int).unsqueeze(0)
        return attgan_targets(att_a, self.attrs, thres_int=self.thres_int, test_int=self.test_int)

    def edit_with_feature(self, x: Tensor, t: EditTargets) -> tuple[Tensor, Tensor]:
        self._check_batch(x, t)
        zs = self.generator.encode(x)
        a = t.cond.to(x).reshape(len(t) * x.shape[0], -1)
        y = self.generator.decode([_repeat_over_targets(z, len(t)) for z in zs], a)
        return y.reshape(len(t), *x.shape), _broadcast_over_targets(zs[-1], len(t))

    def feature(self, x: Tensor, t: EditTargets) -> Tensor:
        self._check_batch(x, t)
        return _broadcast_over_targets(self.generator.encode(x)[-1], len(t))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "thres_int": self.thres_int, "test_int": self.test_int}


class HiSDVictim(Victim):
    """HiSD: ``decode(translate(encode(x), style, tag))``; decode has no tanh, so edits are unbounded.

    Targets: ``ref_<tag name>`` = reference-guided edit with style ``extract(reference, tag)`` (mode
    ``"train"`` has only this one); mode ``"all"`` adds ``latent_<tag name>_<attribute>`` for every
    (tag, attribute) pair with style ``map(z, tag, attribute)``, z ``[1,noise_dim]`` drawn in pair order from
    a CPU generator seeded with ``latent_seed``. Styles are the same for every image of the batch.
    ``encode(x)`` runs once and is reused by every target; it is also the middle feature
    ``[T,N,encoder[-1],H/4,W/4]`` (target independent).
    """

    arch = "hisd"
    output_range = None

    def __init__(self, generator: HiSDGenerator, *, name: str, image_size: int, reference: Tensor,
                 tag: int, latent_seed: int) -> None:
        tags = generator.tags
        if not 0 <= tag < len(tags):
            raise ValueError(f"hisd victim: tag {tag} out of range; tags are "
                             + ", ".join(f"{i}={t['name']}" for i, t in enumerate(tags)))
        if reference.dim() != 4 or reference.shape[0] != 1 or reference.shape[1] != generator.input_dim:
            raise ValueError(f"hisd victim: reference must be [1,{generator.input_dim},H,W] in [-1,1], "
                             f"got shape {list(reference.shape)}")
        super().__init__(generator, name=name, attrs=generator.tag_names, image_size=image_size)
        self.tag = tag
        self.latent_seed = int(latent_seed)
        self.register_buffer("reference", reference.detach().clone(), persistent=False)
        pairs = [(i, j) for i, t in enumerate(tags) for j in range(len(t["attributes"]))]
        rng = torch.Generator().manual_seed(self.latent_seed)
        self.register_buffer("latents", torch.randn(len(pairs), 1, generator.noise_dim, generator=rng),
                             persistent=False)
        self._ref_name = f"ref_{tags[tag]['name']}"
        self._latent_names = [f"latent_{tags[i]['name']}_{tags[i]['attributes'][j]}" for i, j in pairs]
        self._pairs = pairs
        self._tag_of = {self._ref_name: tag, **{n: i for n, (i, _) in zip(self._latent_names, pairs)}}

    def _target_names(self, mode: str) -> list[str]:
        return [self._ref_name] + (self._latent_names if mode == "all" else [])

    def _conditions(self, attrs40: Tensor, mode: str) -> Tensor:
        gen = self.generator
        with torch.no_grad():
            styles = [gen.extract(self.reference, self.tag)]
            if mode == "all":
                styles += [gen.map(z, i, j) for z, (i, j) in zip(self.latents, self._pairs)]
        return torch.stack([s.expand(attrs40.shape[0], -1) for s in styles]).to(attrs40.device)

    def _translate(self, e: Tensor, t: EditTargets) -> Tensor:
        """Translated codes ``[T*N,E,h,w]`` (target-major): one translate call per distinct tag."""
        try:
            tags = [self._tag_of[name] for name in t.names]
        except KeyError as err:
            raise ValueError(
                f"{self.name}: unknown target {err.args[0]!r}; known: {list(self._tag_of)}"
            ) from None
        styles = t.cond.to(e)
        pieces: list[Tensor] = []
        order: list[int] = []
        # Python-int indexing only: no index tensor is copied to the device (CUDA-graph capturable).
        for tag in sorted(set(tags)):
            idx = [i for i, tg in enumerate(tags) if tg == tag]
            s = torch.cat([styles[i] for i in idx])                                    # [len(idx)*N, S]
            pieces.append(self.generator.translate(_repeat_over_targets(e, len(idx)), s, tag).reshape(
                len(idx), *e.shape))
            order += idx
        stacked = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
        if order != sorted(order):
            position = {target: k for k, target in enumerate(order)}
            stacked = torch.stack([stacked[position[i]] for i in range(len(order))])
        return stacked.reshape(len(t) * e.shape[0], *e.shape[1:])

    def edit_with_feature(self, x: Tensor, t: EditTargets) -> tuple[Tensor, Tensor]:
        self._check_batch(x, t)
        e = self.generator.encode(x)
        y = self.generator.decode(self._translate(e, t))
        return y.reshape(len(t), x.shape[0], *y.shape[1:]), _broadcast_over_targets(e, len(t))

    def feature(self, x: Tensor, t: EditTargets) -> Tensor:
        self._check_batch(x, t)
        return _broadcast_over_targets(self.generator.encode(x), len(t))

    def self_translation(self, x: Tensor) -> Tensor:
        """HiSD's analogue of ``G(x, c_org)``: every tag's translation with ``x``'s own extracted style,
        ``[T,N,3,S,S]`` (unbounded) for ``x [N,3,S,S]`` in [-1,1], ``T`` = number of tags."""
        gen = self.generator
        e = gen.encode(x)
        return torch.stack([gen.decode(gen.translate(e, gen.extract(x, tag), tag)) for tag in range(len(gen.tags))])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "tag": self.tag, "latent_seed": self.latent_seed}


_GENERATOR_TYPES: dict[str, type[nn.Module]] = {
    "stargan": StarGANGenerator,
    "attentiongan": AttentionGANGenerator,
    "attgan": AttGANGenerator,
    "hisd": HiSDGenerator,
}


def make_victim(arch: str, generator: nn.Module, **options: Any) -> Victim:
    """Wrap ``generator`` (frozen in place: ``requires_grad_(False)``, official inference mode) as a victim.

    Options (all optional except HiSD's ``reference``): ``name`` (default ``arch``);
    stargan / attentiongan: ``attrs`` (label order, default the 5 official attrs), ``image_size`` (256);
    attgan: ``attrs`` (default the 13 official attrs), ``thres_int`` (0.5), ``test_int`` (1.0), image size =
    the generator's ``img_size``; hisd: ``reference`` ``[1,3,H,W]`` in [-1,1] (the glasses reference image),
    ``tag`` (1 = Eyeglasses), ``latent_seed`` (0), image size = the generator's ``image_size``.
    """
    if arch not in _GENERATOR_TYPES:
        raise ValueError(f"unknown victim arch {arch!r}; expected one of {list(_GENERATOR_TYPES)}")
    expected = _GENERATOR_TYPES[arch]
    if not isinstance(generator, expected):
        raise TypeError(f"{arch} victim needs a {expected.__name__}, got {type(generator).__name__}")
    allowed = {
        "stargan": {"name", "attrs", "image_size"},
        "attentiongan": {"name", "attrs", "image_size"},
        "attgan": {"name", "attrs", "thres_int", "test_int"},
        "hisd": {"name", "reference", "tag", "latent_seed"},
    }[arch]
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"{arch} victim: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    name = options.get("name", arch)
    if arch in ("stargan", "attentiongan"):
        cls = StarGANVictim if arch == "stargan" else AttentionGANVictim
        return cls(generator, name=name, attrs=options.get("attrs", STARGAN_ATTRS),
                   image_size=options.get("image_size", 256))
    if arch == "attgan":
        return AttGANVictim(generator, name=name, attrs=options.get("attrs", ATTGAN_ATTRS),
                            image_size=generator.img_size, thres_int=options.get("thres_int", 0.5),
                            test_int=options.get("test_int", 1.0))
    if "reference" not in options:
        raise ValueError(
            "hisd victim needs reference=Tensor[1,3,H,W] in [-1,1] (the glasses reference image)"
        )
    return HiSDVictim(generator, name=name, image_size=generator.image_size, reference=options["reference"],
                      tag=options.get("tag", 1), latent_seed=options.get("latent_seed", 0))
