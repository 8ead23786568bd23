"""StyleGAN2 generator and discriminator with rosinality's checkpoint layout (``method.md`` section 4).

The file runs bottom-up like the paper: primitives, equalised-lr layers, modulated conv, styled conv, ToRGB,
Generator, then ConvLayer, ResBlock, Discriminator. Attribute names are a contract: they are the state_dict keys
(``style.N``, ``input.input``, ``conv1``, ``to_rgb1``, ``convs.k``, ``to_rgbs.j``, ``noises.noise_i``,
``final_conv``, ``final_linear``) of every rosinality ``.pt`` file, so those files load with ``strict=True``.

Additions over upstream, following GAN2Shape's vendored copy: ``input_is_w`` (W or W+ input), stored noise by
default (``randomize_noise=False``), ``style_forward`` (partial mapping) and ``Discriminator.forward(x, ftr_num)``
(intermediate features). Channel widths can be capped (``max_channels``) or given per resolution (``channels``)
to build tiny models. Images are (B, 3, S, S) in about [-1, 1].

Two computation paths give the same maths (see :mod:`.ops`): the default fast path (depthwise (transposed)
convolutions instead of zero-stuffing ``upfirdn2d``; modulated convs as ``conv(x * s, w) * d``, one batched
convolution with the shared weight; bias, noise, demodulation and the sqrt(2) gain folded into one ``addcmul`` or
into the conv weights, then an in-place leaky ReLU) and the reference path (``ops.reference_path()``), which runs
the straightforward port: generic ``upfirdn2d`` and grouped convolutions with per-sample weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ops import demodulation, fast_path_enabled, fused_leaky_relu, make_kernel, modulate_weight, upfirdn2d, upfirdn2d_fast

__all__ = [
    "stylegan2_channels", "PixelNorm", "Blur", "Upsample", "FusedLeakyReLU", "EqualConv2d", "EqualLinear",
    "ModulatedConv2d", "NoiseInjection", "ConstantInput", "StyledConv", "ToRGB", "Generator", "ConvLayer",
    "ResBlock", "Discriminator",
]

BLUR = (1, 3, 3, 1)


def _log2_size(size: int) -> int:
    if size < 8 or size & (size - 1):
        raise ValueError(f"StyleGAN2 size must be a power of two >= 8, got {size}")
    return size.bit_length() - 1


def stylegan2_channels(size: int, channel_multiplier: int = 2, max_channels: int | None = None,
                       channels: Mapping[int, int] | None = None) -> dict[int, int]:
    """Channel width per resolution ``{4: c4, 8: c8, ..., size: cS}``.

    Default table: 512 up to 32, then ``16384 * channel_multiplier / r`` (256·cm at 64, 128·cm at 128, ...).
    ``max_channels`` caps every width. ``channels`` gives the widths explicitly (keys may be str, as in JSON)
    and must cover every resolution from 4 to ``size``.

    >>> stylegan2_channels(128, 1)
    {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128}
    >>> stylegan2_channels(32, max_channels=16)
    {4: 16, 8: 16, 16: 16, 32: 16}
    """
    log_size = _log2_size(size)
    res = [2**i for i in range(2, log_size + 1)]
    if channels is not None:
        table = {int(k): int(v) for k, v in channels.items()}
        missing = [r for r in res if r not in table]
        if missing:
            raise ValueError(f"channels must give a width for every resolution 4..{size}; missing {missing}")
        table = {r: table[r] for r in res}
    else:
        table = {r: 512 if r <= 32 else 16384 * channel_multiplier // r for r in res}
    if max_channels is not None:
        table = {r: min(c, int(max_channels)) for r, c in table.items()}
    if min(table.values()) < 1:
        raise ValueError(f"channel table has a width below 1: {table}")
    return table


# ---------------------------------------------------------------------------------------------------- primitives
class PixelNorm(nn.Module):
    """Normalise each latent (B, D) to unit mean square over D (the mapping's entry 0; no parameters)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class Blur(nn.Module):
    """FIR blur (B, C, H, W) -> (B, C, H + p0 + p1 - K + 1, ...); buffer ``kernel`` (K, K) scaled by factor²."""

    def __init__(self, kernel: Sequence[float] = BLUR, pad: tuple[int, int] = (1, 1), upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_kernel(kernel) * upsample_factor**2)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        if fast_path_enabled():
            return upfirdn2d_fast(x, self.kernel, pad=self.pad)
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR upsampling (B, C, H, W) -> (B, C, 2H, 2W), used on ToRGB's skip path; buffer ``kernel`` (K, K)."""

    def __init__(self, kernel: Sequence[float] = BLUR, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor**2)
        p = len(kernel) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        if fast_path_enabled():
            return upfirdn2d_fast(x, self.kernel, up=self.factor, pad=self.pad)
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class FusedLeakyReLU(nn.Module):
    """``sqrt(2) * leaky_relu(x + bias, 0.2)`` with a learned ``bias`` (C,) on dim 1."""

    def __init__(self, channels: int, negative_slope: float = 0.2, scale: float = math.sqrt(2.0)):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.negative_slope, self.scale = negative_slope, scale

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)


# ------------------------------------------------------------------------------------------ equalised-lr layers
class EqualConv2d(nn.Module):
    """Conv with runtime weight ``W / sqrt(in * k²)``: (B, in, H, W) -> (B, out, H', W'); weight (out, in, k, k)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.stride, self.padding = stride, padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class EqualLinear(nn.Module):
    """Linear (B, in) -> (B, out) with runtime weight ``W * lr_mul / sqrt(in)`` and bias ``b * lr_mul``.

    ``activation="fused_lrelu"`` applies ``sqrt(2) * leaky_relu(x + b, 0.2)``.
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: str | None = None):
        super().__init__()
        if activation not in (None, "fused_lrelu"):
            raise ValueError(f"unknown activation {activation!r}; use None or 'fused_lrelu'")
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.zeros(out_dim).fill_(bias_init)) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul, self.activation = lr_mul, activation

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)


# ------------------------------------------------------------------------------------------------ modulated conv
class ModulatedConv2d(nn.Module):
    """Style-modulated conv (B, in, H, W) x style (B, D) -> (B, out, H, W), or (B, out, 2H, 2W) with ``upsample``.

    ``weight`` (1, out, in, k, k) is scaled by ``1 / sqrt(in * k²)`` and multiplied per sample by
    ``modulation(style)`` (B, in) (bias initialised to 1), then demodulated if ``demodulate``. The batch runs as
    one grouped convolution. Upsampling is a stride-2 transposed conv followed by ``blur`` (kernel × 4, pad 1, 1).
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False, blur_kernel: Sequence[float] = BLUR):
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.upsample, self.demodulate = upsample, demodulate
        if upsample:
            p = (len(blur_kernel) - 2) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2)
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)

    def forward_undemodulated(self, x: Tensor, style: Tensor) -> tuple[Tensor, Tensor | None]:
        """Fast path: ``(conv(x * s, w), d)`` with the demodulation factors ``d`` (B, O) (None without demodulation).

        ``forward`` is ``out * d`` per output channel; callers fold ``d`` into their own epilogue. Modulating the
        input instead of the weight runs the batch as one ordinary convolution with the shared weight.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channel:
            raise ValueError(f"expected {self.in_channel} input channels, got {tuple(x.shape)}")
        s = self.modulation(style)
        weight = self.weight * self.scale
        d = demodulation(weight, s) if self.demodulate else None
        x = x * s[:, :, None, None]
        if self.upsample:  # transposed conv wants (in, out, k, k); the blur is one depthwise conv
            out = F.conv_transpose2d(x, weight[0].transpose(0, 1), stride=2)
            out = upfirdn2d_fast(out, self.blur.kernel, pad=self.blur.pad)
        else:
            out = F.conv2d(x, weight[0], padding=self.padding)
        return out, d

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        b, c, h, w = x.shape
        if c != self.in_channel:
            raise ValueError(f"expected {self.in_channel} input channels, got {tuple(x.shape)}")
        if fast_path_enabled():
            out, d = self.forward_undemodulated(x, style)
            return out if d is None else out * d[:, :, None, None]
        weight = modulate_weight(self.weight * self.scale, self.modulation(style), self.demodulate)
        k, o = self.kernel_size, self.out_channel
        x = x.reshape(1, b * c, h, w)
        if self.upsample:  # transposed conv wants (in, out/groups, k, k) per group
            weight = weight.transpose(1, 2).reshape(b * c, o, k, k)
            out = F.conv_transpose2d(x, weight, stride=2, padding=0, groups=b)
            return self.blur(out.reshape(b, o, out.shape[2], out.shape[3]))
        out = F.conv2d(x, weight.reshape(b * o, c, k, k), padding=self.padding, groups=b)
        return out.reshape(b, o, out.shape[2], out.shape[3])


# -------------------------------------------------------------------------------------------------- styled conv
class NoiseInjection(nn.Module):
    """``x + weight * noise`` with noise (B or 1, 1, H, W) broadcast over channels; fresh N(0,1) when None."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        if noise is None:
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], dtype=x.dtype, device=x.device)
        return x + self.weight * noise


class ConstantInput(nn.Module):
    """The learned 4x4 input ``input`` (1, C, 4, 4), repeated to (B, C, 4, 4) for a latent batch (B, ...)."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, latent: Tensor) -> Tensor:
        return self.input.repeat(latent.shape[0], 1, 1, 1)


class StyledConv(nn.Module):
    """Modulated conv, noise, then fused leaky ReLU with ``activate.bias`` (out,): (B, in, H, W) -> (B, out, H', W')."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, upsample: bool = False,
                 blur_kernel: Sequence[float] = BLUR, demodulate: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, demodulate, upsample, blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None = None) -> Tensor:
        act = self.activate
        if not fast_path_enabled() or act.scale <= 0 or act.negative_slope <= 0:
            return act(self.noise(self.conv(x, style), noise=noise))
        # scale * lrelu(out * d + nw * noise + b) == lrelu(out * (scale * d) + scale * (nw * noise + b)), scale > 0
        out, d = self.conv.forward_undemodulated(x, style)
        if noise is None:
            noise = torch.randn(out.shape[0], 1, out.shape[2], out.shape[3], dtype=out.dtype, device=out.device)
        shift = (self.noise.weight * noise + act.bias.view(1, -1, 1, 1)) * act.scale
        gain = act.scale if d is None else (d * act.scale)[:, :, None, None]
        return F.leaky_relu(torch.addcmul(shift, out, gain), act.negative_slope, inplace=True)


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation plus ``bias`` (1, 3, 1, 1); adds the 2x-upsampled ``skip`` image."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True, blur_kernel: Sequence[float] = BLUR):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        conv = self.conv
        if fast_path_enabled() and conv.kernel_size == 1 and not conv.demodulate and not conv.upsample:
            # a 1x1 modulated conv is a batched matmul: (B, 3, I) @ (B, I, H*W), bias fused
            b, c, h, w = x.shape
            if c != conv.in_channel:
                raise ValueError(f"expected {conv.in_channel} input channels, got {tuple(x.shape)}")
            weight = conv.weight[0, :, :, 0, 0] * conv.scale
            out = torch.baddbmm(self.bias.view(1, -1, 1), weight * conv.modulation(style)[:, None, :],
                                x.reshape(b, c, h * w)).view(b, -1, h, w)
        else:
            out = self.conv(x, style) + self.bias
        return out if skip is None else out + self.upsample(skip)


# ---------------------------------------------------------------------------------------------------- generator
class Generator(nn.Module):
    """StyleGAN2 generator: latents (B, D) -> images (B, 3, size, size).

    ``style`` is an ``nn.Sequential`` of PixelNorm (entry 0) and ``n_mlp`` EqualLinear layers (``style.1`` ...),
    lr multiplier ``lr_mlp``. Channels follow :func:`stylegan2_channels`. ``noises.noise_i`` are the stored
    per-layer noise maps (1, 1, r, r), used unless ``randomize_noise`` or ``noise`` is given.

    >>> g = Generator(16, style_dim=8, n_mlp=2, max_channels=8)
    >>> g([torch.randn(2, 8)])[0].shape, g.n_latent
    (torch.Size([2, 3, 16, 16]), 6)
    """

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 blur_kernel: Sequence[float] = BLUR, lr_mlp: float = 0.01, *, max_channels: int | None = None,
                 channels: Mapping[int, int] | None = None):
        super().__init__()
        self.size, self.style_dim, self.n_mlp, self.lr_mlp = size, style_dim, n_mlp, lr_mlp
        self.channel_multiplier, self.blur_kernel = channel_multiplier, tuple(blur_kernel)
        self.channels = stylegan2_channels(size, channel_multiplier, max_channels, channels)
        self.log_size = _log2_size(size)
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2
        ch = self.channels

        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu") for _ in range(n_mlp)])
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False)
        self.convs, self.upsamples, self.to_rgbs = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            r = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r))
        in_ch = ch[4]
        for i in range(3, self.log_size + 1):
            out_ch = ch[2**i]
            self.convs.append(StyledConv(in_ch, out_ch, 3, style_dim, upsample=True, blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_ch, out_ch, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_ch, style_dim, blur_kernel=blur_kernel))
            in_ch = out_ch

    def config(self) -> dict:
        """Constructor arguments that rebuild this architecture (JSON-friendly)."""
        return {"size": self.size, "style_dim": self.style_dim, "n_mlp": self.n_mlp, "lr_mlp": self.lr_mlp,
                "channel_multiplier": self.channel_multiplier, "blur_kernel": list(self.blur_kernel),
                "channels": {str(r): c for r, c in self.channels.items()}}

    def stored_noise(self) -> list[Tensor]:
        """The stored noise buffers ``noises.noise_i``, each (1, 1, r, r), in layer order."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    def make_noise(self, generator: torch.Generator | None = None) -> list[Tensor]:
        """Fresh N(0, 1) noise maps shaped like :meth:`stored_noise`."""
        return [torch.randn(n.shape, generator=generator, device=n.device, dtype=n.dtype) for n in self.stored_noise()]

    def get_latent(self, z: Tensor) -> Tensor:
        """Full mapping z (B, D) -> w (B, D)."""
        return self.style(z)

    def seed_latents(self, seeds: Sequence[int]) -> Tensor:
        """W latents ``(N, D)`` of integer ``seeds``: ``z ~ N(0, I)`` drawn by ``torch.Generator().manual_seed(seed)``
        on the CPU (the same face on every device), then mapped. Every method that rotates "source ``seed``" of this
        generator starts from this latent."""
        z = torch.cat([torch.randn(1, self.style_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        return self.get_latent(z.to(self.input.input.device))

    def style_forward(self, x: Tensor, skip: int = 0, depth: int | None = None) -> Tensor:
        """Partial mapping (B, D) -> (B, D): apply ``style`` entries with ``skip <= index < depth``.

        Entry 0 is PixelNorm, entries 1..n_mlp the linear layers; ``depth=None`` means all (9 for n_mlp = 8).
        So ``style_forward(x)`` is the full mapping and ``[0, k)`` followed by ``[k, 9)`` composes to it.
        """
        depth = len(self.style) if depth is None else depth
        if not 0 <= skip <= depth <= len(self.style):
            raise ValueError(f"need 0 <= skip <= depth <= {len(self.style)}, got skip={skip}, depth={depth}")
        for layer in self.style[skip:depth]:
            x = layer(x)
        return x

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, generator: torch.Generator | None = None) -> Tensor:
        """Mean W (1, D) of ``n`` mapped standard-normal z (used as ``truncation_latent``)."""
        z = torch.randn(n, self.style_dim, generator=generator, device=self.input.input.device)
        return self.style(z).mean(0, keepdim=True)

    def _latents(self, styles: list[Tensor], inject_index: int | None) -> Tensor:
        """Broadcast one W (B, D) or take one W+ (B, n_latent, D); two styles mix at ``inject_index``."""
        if len(styles) == 1:
            s = styles[0]
            if s.dim() == 3:
                if s.shape[1:] != (self.n_latent, self.style_dim):
                    raise ValueError(f"W+ input must be (B, {self.n_latent}, {self.style_dim}), got {tuple(s.shape)}")
                return s
            return s.unsqueeze(1).repeat(1, self.n_latent, 1)
        if len(styles) != 2 or any(s.dim() != 2 for s in styles):
            raise ValueError("style mixing takes exactly two (B, D) latents")
        if inject_index is None:
            inject_index = int(torch.randint(1, self.n_latent, ()).item())
        a = styles[0].unsqueeze(1).repeat(1, inject_index, 1)
        b = styles[1].unsqueeze(1).repeat(1, self.n_latent - inject_index, 1)
        return torch.cat([a, b], 1)

    def forward(self, styles: Tensor | Sequence[Tensor], *, input_is_w: bool = False,
                noise: Sequence[Tensor | None] | None = None, randomize_noise: bool = False, truncation: float = 1.0,
                truncation_latent: Tensor | None = None, inject_index: int | None = None,
                return_latents: bool = False) -> tuple[Tensor, Tensor | None]:
        """Images (B, 3, size, size) and, if ``return_latents``, the W+ latents (B, n_latent, D) else None.

        ``styles``: z (B, D), or with ``input_is_w`` a W (B, D) or W+ (B, n_latent, D); a list of two (B, D)
        latents mixes styles. ``truncation < 1`` moves W toward ``truncation_latent`` (1, D). Noise: ``noise``
        (one map per layer, None entries random) or, if None, fresh noise when ``randomize_noise`` and the stored
        buffers otherwise (GAN2Shape's default).
        """
        styles = [styles] if isinstance(styles, Tensor) else list(styles)
        for s in styles:
            if s.shape[-1] != self.style_dim or s.dim() not in (2, 3) or (s.dim() == 3 and not input_is_w):
                raise ValueError(f"latent must be (B, {self.style_dim}) (or W+ with input_is_w), got {tuple(s.shape)}")
        if not input_is_w:
            styles = [self.style(s) for s in styles]
        if truncation != 1:
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (e.g. generator.mean_latent())")
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]
        latent = self._latents(styles, inject_index)
        if noise is None:
            noise = [None] * self.num_layers if randomize_noise else self.stored_noise()
        if len(noise) != self.num_layers:
            raise ValueError(f"noise must have {self.num_layers} entries, got {len(noise)}")

        out = self.conv1(self.input(latent), latent[:, 0], noise=noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for j, to_rgb in enumerate(self.to_rgbs):
            out = self.convs[2 * j](out, latent[:, i], noise=noise[2 * j + 1])
            out = self.convs[2 * j + 1](out, latent[:, i + 1], noise=noise[2 * j + 2])
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip, (latent if return_latents else None)


# ------------------------------------------------------------------------------------------------ discriminator
class ConvLayer(nn.Sequential):
    """[Blur] + EqualConv2d + [FusedLeakyReLU]: (B, in, H, W) -> (B, out, H, W), or (H/2, W/2) with ``downsample``.

    Keys: with downsampling ``0.kernel`` (blur), ``1.weight``, ``2.bias``; otherwise ``0.weight``, ``1.bias``.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, downsample: bool = False,
                 blur_kernel: Sequence[float] = BLUR, bias: bool = True, activate: bool = True):
        layers: list[nn.Module] = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channel, out_channel, kernel_size, stride, padding, bias=bias and not activate))
        if activate:
            if not bias:
                raise ValueError("an activated ConvLayer always has a bias in this port")
            layers.append(FusedLeakyReLU(out_channel))
        super().__init__(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if not fast_path_enabled():
            return super().forward(x)
        return self.forward_fast(x)

    def forward_fast(self, x: Tensor, gain: float = 1.0) -> Tensor:
        """``gain * self(x)`` (gain > 0) on the fast path: depthwise blur (strided when it feeds a 1x1 stride-2 conv),
        then one convolution with the equalised scale, the activation gain and the bias folded into its weights."""
        conv: EqualConv2d = self[1] if isinstance(self[0], Blur) else self[0]
        act = self[-1] if isinstance(self[-1], FusedLeakyReLU) else None
        stride = conv.stride
        if isinstance(self[0], Blur):
            k = conv.weight.shape[-1]
            if k == 1 and conv.padding == 0:  # a 1x1 stride-s conv only reads every s-th blurred sample
                x, stride = upfirdn2d_fast(x, self[0].kernel, down=stride, pad=self[0].pad), 1
            else:
                x = upfirdn2d_fast(x, self[0].kernel, pad=self[0].pad)
        if act is None:
            return F.conv2d(x, conv.weight * (conv.scale * gain), None if conv.bias is None else conv.bias * gain,
                            stride=stride, padding=conv.padding)
        if act.scale <= 0 or act.negative_slope <= 0:  # activation not positively homogeneous: no folding
            out = act(F.conv2d(x, conv.weight * conv.scale, conv.bias, stride=stride, padding=conv.padding))
            return out if gain == 1 else out * gain
        # gain * scale * lrelu(conv + b) == lrelu(conv(x, w * gain * scale) + b * gain * scale) for positive gains
        g = gain * act.scale
        out = F.conv2d(x, conv.weight * (conv.scale * g), act.bias * g, stride=stride, padding=conv.padding)
        return F.leaky_relu(out, act.negative_slope, inplace=True)


class ResBlock(nn.Module):
    """Residual downsampling block (B, in, H, W) -> (B, out, H/2, W/2): ``(conv2(conv1(x)) + skip(x)) / sqrt(2)``."""

    def __init__(self, in_channel: int, out_channel: int, blur_kernel: Sequence[float] = BLUR):
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, blur_kernel=blur_kernel, activate=False,
                              bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if fast_path_enabled():  # the 1/sqrt(2) is folded into both branches' weights
            g = 1 / math.sqrt(2)
            return self.conv2.forward_fast(self.conv1(x), g) + self.skip.forward_fast(x, g)
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator: images (B, 3, size, size) -> logits (B, 1).

    ``convs.0`` is a 1x1 ConvLayer from RGB, ``convs.1..`` ResBlocks halving the resolution down to 4x4, then the
    minibatch standard-deviation feature (groups of ``stddev_group``, None = whole batch; ``stddev_feat``
    channels), ``final_conv`` and ``final_linear``. With ``ftr_num=k`` forward returns the outputs of
    ``convs[1..k]`` instead, at size/2, ..., size/2^k (GAN2Shape's feature loss uses k = 4).

    >>> d = Discriminator(16, max_channels=8)
    >>> d(torch.randn(2, 3, 16, 16)).shape, [f.shape[-1] for f in d(torch.randn(2, 3, 16, 16), ftr_num=2)]
    (torch.Size([2, 1]), [8, 4])
    """

    def __init__(self, size: int, channel_multiplier: int = 2, blur_kernel: Sequence[float] = BLUR, *,
                 max_channels: int | None = None, channels: Mapping[int, int] | None = None,
                 stddev_group: int | None = 4, stddev_feat: int = 1):
        super().__init__()
        self.size, self.channel_multiplier, self.blur_kernel = size, channel_multiplier, tuple(blur_kernel)
        self.channels = stylegan2_channels(size, channel_multiplier, max_channels, channels)
        self.stddev_group, self.stddev_feat = stddev_group, stddev_feat
        log_size = _log2_size(size)
        in_ch = self.channels[size]
        convs: list[nn.Module] = [ConvLayer(3, in_ch, 1)]
        for i in range(log_size, 2, -1):
            out_ch = self.channels[2 ** (i - 1)]
            convs.append(ResBlock(in_ch, out_ch, blur_kernel))
            in_ch = out_ch
        self.convs = nn.Sequential(*convs)
        c4 = self.channels[4]
        self.final_conv = ConvLayer(in_ch + stddev_feat, c4, 3)
        self.final_linear = nn.Sequential(EqualLinear(c4 * 16, c4, activation="fused_lrelu"), EqualLinear(c4, 1))

    def config(self) -> dict:
        """Constructor arguments that rebuild this architecture (JSON-friendly)."""
        return {"size": self.size, "channel_multiplier": self.channel_multiplier, "blur_kernel": list(self.blur_kernel),
                "channels": {str(r): c for r, c in self.channels.items()}, "stddev_group": self.stddev_group,
                "stddev_feat": self.stddev_feat}

    def minibatch_stddev(self, x: Tensor) -> Tensor:
        """Append ``stddev_feat`` channels (B, C, H, W) -> (B, C + F, H, W): group std, averaged per group."""
        if self.stddev_feat == 0:
            return x
        b, c, h, w = x.shape
        group = b if self.stddev_group is None else min(b, self.stddev_group)
        if b % group:
            raise ValueError(f"batch size {b} must be divisible by the stddev group {group}")
        y = x.reshape(group, -1, self.stddev_feat, c // self.stddev_feat, h, w)
        y = torch.sqrt(y.var(0, unbiased=False) + 1e-8).mean(dim=(2, 3, 4))  # (B/group, F)
        y = y.reshape(-1, self.stddev_feat, 1, 1).repeat(group, 1, h, w)
        return torch.cat([x, y], 1)

    def forward(self, x: Tensor, ftr_num: int | None = None) -> Tensor | list[Tensor]:
        """Logits (B, 1) for (B, 3, size, size), or with ``ftr_num=k`` the ResBlock outputs ``convs[1..k]``.

        The feature path is fully convolutional, so it accepts any (B, 3, H, W) with H, W divisible by 2^k (GAN2Shape
        feeds S-resolution images to a gan_size discriminator); feature i is (B, C_i, H/2^i, W/2^i).
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"discriminator input must be (B, 3, H, W), got {tuple(x.shape)}")
        if ftr_num is not None:
            if not 1 <= ftr_num < len(self.convs):
                raise ValueError(f"ftr_num must be in 1..{len(self.convs) - 1} for size {self.size}, got {ftr_num}")
            if x.shape[2] % 2**ftr_num or x.shape[3] % 2**ftr_num:
                raise ValueError(f"image size {tuple(x.shape[2:])} must be divisible by 2^ftr_num = {2**ftr_num}")
            out, feats = self.convs[0](x), []
            for block in self.convs[1 : ftr_num + 1]:
                out = block(out)
                feats.append(out)
            return feats
        if x.shape[2] != self.size or x.shape[3] != self.size:
            raise ValueError(f"logits need (B, 3, {self.size}, {self.size}) images, got {tuple(x.shape)}")
        out = self.final_conv(self.minibatch_stddev(self.convs(x)))
        return self.final_linear(out.reshape(out.shape[0], -1))
