"""Pure-PyTorch kernels for the StyleGAN2 networks (``method.md`` section 4).

Everything here is plain ``torch`` code with no compiled extension, so it runs on any device the inputs live on
(CPU, CUDA, MPS). The formulas follow the StyleGAN2 definitions used by the rosinality port:

* ``upfirdn2d``: upsample by zero insertion, pad (or crop, for negative pads), convolve with an FIR filter, then
  keep every ``down``-th sample;
* ``fused_leaky_relu``: ``sqrt(2) * leaky_relu(x + b, 0.2)``, the activation of every equalised layer;
* ``make_kernel``: the separable blur kernel, normalised to sum 1;
* ``modulate_weight``: style modulation and demodulation of a convolution weight.

``upfirdn2d`` above is the reference (zero insertion by generic reshapes, one single-channel convolution over
B * C maps), kept for tests and as the definition. The networks' hot paths run through equivalent fast kernels,
the same sums in a different order:

* ``upfirdn2d_fast``: no zero stuffing; ``up == 1`` is one depthwise convolution with stride ``down``, ``up > 1``
  one depthwise transposed convolution with stride ``up``, both cropped/padded to the reference window;
* ``demodulation``: the demodulation factors (B, O) from the style and the shared weight, so a modulated conv can
  run as ``conv(x * style, weight) * d`` (one ordinary batched convolution) instead of a grouped convolution with
  per-sample weights.

``set_fast_path(False)`` (or ``with reference_path():``) routes the model back through the reference ops, e.g. to
compare the two.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["make_kernel", "upfirdn2d", "upfirdn2d_fast", "blur", "fused_leaky_relu", "modulate_weight",
           "demodulation", "set_fast_path", "fast_path_enabled", "reference_path", "SQRT2"]

SQRT2 = math.sqrt(2.0)
_FAST_PATH = True


def set_fast_path(enabled: bool) -> bool:
    """Route the networks through the fast kernels (default) or the reference ops; returns the previous setting."""
    global _FAST_PATH
    previous, _FAST_PATH = _FAST_PATH, bool(enabled)
    return previous


def fast_path_enabled() -> bool:
    """Whether the networks use the fast kernels (see :func:`set_fast_path`)."""
    return _FAST_PATH


@contextlib.contextmanager
def reference_path() -> Iterator[None]:
    """Run the networks through the reference ops (``upfirdn2d``, grouped modulated convs) inside the block."""
    previous = set_fast_path(False)
    try:
        yield
    finally:
        set_fast_path(previous)


def make_kernel(k: Sequence[float] | Tensor, *, dtype=torch.float32, device=None) -> Tensor:
    """A 2-D FIR kernel ``(K, K)`` normalised to sum 1; a 1-D ``k`` of length K is used as its outer product.

    >>> make_kernel([1, 3, 3, 1]).shape, float(make_kernel([1, 3, 3, 1]).sum())
    (torch.Size([4, 4]), 1.0)
    >>> make_kernel([1, 2, 1])[1].tolist()
    [0.125, 0.25, 0.125]
    """
    k = torch.as_tensor(k, dtype=dtype, device=device)
    if k.dim() == 1:
        k = k[None, :] * k[:, None]
    if k.dim() != 2:
        raise ValueError(f"blur kernel must be 1-D or 2-D, got shape {tuple(k.shape)}")
    return k / k.sum()


def _pads(pad: Sequence[int]) -> tuple[int, int, int, int]:
    """Normalise ``(p0, p1)`` (same on both axes) or ``(x0, x1, y0, y1)`` to four ints."""
    if len(pad) == 2:
        return int(pad[0]), int(pad[1]), int(pad[0]), int(pad[1])
    if len(pad) == 4:
        return int(pad[0]), int(pad[1]), int(pad[2]), int(pad[3])
    raise ValueError(f"pad must have 2 or 4 entries, got {tuple(pad)}")


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: Sequence[int] = (0, 0)) -> Tensor:
    """Upsample, FIR-filter and downsample every channel of ``x`` (B, C, H, W) independently.

    Steps: insert ``up - 1`` zeros after every sample on both axes (size ``H * up``); pad by ``pad`` =
    ``(p0, p1)`` or ``(x0, x1, y0, y1)`` (negative values crop); convolve (true convolution, the kernel is
    flipped) with ``kernel`` (Kh, Kw) without further padding; keep every ``down``-th row and column starting
    at 0. Output size ``(H * up + y0 + y1 - Kh + down) // down`` (likewise for W). The kernel is used as given;
    callers scale it by ``up ** 2`` to keep the gain.

    >>> upfirdn2d(torch.ones(1, 1, 4, 4), make_kernel([1, 3, 3, 1]) * 4, up=2, pad=(2, 1)).shape
    torch.Size([1, 1, 8, 8])
    >>> upfirdn2d(torch.arange(4.0).view(1, 1, 2, 2), torch.ones(1, 1)).flatten().tolist()
    [0.0, 1.0, 2.0, 3.0]
    """
    if x.dim() != 4 or kernel.dim() != 2:
        raise ValueError(f"upfirdn2d needs x (B,C,H,W) and kernel (Kh,Kw), got {tuple(x.shape)}, {tuple(kernel.shape)}")
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got {up}, {down}")
    x0, x1, y0, y1 = _pads(pad)
    b, c, h, w = x.shape
    y = x.reshape(b * c, 1, h, w)
    if up > 1:  # zero insertion: (n, 1, h, 1, w, 1) -> (n, 1, h, up, w, up) -> (n, 1, h*up, w*up)
        y = F.pad(y.reshape(b * c, 1, h, 1, w, 1), (0, up - 1, 0, 0, 0, up - 1))
        y = y.reshape(b * c, 1, h * up, w * up)
    y = F.pad(y, (max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)))
    y = y[:, :, max(-y0, 0) : y.shape[2] - max(-y1, 0), max(-x0, 0) : y.shape[3] - max(-x1, 0)]
    weight = torch.flip(kernel, [0, 1]).to(dtype=y.dtype, device=y.device)[None, None]
    y = F.conv2d(y, weight)
    if down > 1:
        y = y[:, :, ::down, ::down]
    return y.reshape(b, c, y.shape[2], y.shape[3])


def upfirdn2d_fast(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: Sequence[int] = (0, 0)) -> Tensor:
    """Same result as :func:`upfirdn2d`, computed without zero insertion (one depthwise (transposed) convolution).

    ``up == 1``: pad/crop, then a depthwise convolution with the flipped kernel and stride ``down``. ``up > 1``: a
    depthwise transposed convolution with the kernel and stride ``up`` (a true convolution of the zero-stuffed
    signal), whose full output ``full[m]`` relates to the reference by ``out[p] = full[p + K - 1 - p0]``; the
    window is taken with the transposed conv's symmetric crop plus a (possibly negative) pad for the rest.

    >>> x, k = torch.randn(2, 3, 5, 5), make_kernel([1, 3, 3, 1]) * 4
    >>> bool(torch.allclose(upfirdn2d_fast(x, k, up=2, pad=(2, 1)), upfirdn2d(x, k, up=2, pad=(2, 1)), atol=1e-6))
    True
    """
    if x.dim() != 4 or kernel.dim() != 2:
        raise ValueError(f"upfirdn2d needs x (B,C,H,W) and kernel (Kh,Kw), got {tuple(x.shape)}, {tuple(kernel.shape)}")
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got {up}, {down}")
    x0, x1, y0, y1 = _pads(pad)
    c = x.shape[1]
    kh, kw = kernel.shape
    k = kernel.to(dtype=x.dtype, device=x.device)
    if up == 1:
        if x0 == x1 >= 0 and y0 == y1 >= 0:
            padding = (y0, x0)
        else:  # F.pad crops on negative entries
            x, padding = F.pad(x, (x0, x1, y0, y1)), (0, 0)
        return F.conv2d(x, torch.flip(k, [0, 1]).expand(c, 1, kh, kw), stride=down, padding=padding, groups=c)
    # crop from the full transposed-conv output: sy at the top, ey at the bottom (negative = zero padding)
    sy, ey, sx, ex = kh - 1 - y0, kh - up - y1, kw - 1 - x0, kw - up - x1
    py, px = max(0, min(sy, ey)), max(0, min(sx, ex))
    y = F.conv_transpose2d(x, k.expand(c, 1, kh, kw), stride=up, padding=(py, px), groups=c)
    if (sy, ey, sx, ex) != (py, py, px, px):
        y = F.pad(y, (px - sx, px - ex, py - sy, py - ey))
    if down > 1:
        y = y[:, :, ::down, ::down]
    return y


def blur(x: Tensor, kernel: Tensor, pad: Sequence[int]) -> Tensor:
    """Filter ``x`` (B, C, H, W) with ``kernel`` (K, K) after padding by ``pad``: (B, C, H + p0 + p1 - K + 1, ...).

    >>> blur(torch.ones(1, 2, 8, 8), make_kernel([1, 3, 3, 1]), pad=(1, 2)).shape
    torch.Size([1, 2, 8, 8])
    """
    return upfirdn2d(x, kernel, pad=pad)


def fused_leaky_relu(x: Tensor, bias: Tensor | None = None, negative_slope: float = 0.2,
                     scale: float = SQRT2) -> Tensor:
    """``scale * leaky_relu(x + bias, negative_slope)`` with ``bias`` (C,) added along dim 1 of ``x`` (B, C, ...).

    >>> fused_leaky_relu(torch.tensor([[-1.0, 1.0]]), torch.tensor([0.0, 1.0])).tolist()  # doctest: +ELLIPSIS
    [[-0.2828..., 2.8284...]]
    """
    if bias is not None:
        if x.dim() < 2 or bias.dim() != 1 or bias.shape[0] != x.shape[1]:
            raise ValueError(f"bias (C,) must match dim 1 of x, got {tuple(bias.shape)} and {tuple(x.shape)}")
        x = x + bias.view(1, -1, *([1] * (x.dim() - 2)))
    return F.leaky_relu(x, negative_slope) * scale


def modulate_weight(weight: Tensor, style: Tensor, demodulate: bool = True, eps: float = 1e-8) -> Tensor:
    """Per-sample modulated weights ``(B, O, I, K, K)`` from ``weight`` (1, O, I, K, K) and ``style`` (B, I).

    ``w' = weight * style`` along the input channels; with ``demodulate`` each output filter is divided by
    ``sqrt(sum(w'^2) + eps)`` over (I, K, K), so it has unit norm.

    >>> w = modulate_weight(torch.randn(1, 4, 3, 3, 3), torch.rand(2, 3) + 0.5)
    >>> w.shape, bool(torch.allclose(w.pow(2).sum([2, 3, 4]), torch.ones(2, 4), atol=1e-5))
    (torch.Size([2, 4, 3, 3, 3]), True)
    """
    if weight.dim() != 5 or weight.shape[0] != 1 or style.dim() != 2 or style.shape[1] != weight.shape[2]:
        raise ValueError(f"need weight (1,O,I,K,K) and style (B,I), got {tuple(weight.shape)}, {tuple(style.shape)}")
    w = weight * style[:, None, :, None, None]
    if demodulate:
        w = w * torch.rsqrt(w.pow(2).sum(dim=(2, 3, 4), keepdim=True) + eps)
    return w


def demodulation(weight: Tensor, style: Tensor, eps: float = 1e-8) -> Tensor:
    """Demodulation factors (B, O) of ``modulate_weight(weight, style)`` without building the (B, O, I, K, K) weights.

    ``sum_{i,k}(w[o,i,k] s[b,i])^2 = sum_i s[b,i]^2 sum_k w[o,i,k]^2``, so ``d = rsqrt(s^2 @ (w^2 summed over k)^T
    + eps)`` and ``modulate_weight(weight, style) == weight * style * d`` (per output channel).

    >>> w, s = torch.randn(1, 4, 3, 3, 3), torch.rand(2, 3) + 0.5
    >>> m = modulate_weight(w, s)
    >>> bool(torch.allclose(m, w * s[:, None, :, None, None] * demodulation(w, s)[:, :, None, None, None]))
    True
    """
    if weight.dim() != 5 or weight.shape[0] != 1 or style.dim() != 2 or style.shape[1] != weight.shape[2]:
        raise ValueError(f"need weight (1,O,I,K,K) and style (B,I), got {tuple(weight.shape)}, {tuple(style.shape)}")
    return torch.rsqrt(style.square() @ weight[0].square().sum(dim=(2, 3)).t() + eps)
