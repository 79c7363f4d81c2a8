"""AttGAN generator and discriminator (elvisyjlin/AttGAN-PyTorch ``attgan.py`` / ``nn.py`` layout and names).

Default = the ``256_shortcut1_inject0_none`` setting used by CMUA-Watermark / TSDF.  Every conv is 4x4,
stride 2, padding 1; a conv has a bias only where no norm follows.  The official code calls
``attgan.eval()``, so the generator's BatchNorm layers use their running statistics at inference.
"""

from __future__ import annotations

import torch
from torch import nn

MAX_DIM = 1024  # channel cap of the official architecture


class Block(nn.Module):
    """``layers = Sequential(conv_or_linear, [norm], [activation])`` (the upstream ``*Block`` key layout)."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _tile(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Attribute vector ``[N,A]`` tiled to the spatial size of ``like`` -> ``[N,A,h,w]``."""
    return a.to(like.dtype).view(a.shape[0], -1, 1, 1).expand(-1, -1, like.shape[2], like.shape[3])


class AttGANGenerator(nn.Module):
    """AttGAN G: x ``[N,3,S,S]`` in [-1,1] and attributes a ``[N,n_attrs]`` (scaled, e.g. +-0.5) -> ``[N,3,S,S]``.

    Encoder: ``enc_layers`` conv + BatchNorm + LeakyReLU(0.01) blocks, channels ``min(enc_dim*2^i, 1024)``.
    Decoder: ConvTranspose + BatchNorm + ReLU blocks, the last one ConvTranspose(bias) + Tanh; the tiled
    attributes are concatenated to the deepest feature, ``shortcut_layers`` encoder maps are concatenated
    after the first decoder blocks and the attributes are re-injected after the first ``inject_layers``.
    """

    def __init__(self, *, enc_dim: int = 64, enc_layers: int = 5, dec_dim: int = 64, dec_layers: int = 5,
                 n_attrs: int = 13, shortcut_layers: int = 1, inject_layers: int = 0, img_size: int = 256) -> None:
        super().__init__()
        if enc_layers != dec_layers:
            raise ValueError(f"enc_layers ({enc_layers}) must equal dec_layers ({dec_layers}): the decoder "
                             "upsamples once per layer back to img_size and shortcuts pair maps by depth")
        if img_size % 2**enc_layers:
            raise ValueError(f"img_size {img_size} must be a multiple of 2**enc_layers = {2**enc_layers}")
        self.enc_dim, self.dec_dim, self.n_attrs, self.img_size = enc_dim, dec_dim, n_attrs, img_size
        self.shortcut_layers = min(shortcut_layers, dec_layers - 1)
        self.inject_layers = min(inject_layers, dec_layers - 1)

        enc_channels = [min(enc_dim * 2**i, MAX_DIM) for i in range(enc_layers)]
        n_in = 3
        encoder = []
        for n_out in enc_channels:
            encoder.append(Block(nn.Conv2d(n_in, n_out, 4, stride=2, padding=1, bias=False),
                                 nn.BatchNorm2d(n_out), nn.LeakyReLU(0.01)))
            n_in = n_out
        self.enc_layers = nn.ModuleList(encoder)

        n_in = enc_channels[-1] + n_attrs
        decoder = []
        for i in range(dec_layers - 1):
            n_out = min(dec_dim * 2 ** (dec_layers - i - 1), MAX_DIM)
            decoder.append(Block(nn.ConvTranspose2d(n_in, n_out, 4, stride=2, padding=1, bias=False),
                                 nn.BatchNorm2d(n_out), nn.ReLU()))
            n_in = n_out
            if i < self.shortcut_layers:
                n_in += enc_channels[dec_layers - 2 - i]
            if i < self.inject_layers:
                n_in += n_attrs
        decoder.append(Block(nn.ConvTranspose2d(n_in, 3, 4, stride=2, padding=1, bias=True), nn.Tanh()))
        self.dec_layers = nn.ModuleList(decoder)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder maps, shallow to deep: ``[N,min(enc_dim*2^i,1024),S/2^(i+1),S/2^(i+1)]`` for each layer i."""
        zs = []
        z = x
        for layer in self.enc_layers:
            z = layer(z)
            zs.append(z)
        return zs

    def decode(self, zs: list[torch.Tensor], a: torch.Tensor) -> torch.Tensor:
        """Image ``[N,3,S,S]`` in [-1,1] from the encoder maps ``zs`` and attributes ``a`` ``[N,n_attrs]``."""
        z = torch.cat([zs[-1], _tile(a, zs[-1])], dim=1)
        for i, layer in enumerate(self.dec_layers):
            z = layer(z)
            if i < self.shortcut_layers:
                z = torch.cat([z, zs[len(self.dec_layers) - 2 - i]], dim=1)
            if i < self.inject_layers:
                z = torch.cat([z, _tile(a, z)], dim=1)
        return z

    def forward(self, x: torch.Tensor | list[torch.Tensor], a: torch.Tensor | None = None,
                mode: str = "enc-dec") -> torch.Tensor | list[torch.Tensor]:
        """``mode='enc-dec'``: image from x and a; ``'enc'``: ``encode(x)``; ``'dec'``: ``decode(x, a)`` (x = maps)."""
        if mode == "enc":
            return self.encode(x)
        if mode not in ("enc-dec", "dec"):
            raise ValueError(f"unknown mode {mode!r}; expected 'enc-dec', 'enc' or 'dec'")
        if a is None:
            raise ValueError(f"mode {mode!r} needs the attribute vector a [N,{self.n_attrs}]")
        return self.decode(self.encode(x) if mode == "enc-dec" else x, a)


class AttGANDiscriminator(nn.Module):
    """AttGAN D (upstream ``Discriminators``): x ``[N,3,S,S]`` -> ``(adv [N,1], cls logits [N,n_attrs])``.

    ``n_layers`` conv + InstanceNorm(affine) + LeakyReLU(0.01) blocks, then two heads
    ``Linear(C*f*f, fc_dim) + ReLU -> Linear(fc_dim, 1 | n_attrs)`` with f = S / 2^n_layers (upstream
    ``train.py``: ``dis_acti='lrelu'`` for the convs, ``dis_fc_acti='relu'`` for the heads).
    """

    def __init__(self, dim: int = 64, n_layers: int = 5, fc_dim: int = 1024, n_attrs: int = 13,
                 img_size: int = 256) -> None:
        super().__init__()
        if img_size % 2**n_layers:
            raise ValueError(f"img_size {img_size} must be a multiple of 2**n_layers = {2**n_layers}")
        self.dim, self.n_layers, self.fc_dim, self.n_attrs, self.img_size = dim, n_layers, fc_dim, n_attrs, img_size
        layers = []
        n_in = 3
        for i in range(n_layers):
            n_out = min(dim * 2**i, MAX_DIM)
            layers.append(Block(nn.Conv2d(n_in, n_out, 4, stride=2, padding=1, bias=False),
                                nn.InstanceNorm2d(n_out, affine=True), nn.LeakyReLU(0.01)))
            n_in = n_out
        self.conv = nn.Sequential(*layers)
        n_flat = n_in * (img_size // 2**n_layers) ** 2
        self.fc_adv = nn.Sequential(Block(nn.Linear(n_flat, fc_dim), nn.ReLU()),
                                    Block(nn.Linear(fc_dim, 1)))
        self.fc_cls = nn.Sequential(Block(nn.Linear(n_flat, fc_dim), nn.ReLU()),
                                    Block(nn.Linear(fc_dim, n_attrs)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(x).flatten(1)
        return self.fc_adv(h), self.fc_cls(h)
