"""Kernels against straightforward references: upfirdn2d, fused leaky ReLU, modulated convolution."""

import math

import pytest
import torch
import torch.nn.functional as F

from methods.stylegan2.model import ModulatedConv2d
from methods.stylegan2.ops import fused_leaky_relu, make_kernel, modulate_weight, upfirdn2d


def naive_upfirdn(x, k, up, down, x0, x1, y0, y1):
    """Zero insertion by indexing, explicit padding/cropping, a tap-by-tap true convolution, then decimation."""
    b, c, h, w = x.shape
    z = torch.zeros(b, c, h * up, w * up, dtype=x.dtype)
    z[:, :, ::up, ::up] = x
    big = torch.zeros(b, c, h * up + abs(y0) + abs(y1), w * up + abs(x0) + abs(x1), dtype=x.dtype)
    big[:, :, abs(y0) : abs(y0) + h * up, abs(x0) : abs(x0) + w * up] = z
    oy, ox = abs(y0) - y0, abs(x0) - x0  # crop for negative pads
    big = big[:, :, oy : oy + h * up + y0 + y1, ox : ox + w * up + x0 + x1]
    kh, kw = k.shape
    oh, ow = big.shape[2] - kh + 1, big.shape[3] - kw + 1
    out = torch.zeros(b, c, oh, ow, dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):  # true convolution: out[p] = sum_t k[t] * in[p + K - 1 - t]
            out += k[kh - 1 - i, kw - 1 - j] * big[:, :, i : i + oh, j : j + ow]
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize("up,down,pad", [(1, 1, (1, 2)), (2, 1, (2, 1)), (1, 2, (2, 2)), (2, 2, (1, 1)),
                                         (1, 1, (-1, 2, 0, -1)), (3, 1, (1, 1, 2, 0))])
def test_upfirdn2d_matches_naive(up, down, pad):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 6, generator=g, dtype=torch.float64)
    k = torch.rand(4, 3, generator=g, dtype=torch.float64)  # asymmetric, so a missing flip would show
    x0, x1, y0, y1 = (pad[0], pad[1], pad[0], pad[1]) if len(pad) == 2 else pad
    out = upfirdn2d(x, k, up=up, down=down, pad=pad)
    ref = naive_upfirdn(x, k, up, down, x0, x1, y0, y1)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref)


def test_upfirdn2d_size_formula_and_gain():
    x = torch.ones(1, 1, 8, 8)
    k = make_kernel([1, 3, 3, 1])
    assert upfirdn2d(x, k * 4, up=2, pad=(2, 1)).shape[-1] == 16  # Upsample
    assert upfirdn2d(x, k, down=2, pad=(1, 1)).shape[-1] == 4  # Downsample
    inner = upfirdn2d(x, k * 4, up=2, pad=(2, 1))[..., 4:12, 4:12]
    torch.testing.assert_close(inner, torch.ones_like(inner))  # a constant image stays constant


def test_fused_leaky_relu():
    x, b = torch.randn(3, 4, 2, 2), torch.randn(4)
    ref = math.sqrt(2) * F.leaky_relu(x + b.view(1, 4, 1, 1), 0.2)
    torch.testing.assert_close(fused_leaky_relu(x, b), ref)
    torch.testing.assert_close(fused_leaky_relu(x[:, :, 0, 0], b), ref[:, :, 0, 0])
    with pytest.raises(ValueError):
        fused_leaky_relu(x, torch.randn(3))


def test_modulate_weight_unit_norm_and_no_demod():
    w, s = torch.randn(1, 5, 3, 3, 3), torch.rand(2, 3) + 0.1
    torch.testing.assert_close(modulate_weight(w, s, demodulate=False), w * s[:, None, :, None, None])
    assert torch.allclose(modulate_weight(w, s).pow(2).sum([2, 3, 4]), torch.ones(2, 5), atol=1e-5)


def per_sample_modconv(m: ModulatedConv2d, x, style):
    """One sample at a time with an ordinary conv (or zero-insertion + blur for upsampling)."""
    outs = []
    for i in range(x.shape[0]):
        s = m.modulation(style[i : i + 1])[0]
        w = m.weight[0] * m.scale * s.view(1, -1, 1, 1)
        if m.demodulate:
            w = w / torch.sqrt((w**2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        xi = x[i : i + 1]
        if m.upsample:  # transposed stride-2 conv == zero insertion + full pad + conv with flipped kernel
            k = w.shape[-1]
            z = torch.zeros(1, xi.shape[1], 2 * xi.shape[2] - 1, 2 * xi.shape[3] - 1, dtype=x.dtype)
            z[:, :, ::2, ::2] = xi
            o = F.conv2d(F.pad(z, [k - 1] * 4), w.flip([2, 3]))
            o = naive_upfirdn(o, m.blur.kernel.double(), 1, 1, 1, 1, 1, 1)
        else:
            o = F.conv2d(xi, w, padding=m.padding)
        outs.append(o)
    return torch.cat(outs)


@pytest.mark.parametrize("upsample,demodulate,k", [(False, True, 3), (True, True, 3), (False, False, 1)])
def test_modulated_conv_grouped_equals_per_sample(upsample, demodulate, k):
    torch.manual_seed(0)
    m = ModulatedConv2d(4, 6, k, style_dim=5, demodulate=demodulate, upsample=upsample).double()
    with torch.no_grad():
        m.modulation.bias.normal_()
    x, style = torch.randn(3, 4, 5, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    out = m(x, style)
    assert out.shape == ((3, 6, 10, 10) if upsample else (3, 6, 5, 5))
    torch.testing.assert_close(out, per_sample_modconv(m, x, style))
