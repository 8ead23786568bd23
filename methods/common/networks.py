"""Convolutional networks shared by GAN2Shape and Unsup3d (``method.md`` section 3).

Every network is a pure ``nn.Module`` with PyTorch's default initialisation and no state besides its parameters.
Layers sit in one ``self.network = nn.Sequential(...)`` in the originals' order (ConfNet adds ``out_net1`` and
``out_net2``; ResBlockDown has ``conv1``, ``conv2``, ``conv_sc``), so state_dict keys such as
``network.0.weight`` line up with checkpoints of XingangPan/GAN2Shape and elliottwu/unsup3d.

Size rules for an input of side ``S`` (a power of two, at least 64): ``nf = max(4096 // S, 16)``,
``gn_base = 8 if S >= 128 else 16`` and ``extra = log2(S) - 6`` additional down/up levels, each doubling (down) or
halving (up) the widths, so the bottleneck width ``8 * nf * 2**extra`` is 512 at both 64 and 128. No convolution
has a bias except the 1x1 shortcuts inside ``ResBlockDown``.

Parameter counts (``count_parameters``):

============  =====================  ==========  ===========
network       arguments              S = 64      S = 128
============  =====================  ==========  ===========
EDDeconv      cout=1 (D)             12,979,648  12,947,680
EDDeconv      cout=3 (A), tanh       12,982,848  12,949,280
Encoder       cout=6 (V)              6,952,960   6,984,192
Encoder       cout=4 (L)              6,951,936   6,983,168
ResEncoder    cout=512 (E)            3,565,504  13,789,632
ConfNet       cout=2 (Unsup3d C)      7,678,208   (64 only)
============  =====================  ==========  ===========

Unsup3d's V/L encoders (``nf=32`` at 64 px) have 1,739,776 / 1,739,264 parameters.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.renderer.camera import check_shape

__all__ = [
    "default_nf",
    "default_gn_base",
    "extra_levels",
    "count_parameters",
    "EDDeconv",
    "Encoder",
    "ResBlockDown",
    "ResEncoder",
    "ConfNet",
]

Activation = Callable[[], nn.Module]


# --------------------------------------------------------------------------------------------------- size rules


def extra_levels(size: int) -> int:
    """Number of down/up levels beyond the four of a 64 px network: ``log2(size) - 6``.

    >>> extra_levels(64), extra_levels(128)
    (0, 1)
    """
    if size < 64 or size & (size - 1):
        raise ValueError(f"image size must be a power of two >= 64, got {size}")
    return int(math.log2(size)) - 6


def default_nf(size: int) -> int:
    """Base width ``max(4096 // size, 16)``: 64 at S = 64, 32 at S = 128.

    >>> default_nf(64), default_nf(128)
    (64, 32)
    """
    return max(4096 // size, 16)


def default_gn_base(size: int) -> int:
    """GroupNorm group count of the ``nf``-wide layers: 16 below S = 128, else 8.

    >>> default_gn_base(64), default_gn_base(128)
    (16, 8)
    """
    return 8 if size >= 128 else 16


def count_parameters(module: nn.Module) -> int:
    """Total number of parameter elements of ``module``.

    >>> count_parameters(nn.Conv2d(3, 8, 3, bias=False))
    216
    """
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------------- primitives


def _down(cin: int, cout: int) -> nn.Conv2d:
    """4x4 stride-2 convolution without bias: ``(B, cin, H, W) -> (B, cout, H/2, W/2)``."""
    return nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1, bias=False)


def _up(cin: int, cout: int) -> nn.ConvTranspose2d:
    """4x4 stride-2 transposed convolution without bias: ``(B, cin, H, W) -> (B, cout, 2H, 2W)``."""
    return nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1, bias=False)


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    """k x k 'same' convolution without bias (k odd): ``(B, cin, H, W) -> (B, cout, H, W)``."""
    return nn.Conv2d(cin, cout, kernel_size=k, stride=1, padding=k // 2, bias=False)


def _valid4(cin: int, cout: int) -> nn.Conv2d:
    """4x4 valid convolution without bias: ``(B, cin, 4, 4) -> (B, cout, 1, 1)``."""
    return nn.Conv2d(cin, cout, kernel_size=4, stride=1, padding=0, bias=False)


def _gn_relu(groups: int, ch: int) -> list[nn.Module]:
    """GroupNorm(groups, ch) followed by an in-place ReLU."""
    return [nn.GroupNorm(groups, ch), nn.ReLU(inplace=True)]


def _up_block(cin: int, cout: int, groups: int) -> list[nn.Module]:
    """x2 decoder block: ConvT 4x4/s2 + GN + ReLU, then 3x3 conv + GN + ReLU (``cin -> cout`` channels)."""
    return [_up(cin, cout), *_gn_relu(groups, cout), _conv(cout, cout, 3), *_gn_relu(groups, cout)]


def _check_image(x: Tensor, cin: int, size: int | None, name: str) -> None:
    """Shape guard for an image input ``(B, cin, size, size)`` (``size=None`` accepts any square side)."""
    check_shape(x, f"B,{cin},H,W", name)
    if x.shape[-1] != x.shape[-2] or (size is not None and x.shape[-1] != size):
        raise ValueError(f"{name} must be square of side {size}, got {tuple(x.shape)}")


# --------------------------------------------------------------------------------------------------- EDDeconv


class EDDeconv(nn.Module):
    """Encoder-decoder mapping an image to a full-resolution map (depth D: ``cout=1``; albedo A: ``cout=3``, tanh).

    Encoder: 4x4/s2 convs ``nf -> 2nf -> 4nf -> 8nf`` with GN + LReLU(0.2) between, at S = 128 one more
    GN + LReLU + 4x4/s2 conv with doubled widths (32-64-128-256-512), then LReLU, 4x4 valid conv to ``zdim``, ReLU.
    Decoder: ConvT 4x4 (1 -> 4) to the bottleneck width, ReLU, 3x3 conv, ReLU; x2 up-blocks (ConvT 4x4/s2 + GN +
    ReLU, 3x3 conv + GN + ReLU) halving the width down to ``nf`` (three at 64, four at 128); nearest x2 upsample,
    3x3 conv + GN + ReLU, 5x5 conv + GN + ReLU, 5x5 conv to ``cout``, then ``activation`` if given.

    Args:
        cin: input channels.
        cout: output channels.
        size: input side S (power of two >= 64).
        nf: base width; ``None`` means ``max(4096 // S, 16)``.
        zdim: bottleneck code width (256 in GAN2Shape and Unsup3d).
        gn_base: GroupNorm groups of the ``nf``-wide layers (``2 * gn_base`` at ``2 * nf`` ...);
            ``None`` means 8 if S >= 128 else 16.
        activation: zero-argument factory of the output activation, e.g. ``nn.Tanh``; ``None`` for none.

    Shapes: ``(B, cin, S, S) -> (B, cout, S, S)``.

    >>> net = EDDeconv(3, 1, 64)
    >>> net(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 1, 64, 64])
    """

    def __init__(self, cin: int, cout: int, size: int = 64, nf: int | None = None, zdim: int = 256,
                 gn_base: int | None = None, activation: Activation | None = None):
        super().__init__()
        self.cin, self.size = cin, size
        extra = extra_levels(size)
        nf = default_nf(size) if nf is None else nf
        g = default_gn_base(size) if gn_base is None else gn_base
        widths = [nf * 2**i for i in range(4 + extra)]  # down widths, e.g. 32-64-128-256 (+512 at 128)
        groups = [g * 2**i for i in range(4 + extra)]
        bottleneck = widths[-1]
        layers: list[nn.Module] = [_down(cin, widths[0])]
        for i in range(1, len(widths)):
            layers += [nn.GroupNorm(groups[i - 1], widths[i - 1]), nn.LeakyReLU(0.2, inplace=True),
                       _down(widths[i - 1], widths[i])]
        layers += [nn.LeakyReLU(0.2, inplace=True), _valid4(bottleneck, zdim), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(zdim, bottleneck, kernel_size=4, stride=1, padding=0, bias=False),
                   nn.ReLU(inplace=True), _conv(bottleneck, bottleneck, 3), nn.ReLU(inplace=True)]
        for i in range(len(widths) - 1, 0, -1):
            layers += _up_block(widths[i], widths[i - 1], groups[i - 1])
        layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                   _conv(nf, nf, 3), *_gn_relu(g, nf), _conv(nf, nf, 5), *_gn_relu(g, nf), _conv(nf, cout, 5)]
        if activation is not None:
            layers.append(activation())
        self.network = nn.Sequential(*layers)

    @property
    def output_conv(self) -> nn.Conv2d:
        """The last convolution (to ``cout`` channels), e.g. to rescale its initial weights."""
        return [m for m in self.network if isinstance(m, nn.Conv2d)][-1]

    def forward(self, image: Tensor) -> Tensor:
        """``(B, cin, S, S) -> (B, cout, S, S)``."""
        _check_image(image, self.cin, self.size, "EDDeconv input")
        return self.network(image)


# --------------------------------------------------------------------------------------------------- Encoder


class Encoder(nn.Module):
    """Image to a vector in (-1, 1): viewpoint V (``cout=6``) and lighting L (``cout=4``).

    4x4/s2 convs with ReLU ``nf -> 2nf -> 4nf -> 8nf`` (one more with doubled widths at S = 128), 4x4 valid conv
    to the same width, ReLU, 1x1 conv to ``cout``, ``activation`` (tanh), flattened. Unsup3d used ``nf = 32`` at
    64 px; GAN2Shape uses the default ``nf = max(4096 // S, 16)``.

    Shapes: ``(B, cin, S, S) -> (B, cout)``.

    >>> Encoder(3, 6, 64)(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 6])
    """

    def __init__(self, cin: int, cout: int, size: int = 64, nf: int | None = None,
                 activation: Activation | None = nn.Tanh):
        super().__init__()
        self.cin, self.size = cin, size
        nf = default_nf(size) if nf is None else nf
        widths = [nf * 2**i for i in range(4 + extra_levels(size))]
        layers: list[nn.Module] = []
        for c_in, c_out in zip([cin, *widths[:-1]], widths):
            layers += [_down(c_in, c_out), nn.ReLU(inplace=True)]
        top = widths[-1]
        layers += [_valid4(top, top), nn.ReLU(inplace=True),
                   nn.Conv2d(top, cout, kernel_size=1, stride=1, padding=0, bias=False)]
        if activation is not None:
            layers.append(activation())
        self.network = nn.Sequential(*layers)

    def forward(self, image: Tensor) -> Tensor:
        """``(B, cin, S, S) -> (B, cout)``."""
        _check_image(image, self.cin, self.size, "Encoder input")
        return self.network(image).reshape(image.shape[0], -1)


# --------------------------------------------------------------------------------------------------- ResEncoder


class ResBlockDown(nn.Module):
    """Residual x1/2 block: ``conv2(relu(conv1(relu(x)))) + conv_sc(avgpool2(s))``.

    ``conv1`` is 3x3/s2, ``conv2`` 3x3, both without bias; ``conv_sc`` is a 1x1 conv with bias, applied only when
    ``cin != cout`` (it exists either way, as in the original, so state_dicts match).

    ``inplace_relu_quirk``: the original applies its first ReLU in place, which overwrites ``x``, so its shortcut
    actually sees ``s = relu(x)``. ``True`` (default) reproduces that, as pretrained E weights expect; ``False``
    gives the textbook block with ``s = x``. The two differ only where ``x`` has negative entries. This module
    computes the ReLU out of place, so autograd is safe either way.

    Shapes: ``(B, cin, H, W) -> (B, cout, H/2, W/2)`` (H, W even).

    >>> ResBlockDown(8, 16)(torch.zeros(2, 8, 8, 8)).shape
    torch.Size([2, 16, 4, 4])
    """

    def __init__(self, cin: int, cout: int, inplace_relu_quirk: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = cin, cout
        self.inplace_relu_quirk = inplace_relu_quirk
        self.conv1 = nn.Conv2d(cin, cout, kernel_size=3, stride=2, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, kernel_size=3, stride=1, padding=1, bias=False)
        self.conv_sc = nn.Conv2d(cin, cout, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, cin, H, W) -> (B, cout, H/2, W/2)``."""
        check_shape(x, f"B,{self.in_channels},H,W", "ResBlockDown input")
        relu_x = F.relu(x)
        h = self.conv2(F.relu(self.conv1(relu_x)))
        shortcut = F.avg_pool2d(relu_x if self.inplace_relu_quirk else x, kernel_size=2, stride=2)
        if self.in_channels != self.out_channels:
            shortcut = self.conv_sc(shortcut)
        return shortcut + h


class ResEncoder(nn.Module):
    """Residual image encoder E to a latent offset (GAN2Shape, ``cout = 512``, no output activation).

    4x4/s2 conv ``cin -> nf``; ResBlockDown ``nf -> 2nf -> 4nf -> 8nf`` (one more to ``16nf`` at S = 128); ReLU;
    4x4 valid conv to twice the last width (512 at 64, 1024 at 128); ReLU; 1x1 conv to ``cout``; flattened.
    ``nf`` stays 32 at every size. ``inplace_relu_quirk`` is passed to every block (see ``ResBlockDown``).

    Shapes: ``(B, cin, S, S) -> (B, cout)``.

    >>> ResEncoder(3, 512, 64)(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 512])
    """

    def __init__(self, cin: int = 3, cout: int = 512, size: int = 64, nf: int = 32,
                 inplace_relu_quirk: bool = True, activation: Activation | None = None):
        super().__init__()
        self.cin, self.size = cin, size
        widths = [nf * 2**i for i in range(4 + extra_levels(size))]  # 32-64-128-256 (+512 at 128)
        layers: list[nn.Module] = [_down(cin, widths[0])]
        layers += [ResBlockDown(a, b, inplace_relu_quirk) for a, b in zip(widths[:-1], widths[1:])]
        top = widths[-1]
        layers += [nn.ReLU(inplace=True), _valid4(top, 2 * top), nn.ReLU(inplace=True),
                   nn.Conv2d(2 * top, cout, kernel_size=1, stride=1, padding=0, bias=False)]
        if activation is not None:
            layers.append(activation())
        self.network = nn.Sequential(*layers)

    def forward(self, image: Tensor) -> Tensor:
        """``(B, cin, S, S) -> (B, cout)``."""
        _check_image(image, self.cin, self.size, "ResEncoder input")
        return self.network(image).reshape(image.shape[0], -1)


# --------------------------------------------------------------------------------------------------- ConfNet


class ConfNet(nn.Module):
    """Unsup3d's confidence network C: two positive (softplus) confidence maps at full and at 1/4 resolution.

    Trunk ``network``: the EDDeconv encoder at 64 px (widths ``nf -> 8nf``, GN groups 16-32-64, code ``zdim``),
    then ConvT 4x4 (1 -> 4) to ``8nf``, ReLU, ConvT x2 to ``4nf`` + GN + ReLU, ConvT x2 to ``2nf`` + GN + ReLU
    (16x16). ``out_net1``: two ConvT x2 to ``nf`` (each + GN + ReLU), 5x5 conv to ``cout``, softplus (64x64, the
    photometric-loss sigmas). ``out_net2``: 3x3 conv to ``cout``, softplus (16x16, the perceptual-loss sigmas at
    VGG relu3_3 resolution). Unsup3d trains at 64 px only, so the layout is fixed to S = 64. No biases.

    Shapes: ``(B, cin, 64, 64) -> ((B, cout, 64, 64), (B, cout, 16, 16))``.

    >>> full, quarter = ConfNet()(torch.zeros(2, 3, 64, 64))
    >>> full.shape, quarter.shape
    (torch.Size([2, 2, 64, 64]), torch.Size([2, 2, 16, 16]))
    """

    def __init__(self, cin: int = 3, cout: int = 2, zdim: int = 128, nf: int = 64, gn_base: int = 16):
        super().__init__()
        self.cin = cin
        w, g = [nf, 2 * nf, 4 * nf, 8 * nf], [gn_base, 2 * gn_base, 4 * gn_base]
        layers: list[nn.Module] = [_down(cin, w[0])]
        for i in range(1, 4):
            layers += [nn.GroupNorm(g[i - 1], w[i - 1]), nn.LeakyReLU(0.2, inplace=True), _down(w[i - 1], w[i])]
        layers += [nn.LeakyReLU(0.2, inplace=True), _valid4(w[3], zdim), nn.ReLU(inplace=True),
                   nn.ConvTranspose2d(zdim, w[3], kernel_size=4, stride=1, padding=0, bias=False),
                   nn.ReLU(inplace=True),
                   _up(w[3], w[2]), *_gn_relu(g[2], w[2]),
                   _up(w[2], w[1]), *_gn_relu(g[1], w[1])]
        self.network = nn.Sequential(*layers)
        self.out_net1 = nn.Sequential(_up(w[1], nf), *_gn_relu(g[0], nf), _up(nf, nf), *_gn_relu(g[0], nf),
                                      _conv(nf, cout, 5), nn.Softplus())
        self.out_net2 = nn.Sequential(_conv(w[1], cout, 3), nn.Softplus())

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, cin, 64, 64) -> (full (B, cout, 64, 64), quarter (B, cout, 16, 16))``, both positive."""
        _check_image(image, self.cin, 64, "ConfNet input")
        trunk = self.network(image)
        return self.out_net1(trunk), self.out_net2(trunk)
