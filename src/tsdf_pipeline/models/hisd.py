"""HiSD generator and discriminator in the imlixinyang/HiSD ``core/networks.py`` layout.

State-dict keys and shapes equal the official ``Gen`` / ``Dis`` modules, so official checkpoints
(generator under ``'gen_test'``, discriminator under ``'dis'``) load strictly. Every channel list is
configurable: ``DEFAULT_CONFIG`` is ``configs/celeba-hq_256.yaml``, ``CONFIG_128`` is
``configs/celeba-hq.yaml``; small demo models use the same code with smaller lists.

Images are ``[N, input_dim, H, W]`` in [-1, 1]; the decoder has no tanh, so decoded images are
unbounded (close to [-1, 1] for a trained model).

Normalisation is HiSD's own instance norm, not ``nn.InstanceNorm2d``: per (sample, channel)
``(x - mean) / (std + 1e-5) * weight + bias`` with the *unbiased* std and eps added to the std.
It has no running statistics, so train / eval mode changes nothing.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tsdf_pipeline.models.layout import is_channels_last

_LRELU_SLOPE = 0.2
_NORM_EPS = 1e-5

CELEBA_HQ_TAGS: list[dict[str, Any]] = [
    {"name": "Bangs", "attributes": ["with", "without"]},
    {"name": "Eyeglasses", "attributes": ["with", "without"]},
    {"name": "HairColor", "attributes": ["black", "blond", "brown"]},
]

DEFAULT_CONFIG: dict[str, Any] = {
    "input_dim": 3,
    "new_size": 256,
    "style_dim": 256,
    "noise_dim": 32,
    "encoder": [64, 128, 256],
    "decoder": [256, 128, 64],
    "extractors": [32, 64, 128, 256, 512, 512, 512],
    "translators": [64, 64, 64, 64, 64, 64, 64, 64],
    "mappers_pre": [256, 256, 256],
    "mappers_post": [256, 256, 256],
    "tags": CELEBA_HQ_TAGS,
}

CONFIG_128: dict[str, Any] = {
    **DEFAULT_CONFIG,
    "new_size": 128,
    "extractors": [64, 128, 256, 512, 1024, 2048],
}

# ``tag_irrelevant_conditions_dim`` is 2 for every CelebA-HQ tag in the official configs.
DIS_DEFAULT_CONFIG: dict[str, Any] = {
    "input_dim": 3,
    "style_dim": 256,
    "channels": [32, 64, 128, 256, 512, 512, 512],
    "tags": [{**tag, "tag_irrelevant_conditions_dim": 2} for tag in CELEBA_HQ_TAGS],
    "head_kernel": 1,
    "classifier": False,
}

DIS_CONFIG_128: dict[str, Any] = {**DIS_DEFAULT_CONFIG, "channels": [64, 128, 256, 512, 1024, 2048]}

_TAG_KEYS = {"name", "attributes", "tag_irrelevant_conditions_dim"}


# ------------------------------------------------------------------------------------------
# Config handling
# ------------------------------------------------------------------------------------------


def _resolve_config(what: str, defaults: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overridden by ``config``; unknown keys raise ``TypeError`` naming them."""
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise TypeError(f"{what}: unknown config keys {unknown}; expected a subset of {sorted(defaults)}")
    return copy.deepcopy({**defaults, **config})


def _channels(what: str, key: str, value: Any, min_len: int = 1) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) < min_len:
        raise ValueError(f"{what}: config {key!r} must be a list of at least {min_len} channel counts, "
                         f"got {value!r}")
    out = [int(c) for c in value]
    if any(c <= 0 for c in out):
        raise ValueError(f"{what}: config {key!r} must hold positive channel counts, got {out}")
    return out


def _positive_int(what: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what}: config {key!r} must be a positive int, got {value!r}")
    return value


def _tags(what: str, value: Any) -> list[dict[str, Any]]:
    """Validate ``tags``: a non-empty list of ``{"name": str, "attributes": [str, ...]}``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"{what}: config 'tags' must be a non-empty list of "
                         f"{{'name': str, 'attributes': [str, ...]}}, got {value!r}")
    tags = []
    for i, tag in enumerate(value):
        if not isinstance(tag, Mapping) or not {"name", "attributes"} <= set(tag) or set(tag) - _TAG_KEYS:
            raise ValueError(f"{what}: config tags[{i}] must be a dict with keys 'name', 'attributes' "
                             f"(optional 'tag_irrelevant_conditions_dim'), got {tag!r}")
        attrs = tag["attributes"]
        if isinstance(attrs, (str, bytes)) or not isinstance(attrs, Sequence) or not attrs:
            raise ValueError(f"{what}: config tags[{i}]['attributes'] must be a non-empty list of names, "
                             f"got {attrs!r}")
        tags.append({**tag, "name": str(tag["name"]), "attributes": [str(a) for a in attrs]})
    return tags


def _check_index(what: str, kind: str, index: int, names: Sequence[str]) -> int:
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(names):
        raise ValueError(f"{what}: {kind} index {index!r} out of range; valid: "
                         + ", ".join(f"{i}={n}" for i, n in enumerate(names)))
    return index


def _check_shape(what: str, t: Tensor, ndim: int, dim1: int, layout: str) -> None:
    if t.dim() != ndim or t.shape[1] != dim1:
        raise ValueError(f"{what}: expected {layout} with {dim1} channels/features, got shape {list(t.shape)}")


def _official_init(module: nn.Module) -> None:
    """HiSD's ``weights_init('kaiming')``: He-normal (fan_in, ReLU) conv/linear weights, biases 0.01."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0.01)


# ------------------------------------------------------------------------------------------
# Normalisation and blocks
# ------------------------------------------------------------------------------------------


def std_instance_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = _NORM_EPS) -> Tensor:
    """HiSD instance norm of ``x [N,C,H,W]``: ``(x - mean) / (std + eps) * weight + bias``.

    Mean and unbiased std are taken per (sample, channel) over H*W; ``weight`` / ``bias`` broadcast
    to ``[N,C,1]`` (``[1,C,1]`` learnt parameters or ``[N,C,1]`` / ``[1,C,1]`` AdaIN parameters).
    A channels-last input (the CUDA path) is normalised as ``x·scale + shift`` with per-channel
    ``scale = weight/(std+eps)``, ``shift = bias - mean·scale``: the same expression rearranged, one statistics
    pass and one full-size pass instead of four, in the input's layout and dtype (bf16 under autocast; the small
    per-channel factors are formed in fp32). Other inputs take the official
    expression, so CPU results stay bit-identical to earlier releases of this project.
    """
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    if is_channels_last(x):
        std, mean = torch.std_mean(flat, -1, keepdim=True)
        scale = weight / (std.float() + eps)
        shift = bias - mean.float() * scale
        return torch.addcmul(shift.to(x.dtype), flat, scale.to(x.dtype)).view(n, c, h, w)
    mean = flat.mean(-1, keepdim=True)
    std = flat.std(-1, keepdim=True)
    return ((flat - mean) / (std + eps) * weight + bias).view(n, c, h, w)


def avg_pool_2x2(x: Tensor) -> Tensor:
    """``F.avg_pool2d(x, 2)`` ``[N,C,H,W] -> [N,C,H/2,W/2]``.

    A channels-last input with even H, W is pooled as a reshape-mean in its layout (same values up to the
    summation order): its backward is one broadcast, where avg_pool2d's channels-last backward kernel is slow
    on CUDA.
    """
    n, c, h, w = x.shape
    if not is_channels_last(x) or h % 2 or w % 2:
        return F.avg_pool2d(x, 2)
    return x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2, c).mean((2, 4)).permute(0, 3, 1, 2)


def upsample_nearest_2x(x: Tensor) -> Tensor:
    """``F.interpolate(x, scale_factor=2, mode="nearest")`` ``[N,C,H,W] -> [N,C,2H,2W]``; a channels-last
    input is upsampled as a broadcast in its layout (identical values, channels-last output)."""
    n, c, h, w = x.shape
    if not is_channels_last(x):
        return F.interpolate(x, scale_factor=2, mode="nearest")
    nhwc = x.permute(0, 2, 3, 1)[:, :, None, :, None, :].expand(n, h, 2, w, 2, c)
    return nhwc.reshape(n, 2 * h, 2 * w, c).permute(0, 3, 1, 2)


class StdInstanceNorm(nn.Module):
    """HiSD ``InstanceNorm2d`` with learnt ``weight`` / ``bias`` of shape ``[1,C,1]``; no buffers."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features
        self.weight = nn.Parameter(torch.ones(1, num_features, 1))
        self.bias = nn.Parameter(torch.zeros(1, num_features, 1))

    def forward(self, x: Tensor) -> Tensor:
        return std_instance_norm(x, self.weight, self.bias)


class DownBlock(nn.Module):
    """Residual downsampling block ``[N,in,H,W] -> [N,out,H/2,W/2]`` (``normalize``: HiSD DownBlockIN)."""

    def __init__(self, in_dim: int, out_dim: int, normalize: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, in_dim, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_dim, out_dim, 3, 1, 1)
        self.normalize = normalize
        if normalize:
            self.in1 = StdInstanceNorm(in_dim)
            self.in2 = StdInstanceNorm(in_dim)
        self.sc = nn.Conv2d(in_dim, out_dim, 1, 1, 0, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        residual = avg_pool_2x2(self.sc(x))
        out = self.in1(x) if self.normalize else x
        out = avg_pool_2x2(self.conv1(F.leaky_relu(out, _LRELU_SLOPE)))
        if self.normalize:
            out = self.in2(out)
        out = self.conv2(F.leaky_relu(out, _LRELU_SLOPE))
        return (residual + out) / math.sqrt(2)


class UpBlockIN(nn.Module):
    """Residual nearest-upsampling block with instance norm ``[N,in,H,W] -> [N,out,2H,2W]``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, out_dim, 3, 1, 1)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, 1, 1)
        self.in1 = StdInstanceNorm(in_dim)
        self.in2 = StdInstanceNorm(out_dim)
        self.sc = nn.Conv2d(in_dim, out_dim, 1, 1, 0, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        residual = upsample_nearest_2x(self.sc(x))
        out = upsample_nearest_2x(F.leaky_relu(self.in1(x), _LRELU_SLOPE))
        out = self.conv2(F.leaky_relu(self.in2(self.conv1(out)), _LRELU_SLOPE))
        return (residual + out) / math.sqrt(2)


class MiddleBlock(nn.Module):
    """Residual AdaIN block ``[N,in,H,W] -> [N,out,H,W]`` whose norm parameters come from a style.

    ``params [N or 1, num_adain_params]`` holds, in order, adain1 bias, adain1 weight - 1 (``in_dim``
    each), adain2 bias, adain2 weight - 1 (``out_dim`` each), as the official assignment loop.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.conv1 = nn.Conv2d(in_dim, out_dim, 3, 1, 1)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, 1, 1)
        self.sc = nn.Conv2d(in_dim, out_dim, 1, 1, 0, bias=False)

    @property
    def num_adain_params(self) -> int:
        return 2 * (self.in_dim + self.out_dim)

    def forward(self, x: Tensor, params: Tensor) -> Tensor:
        c1, c2 = self.in_dim, self.out_dim
        bias1 = params[:, :c1].reshape(-1, c1, 1)
        weight1 = params[:, c1:2 * c1].reshape(-1, c1, 1) + 1
        bias2 = params[:, 2 * c1:2 * c1 + c2].reshape(-1, c2, 1)
        weight2 = params[:, 2 * c1 + c2:2 * c1 + 2 * c2].reshape(-1, c2, 1) + 1
        residual = self.sc(x)
        out = self.conv1(F.leaky_relu(std_instance_norm(x, weight1, bias1), _LRELU_SLOPE))
        out = self.conv2(F.leaky_relu(std_instance_norm(out, weight2, bias2), _LRELU_SLOPE))
        return (residual + out) / math.sqrt(2)


class LinearBlock(nn.Module):
    """``linear(relu(x))`` (activation before the linear, as upstream)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(F.relu(x))


# ------------------------------------------------------------------------------------------
# Generator parts
# ------------------------------------------------------------------------------------------


class Extractors(nn.Module):
    """All tags' style extractors in one network: ``[N,input_dim,H,W] -> [N,n_tags,style_dim]``."""

    def __init__(self, input_dim: int, channels: Sequence[int], style_dim: int, num_tags: int) -> None:
        super().__init__()
        self.num_tags = num_tags
        self.model = nn.Sequential(
            nn.Conv2d(input_dim, channels[0], 1, 1, 0),
            *[DownBlock(channels[i], channels[i + 1]) for i in range(len(channels) - 1)],
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels[-1], style_dim * num_tags, 1, 1, 0),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).view(x.size(0), self.num_tags, -1)


class Translator(nn.Module):
    """One tag's translator: ``(e [N,E,h,w], s [N or 1,style_dim]) -> [N,E,h,w]`` (masked edit of e)."""

    def __init__(self, enc_dim: int, channels: Sequence[int], style_dim: int, out_dim: int) -> None:
        super().__init__()
        self.model = nn.ModuleList([
            nn.Conv2d(enc_dim, channels[0], 1, 1, 0),
            *[MiddleBlock(channels[i], channels[i + 1]) for i in range(len(channels) - 1)],
        ])
        self.style_to_params = nn.Linear(style_dim, sum(b.num_adain_params for b in self.model[1:]))
        self.features = nn.Sequential(nn.Conv2d(channels[-1], out_dim, 1, 1, 0))
        self.masks = nn.Sequential(nn.Conv2d(channels[-1], out_dim, 1, 1, 0), nn.Sigmoid())

    def forward(self, e: Tensor, s: Tensor) -> Tensor:
        params = self.style_to_params(s)
        mid = self.model[0](e)
        offset = 0
        for block in self.model[1:]:
            mid = block(mid, params[:, offset:offset + block.num_adain_params])
            offset += block.num_adain_params
        mask = self.masks(mid)
        return self.features(mid) * mask + e * (1 - mask)


class Mapper(nn.Module):
    """One tag's latent mapper: ``(z [N,noise_dim], attribute) -> style [N,style_dim]``."""

    def __init__(self, noise_dim: int, pre: Sequence[int], post: Sequence[int], style_dim: int,
                 num_attributes: int) -> None:
        super().__init__()
        self.pre_model = nn.Sequential(
            nn.Linear(noise_dim, pre[0]),
            *[LinearBlock(pre[i], pre[i + 1]) for i in range(len(pre) - 1)],
        )
        self.post_models = nn.ModuleList([
            nn.Sequential(
                *[LinearBlock(post[i], post[i + 1]) for i in range(len(post) - 1)],
                nn.Linear(post[-1], style_dim),
            )
            for _ in range(num_attributes)
        ])

    def forward(self, z: Tensor, attribute: int) -> Tensor:
        return self.post_models[attribute](self.pre_model(z))


class HiSDGenerator(nn.Module):
    """HiSD ``Gen``: encoder, decoder, extractors, per-tag translators and mappers.

    ``HiSDGenerator(**config)`` with the keys of ``DEFAULT_CONFIG`` (missing keys take the 256 px
    CelebA-HQ value): ``input_dim``, ``new_size`` (image side the model was trained at, kept as
    ``image_size``), ``style_dim``, ``noise_dim``, channel lists ``encoder``, ``decoder``,
    ``extractors``, ``translators``, ``mappers_pre``, ``mappers_post``, and ``tags`` (list of
    ``{"name": str, "attributes": [str, ...]}``). Weights start with the official kaiming init.

    Shapes at 256 px, default config: ``encode`` [N,256,64,64], ``extract`` [N,256],
    ``translate`` [N,256,64,64], ``decode`` [N,3,256,256], ``map`` [N,256].
    """

    def __init__(self, **config: Any) -> None:
        super().__init__()
        what = "HiSDGenerator"
        cfg = _resolve_config(what, DEFAULT_CONFIG, config)
        self.input_dim = _positive_int(what, "input_dim", cfg["input_dim"])
        self.image_size = _positive_int(what, "new_size", cfg["new_size"])
        self.style_dim = _positive_int(what, "style_dim", cfg["style_dim"])
        self.noise_dim = _positive_int(what, "noise_dim", cfg["noise_dim"])
        enc = _channels(what, "encoder", cfg["encoder"])
        dec = _channels(what, "decoder", cfg["decoder"])
        ext = _channels(what, "extractors", cfg["extractors"])
        trans = _channels(what, "translators", cfg["translators"])
        pre = _channels(what, "mappers_pre", cfg["mappers_pre"])
        post = _channels(what, "mappers_post", cfg["mappers_post"])
        self.tags = _tags(what, cfg["tags"])
        if dec[0] != enc[-1]:
            raise ValueError(f"{what}: decoder[0] ({dec[0]}) must equal encoder[-1] ({enc[-1]}): the decoder "
                             "and the translators work on the encoder output")
        if post[0] != pre[-1]:
            raise ValueError(f"{what}: mappers_post[0] ({post[0]}) must equal mappers_pre[-1] ({pre[-1]})")
        self.code_dim = enc[-1]
        self.config = {**cfg, "tags": copy.deepcopy(self.tags)}

        self.encoder = nn.Sequential(
            nn.Conv2d(self.input_dim, enc[0], 1, 1, 0),
            *[DownBlock(enc[i], enc[i + 1], normalize=True) for i in range(len(enc) - 1)],
        )
        self.decoder = nn.Sequential(
            *[UpBlockIN(dec[i], dec[i + 1]) for i in range(len(dec) - 1)],
            nn.Conv2d(dec[-1], self.input_dim, 1, 1, 0),
        )
        self.extractors = Extractors(self.input_dim, ext, self.style_dim, len(self.tags))
        self.translators = nn.ModuleList([
            Translator(enc[-1], trans, self.style_dim, dec[0]) for _ in self.tags
        ])
        self.mappers = nn.ModuleList([
            Mapper(self.noise_dim, pre, post, self.style_dim, len(tag["attributes"])) for tag in self.tags
        ])
        _official_init(self)

    @property
    def tag_names(self) -> list[str]:
        return [tag["name"] for tag in self.tags]

    def _tag(self, tag: int) -> int:
        return _check_index("HiSDGenerator", "tag", tag, self.tag_names)

    def encode(self, x: Tensor) -> Tensor:
        """Image ``[N,input_dim,H,W]`` in [-1,1] -> content code ``[N,encoder[-1],H/2^k,W/2^k]``."""
        _check_shape("HiSDGenerator.encode", x, 4, self.input_dim, "[N,C,H,W] images")
        return self.encoder(x)

    def extract(self, ref: Tensor, tag: int) -> Tensor:
        """Style of ``tag`` in reference images ``[N,input_dim,H,W]`` in [-1,1] -> ``[N,style_dim]``."""
        tag = self._tag(tag)
        _check_shape("HiSDGenerator.extract", ref, 4, self.input_dim, "[N,C,H,W] reference images")
        return self.extractors(ref)[:, tag]

    def translate(self, e: Tensor, s: Tensor, tag: int) -> Tensor:
        """Edit content code ``e [N,E,h,w]`` towards style ``s [N or 1,style_dim]`` of ``tag``."""
        tag = self._tag(tag)
        _check_shape("HiSDGenerator.translate", e, 4, self.code_dim, "[N,E,h,w] content code")
        _check_shape("HiSDGenerator.translate", s, 2, self.style_dim, "[N,style_dim] style")
        if s.shape[0] not in (1, e.shape[0]):
            raise ValueError(f"HiSDGenerator.translate: style batch {s.shape[0]} must be 1 or the code "
                             f"batch {e.shape[0]}")
        return self.translators[tag](e, s)

    def decode(self, e: Tensor) -> Tensor:
        """Content code ``[N,E,h,w]`` -> image ``[N,input_dim,h*2^k,w*2^k]`` (no tanh: unbounded)."""
        _check_shape("HiSDGenerator.decode", e, 4, self.code_dim, "[N,E,h,w] content code")
        return self.decoder(e)

    def map(self, z: Tensor, tag: int, attribute: int) -> Tensor:
        """Latent ``z [N,noise_dim]`` -> style ``[N,style_dim]`` of ``attribute`` of ``tag``."""
        tag = self._tag(tag)
        _check_index("HiSDGenerator", f"attribute (tag {self.tag_names[tag]})", attribute,
                     self.tags[tag]["attributes"])
        _check_shape("HiSDGenerator.map", z, 2, self.noise_dim, "[N,noise_dim] latent")
        return self.mappers[tag](z, attribute)


# ------------------------------------------------------------------------------------------
# Discriminator
# ------------------------------------------------------------------------------------------


class HiSDDiscriminator(nn.Module):
    """HiSD ``Dis``: shared conv trunk plus one 1x1 head per tag (keys ``conv.*``, ``fcs.<tag>.0.*``).

    ``HiSDDiscriminator(**config)`` with the keys of ``DIS_DEFAULT_CONFIG``: ``input_dim``,
    ``style_dim``, ``channels`` (trunk), ``tags`` (list of ``{"name", "attributes",
    "tag_irrelevant_conditions_dim"}``; the last defaults to 2, the CelebA-HQ value), ``head_kernel``, ``classifier``.
    ``head_kernel`` 1 is upstream: the trunk ends in a global average pool and the heads are 1x1. ``k`` > 1
    (not upstream) drops the pool and makes each head a ``k x k`` convolution over the trunk's final ``k x k``
    map, a position-aware head like StarGAN's classifier; inputs must then be ``k * 2**(len(channels)-1)`` px.
    ``classifier`` True (not upstream) adds per tag an attribute classifier over the same trunk (keys
    ``cls.<tag>.*``, same kernel as the heads), read by :meth:`classify`: StarGAN's auxiliary classifier.
    """

    def __init__(self, **config: Any) -> None:
        super().__init__()
        what = "HiSDDiscriminator"
        cfg = _resolve_config(what, DIS_DEFAULT_CONFIG, config)
        self.input_dim = _positive_int(what, "input_dim", cfg["input_dim"])
        self.style_dim = _positive_int(what, "style_dim", cfg["style_dim"])
        channels = _channels(what, "channels", cfg["channels"])
        self.tags = [{**tag, "tag_irrelevant_conditions_dim": int(tag.get("tag_irrelevant_conditions_dim", 2))}
                     for tag in _tags(what, cfg["tags"])]
        self.head_kernel = _positive_int(what, "head_kernel", cfg["head_kernel"])
        self.config = {**cfg, "tags": copy.deepcopy(self.tags)}

        self.conv = nn.Sequential(
            nn.Conv2d(self.input_dim, channels[0], 1, 1, 0),
            *[DownBlock(channels[i], channels[i + 1]) for i in range(len(channels) - 1)],
            # Upstream pools to 1x1; a position-aware head (head_kernel > 1, not upstream) sees the whole map.
            nn.AdaptiveAvgPool2d(1) if self.head_kernel == 1 else nn.Identity(),
        )
        self.input_size = self.head_kernel * 2 ** (len(channels) - 1) if self.head_kernel > 1 else None
        # Per tag: features + style (ALI part) + tag-irrelevant conditions -> one logit per
        # (head, attribute), head 0 = real / translated, head 1 = cycle-reconstructed.
        self.fcs = nn.ModuleList([
            nn.Sequential(nn.Conv2d(channels[-1] + self.style_dim + tag["tag_irrelevant_conditions_dim"],
                                    2 * len(tag["attributes"]), self.head_kernel, 1, 0))
            for tag in self.tags
        ])
        self.cls = nn.ModuleList([nn.Conv2d(channels[-1], len(tag["attributes"]), self.head_kernel, 1, 0)
                                  for tag in self.tags]) if cfg["classifier"] else None
        _official_init(self)

    def forward(self, x: Tensor, s: Tensor, y: Tensor, tag: int) -> Tensor:
        """Logits ``[N,2,n_attributes]`` for images ``x [N,input_dim,H,W]`` in [-1,1].

        ``s [N,style_dim]`` is the style paired with ``x``, ``y [N,tag_irrelevant_conditions_dim]``
        the tag-irrelevant conditions. Index ``[:, 0, j]`` scores attribute ``j`` for the
        real / translated head, ``[:, 1, j]`` for the cycle head (upstream ``view(N, 2, -1)``).
        """
        what = "HiSDDiscriminator.forward"
        tag = self._tag(tag)
        _check_shape(what, s, 2, self.style_dim, "[N,style_dim] style")
        _check_shape(what, y, 2, self.tags[tag]["tag_irrelevant_conditions_dim"], "[N,dim] conditions")
        f = self._trunk(what, x)
        n, _, h, w = f.shape
        fsy = torch.cat([f, s.reshape(n, s.shape[1], 1, 1).expand(-1, -1, h, w),
                         y.reshape(n, y.shape[1], 1, 1).expand(-1, -1, h, w).to(f.dtype)], 1)
        return self.fcs[tag](fsy).view(n, 2, -1)

    def classify(self, x: Tensor, tag: int) -> Tensor:
        """Attribute logits ``[N,n_attributes]`` of ``tag`` for images ``x [N,input_dim,H,W]`` in [-1,1]
        (only with ``classifier``)."""
        if self.cls is None:
            raise ValueError("HiSDDiscriminator.classify: built without classifier=True")
        tag = self._tag(tag)
        return self.cls[tag](self._trunk("HiSDDiscriminator.classify", x)).flatten(1)

    def _tag(self, tag: int) -> int:
        return _check_index("HiSDDiscriminator", "tag", tag, [t["name"] for t in self.tags])

    def _trunk(self, what: str, x: Tensor) -> Tensor:
        _check_shape(what, x, 4, self.input_dim, "[N,C,H,W] images")
        if self.input_size is not None and tuple(x.shape[2:]) != (self.input_size, self.input_size):
            raise ValueError(f"{what}: head_kernel {self.head_kernel} needs {self.input_size}x{self.input_size} "
                             f"images, got {tuple(x.shape[2:])}")
        return self.conv(x)


__all__ = [
    "CELEBA_HQ_TAGS", "CONFIG_128", "DEFAULT_CONFIG", "DIS_CONFIG_128", "DIS_DEFAULT_CONFIG",
    "DownBlock", "Extractors", "HiSDDiscriminator", "HiSDGenerator", "LinearBlock", "Mapper",
    "MiddleBlock", "StdInstanceNorm", "Translator", "UpBlockIN", "avg_pool_2x2", "std_instance_norm",
    "upsample_nearest_2x",
]
