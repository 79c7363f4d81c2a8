"""Training configurations: one dataclass per architecture, defaults = the upstream training scripts.

Every config shares the loop settings of :class:`TrainConfig`. Image sizes default to 256 px, the size of the
official CelebA checkpoints the pipeline attacks (upstream scripts default to 128 px; the models do not care).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tsdf_pipeline.data.attributes import ATTGAN_ATTRS, STARGAN_ATTRS
from tsdf_pipeline.models.hisd import DEFAULT_CONFIG as HISD_DEFAULT_CONFIG

# Settings that may differ between a run and its resume. All but ``num_iters`` leave the numbers unchanged;
# raising ``num_iters`` trains longer (StarGAN's linear lr decay then follows the new end).
RUNTIME_FIELDS: frozenset[str] = frozenset(
    {"num_iters", "checkpoint_every", "sample_every", "log_every", "device", "progress", "resume"}
)


@dataclass
class TrainConfig:
    """Loop settings shared by every architecture.

    ``num_iters`` counts loop iterations (one batch each). ``checkpoint_every``/``sample_every``/``log_every``
    are in iterations; 0 disables periodic checkpoints/samples (the final state is always written).
    ``device`` None picks CUDA when available. ``resume`` continues from ``out_dir``'s training state if one
    exists. ``n_samples`` images (the first ones of the dataset) make the sample grids.
    The first ``discriminator_warmup_iters`` of the ``num_iters`` iterations update D only, with G frozen (the
    TSDF release trains HiSD's D this way before the attacker's fine-tuning, ``HiSD/core/train_discriminator.py``).
    """

    image_size: int = 256
    batch_size: int = 16
    num_iters: int = 200_000
    seed: int = 0
    checkpoint_every: int = 10_000
    sample_every: int = 1_000
    log_every: int = 10
    device: str | None = None
    n_samples: int = 8
    progress: bool = True
    resume: bool = True
    discriminator_warmup_iters: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` (tuples become lists) suitable for a weights-only checkpoint."""
        return _plain(dataclasses.asdict(self))

    def resume_settings(self) -> dict[str, Any]:
        """:meth:`to_dict` without ``RUNTIME_FIELDS``: what a resumed run must share with the run it continues."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}


@dataclass
class StarGANConfig(TrainConfig):
    """yunjey/stargan ``main.py`` defaults (CelebA): WGAN-GP + domain classification + cycle reconstruction.

    ``lr_update_step``: every this many iterations within the last ``num_iters_decay`` iterations both
    learning rates drop by ``lr / num_iters_decay``, exactly as upstream (with the defaults: 100 drops of
    1e-5 * lr, i.e. a 0.1% decrease overall; ``lr_update_step=1`` gives a linear decay to 0).
    ``lambda_id`` > 0 (not upstream; CycleGAN's identity loss, Zhu et al. 2017) adds ``lambda_id ·
    |G(x, c_org) − x|₁`` to G's loss: upstream only trains ``G(·, c_org)`` on fakes (the cycle), so a small
    model's reconstruction of a real image can stay far from it (docs/fidelity.md).
    """

    selected_attrs: tuple[str, ...] = STARGAN_ATTRS
    g_conv_dim: int = 64
    d_conv_dim: int = 64
    g_repeat_num: int = 6
    d_repeat_num: int = 6
    lambda_cls: float = 1.0
    lambda_rec: float = 10.0
    lambda_gp: float = 10.0
    lambda_id: float = 0.0  # weight of the identity term |G(x, c_org) - x| (not upstream; 0: off)
    num_iters_decay: int = 100_000
    lr_update_step: int = 1_000
    g_lr: float = 1e-4
    d_lr: float = 1e-4
    n_critic: int = 5
    beta1: float = 0.5
    beta2: float = 0.999


@dataclass
class AttentionGANConfig(StarGANConfig):
    """Ha0Tang/AttentionGAN ``AttentionGAN-v1-multi/main.py`` defaults: identical to StarGAN's."""


@dataclass
class AttGANConfig(TrainConfig):
    """elvisyjlin/AttGAN-PyTorch ``train.py`` defaults, WGAN-GP mode.

    Each iteration is either a D step or a G step: G every ``n_d + 1``-th iteration. ``lambda_1`` weighs the
    reconstruction, ``lambda_2`` G's attribute classification, ``lambda_3`` D's. Conditions are
    ``(att*2-1)*thres_int``; ``b_distribution`` "uniform"/"truncated_normal" rescales the target randomly.
    The learning rate is divided by 10 every ``lr_decay_epochs`` epochs (``len(dataset)//batch_size``
    iterations each). ``num_iters`` defaults to upstream's 200 epochs of the 182,000-image CelebA train split.
    """

    batch_size: int = 32
    num_iters: int = 200 * (182_000 // 32)
    attrs: tuple[str, ...] = ATTGAN_ATTRS
    enc_dim: int = 64
    enc_layers: int = 5
    dec_dim: int = 64
    dec_layers: int = 5
    shortcut_layers: int = 1
    inject_layers: int = 0
    dis_dim: int = 64
    dis_fc_dim: int = 1024
    dis_layers: int = 5
    lambda_1: float = 100.0
    lambda_2: float = 10.0
    lambda_3: float = 1.0
    lambda_gp: float = 10.0
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_d: int = 5
    b_distribution: str = "none"
    thres_int: float = 0.5
    test_int: float = 1.0
    lr_decay_epochs: int = 100


def _celeba_hq_tag_rules() -> dict[str, dict[str, dict[str, int]]]:
    """HiSD ``preprocessors/celeba-hq.py``: tag -> attribute -> required CelebA column values (0/1)."""
    no_hair = {"Black_Hair": 0, "Blond_Hair": 0, "Brown_Hair": 0, "Gray_Hair": 0}
    return {
        "Bangs": {"with": {"Bangs": 1}, "without": {"Bangs": 0}},
        "Eyeglasses": {"with": {"Eyeglasses": 1}, "without": {"Eyeglasses": 0}},
        "HairColor": {
            "black": {**no_hair, "Black_Hair": 1},
            "blond": {**no_hair, "Blond_Hair": 1},
            "brown": {**no_hair, "Brown_Hair": 1},
        },
    }


def _hisd_generator_sizes() -> dict[str, Any]:
    """``configs/celeba-hq_256.yaml`` generator sizes: ``models.hisd.DEFAULT_CONFIG`` without the keys the
    trainer sets itself (``tags`` from ``tag_rules``, ``new_size`` from ``image_size``, ``input_dim``)."""
    return {k: copy.deepcopy(v) for k, v in HISD_DEFAULT_CONFIG.items() if k not in ("tags", "new_size", "input_dim")}


DISTILL_PARTS = ("extractor", "translators", "mappers")  # HiSDConfig.distill_parts: what a distillation may train


@dataclass
class HiSDConfig(TrainConfig):
    """imlixinyang/HiSD ``configs/celeba-hq_256.yaml`` and ``core/trainer.py`` defaults.

    ``tag_rules`` maps tag -> attribute -> the CelebA columns (name -> 0/1) an image must match to belong to
    that attribute; an image matching no attribute of a tag (e.g. no single hair colour) is not used for
    that tag. The order of tags and attributes is the generator's tag/attribute index order.
    ``condition_attrs`` are the tag-irrelevant conditions fed to D as ±1 (upstream: Male, Young).
    ``generator``: HiSD generator sizes (keys of ``models.hisd.DEFAULT_CONFIG`` except ``tags``,
    ``new_size``, ``input_dim``); ``dis_channels``: D trunk channels.
    ``ali_w`` < 1 (not upstream) scales the gradient that G's loss on real pairs (the ALI term) sends to the
    extractor (0 detaches it; values unchanged): at demo size that term drives the extracted styles' norm up
    until training diverges.
    ``ref_w`` > 0 (not upstream; imlixinyang/HiSD#18) adds a reference-guided path: the codes of the batch are
    also translated with the style extracted from a batch of the target attribute, judged by D as a translated
    image of that attribute (D counts it as another fake), plus the style reconstruction of that reference style;
    G's term is weighted ``ref_w`` (adversarial ``adv_w``, style ``sty_w`` inside), and so is D's.
    ``optimistic`` (not upstream; Daskalakis et al., "Training GANs with Optimism", 2018): G's and D's Adam steps
    take ``2·g_t − g_{t−1}`` (the clipped gradients), which damps the rotation of a bilinear game such as the one
    between HiSD's extractor and D's linear style input; ``g_{t−1}`` is kept in the optimizer state (resumable).
    ``mismatch_w`` > 0 (not upstream; the matching-aware discriminator of Reed et al., "Generative Adversarial
    Text to Image Synthesis", 2016) adds to D's loss ``mismatch_w · relu(1 + D_trg(x, s_ref)[j_trg])``: the real
    source image ``x`` (attribute ``j``), paired with the style ``s_ref`` extracted from a fresh batch of real
    ``j_trg`` images, is a fake for the target attribute's translated head. Upstream's heads only ever see real
    images of their own attribute, so on small data a head need not learn the attribute at all.
    ``dis_head_kernel`` > 1 (not upstream; 1 is) replaces D's global average pool and 1x1 heads by
    position-aware ``k x k`` heads over the trunk's final map (``image_size = k * 2**(len(dis_channels)-1)``),
    the layout of StarGAN's classifier: with the pool, D fits the demo training images' Male labels far more
    slowly (docs/fidelity.md). Only D changes; the generator and its checkpoint stay official.
    ``cls_w`` > 0 (not upstream; StarGAN's auxiliary classifier, Odena et al. 2017) gives D a per-tag attribute
    classifier over its trunk (``HiSDDiscriminator.classify``), trained with cross-entropy on the real batch's
    attribute ``j``; G's loss gains ``cls_w ·`` the cross-entropy of its latent-guided translation ``x_trg``
    against the target attribute ``j_trg``. D's loss gains the real term with the same weight.
    ``teacher_w`` > 0 (not upstream; :mod:`tsdf_pipeline.training.teacher`) adds ``teacher_w ·`` the L1 distance
    of the latent-guided translation ``x_trg`` and of a reference-guided translation (style extracted from a
    batch of ``j_trg`` images) to the (detached) self-translation plus ``teacher_scale`` times the mean edit of
    the frozen ``teachers`` (StarGAN / AttentionGAN / AttGAN victim specs as in ``model_loading.victims``) to
    ``j_trg``'s labels: the translator learns the teachers' edit on top of its own reconstruction.
    ``distill_tags`` (not upstream; empty: off) turns the run into an edit distillation that fine-tunes a trained
    generator (``init_checkpoint``) without D: each step draws one of these tags and regresses its latent- and
    reference-guided translations to ``j_trg`` onto the anchor's self-translation plus ``teacher_scale`` times the
    teachers' edit (weight ``teacher_w``), and its self-translation onto the anchor's (weight ``rec_w``). The
    anchor is a frozen copy of the generator as the run starts. Only those tags' translators and mappers and the
    style extractor learn (learning rates ``lr_gen_others`` / ``lr_gen_mappers``; ``distill_parts`` narrows that to
    some of ``extractor``, ``translators``, ``mappers``); the encoder, decoder and other tags stay as loaded. At
    demo size the GAN objective does not learn the teachers' edit (docs/fidelity.md).
    ``style_align_w`` > 0 (a distillation whose ``distill_parts`` include the extractor; not upstream) adds
    ``style_align_w ·`` the L1 distance of the styles extracted from the real source batch (attribute ``j``) and
    the reference batch (``j_trg``) to styles the (detached) mapper gives those attributes for fresh noise: the
    extractor learns to put a real image of an attribute where the latent-guided edit already works, which the
    reference-guided edit needs.
    """

    batch_size: int = 8
    num_iters: int = 600_000
    tag_rules: dict[str, dict[str, dict[str, int]]] = field(default_factory=_celeba_hq_tag_rules)
    condition_attrs: tuple[str, ...] = ("Male", "Young")
    generator: dict[str, Any] = field(default_factory=_hisd_generator_sizes)
    dis_channels: tuple[int, ...] = (32, 64, 128, 256, 512, 512, 512)
    lr_dis: float = 1e-4
    lr_gen_others: float = 1e-4
    lr_gen_mappers: float = 1e-6
    beta1: float = 0.0
    beta2: float = 0.99
    weight_decay: float = 0.0
    adv_w: float = 1.0
    sty_w: float = 1.0
    rec_w: float = 1.0
    r1_w: float = 1.0  # weight of D's R1 penalty (upstream: fixed 1)
    ema_beta: float = 0.99
    grad_clip: float = 100.0
    ali_w: float = 1.0  # scales the gradient of G's loss on (real image, extracted style) pairs to the extractor
    ref_w: float = 0.0  # weight of the reference-guided translation term (not upstream; 0: off)
    color_jitter: float = 0.1  # upstream loader's ColorJitter(0.1, 0.1, 0.1, 0.1) per image (0: off)
    optimistic: bool = False  # feed Adam 2·g_t − g_{t−1} (optimistic gradient; not upstream)
    mismatch_w: float = 0.0  # weight of D's real-but-wrong-attribute term (not upstream; 0: off)
    dis_head_kernel: int = 1  # 1: upstream pooled 1x1 heads; k > 1: position-aware k x k heads (not upstream)
    cls_w: float = 0.0  # weight of the auxiliary attribute classification terms of G and D (not upstream; 0: off)
    teacher_w: float = 0.0  # weight of the edit teachers' paired L1 terms (not upstream; 0: off)
    teacher_scale: float = 1.0  # multiplies the teachers' mean edit in the paired target
    teachers: tuple[dict[str, Any], ...] = ()  # victim specs of the frozen edit teachers (teacher_w > 0)
    distill_tags: tuple[str, ...] = ()  # tags whose edits are distilled from the teachers, without D (not upstream)
    distill_parts: tuple[str, ...] = DISTILL_PARTS  # the generator parts that learn in a distillation
    style_align_w: float = 0.0  # distillation: weight of the extracted-to-mapped style term (not upstream; 0: off)


CONFIG_CLASSES: dict[str, type[TrainConfig]] = {
    "stargan": StarGANConfig,
    "attentiongan": AttentionGANConfig,
    "attgan": AttGANConfig,
    "hisd": HiSDConfig,
}


def make_config(arch: str, **overrides: Any) -> TrainConfig:
    """The upstream-default config of ``arch`` with ``overrides``; unknown keys, and values of the wrong type
    for a number / flag field (e.g. the string ``'1e-4'`` that YAML 1.1 makes of ``1e-4``), raise ``TypeError``
    naming them.

    Lists given for tuple fields (e.g. from YAML) are converted to tuples; ints are accepted for float fields.
    """
    if arch not in CONFIG_CLASSES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(CONFIG_CLASSES)}")
    cls = CONFIG_CLASSES[arch]
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise TypeError(f"{cls.__name__}: unknown config keys {unknown}; expected a subset of {sorted(names)}")
    for key, value in overrides.items():
        _check_scalar_type(cls.__name__, key, str(names[key].type), value)
    values = {k: tuple(v) if isinstance(v, list) and _is_tuple_field(names[k]) else v for k, v in overrides.items()}
    return cls(**values)


_SCALAR_TYPES: dict[str, tuple[type, ...]] = {"float": (int, float), "int": (int,), "bool": (bool,)}


def _check_scalar_type(owner: str, key: str, annotation: str, value: Any) -> None:
    expected = _SCALAR_TYPES.get(annotation)
    if expected is None:
        return
    if isinstance(value, bool) != (annotation == "bool") or not isinstance(value, expected):
        raise TypeError(f"{owner}.{key} must be {annotation}, got {value!r} ({type(value).__name__})")


def _is_tuple_field(f: dataclasses.Field) -> bool:
    return str(f.type).startswith("tuple")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
