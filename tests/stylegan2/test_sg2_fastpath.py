"""The fast CPU kernels against the reference ``upfirdn2d``-based computation (float64, forward and gradients).

Every fast path of :mod:`methods.stylegan2.ops` / :mod:`methods.stylegan2.model` (depthwise (transposed) blur,
strided blur for 1x1 downsampling, input-modulated convs with separate demodulation, folded bias/noise/gain
epilogues, the 1x1 ToRGB matmul) must give the reference results to ~1e-10, and whole networks must be unchanged.
"""

import math

import pytest
import torch

from methods.stylegan2.model import (ConvLayer, Discriminator, Generator, ModulatedConv2d, ResBlock, StyledConv,
                                     ToRGB)
from methods.stylegan2.ops import (demodulation, fast_path_enabled, make_kernel, modulate_weight, reference_path,
                                   set_fast_path, upfirdn2d, upfirdn2d_fast)

TOL = dict(atol=1e-10, rtol=1e-10)
F64 = torch.float64


def grads_of(fn, *inputs, seed=0):
    """Output and gradients of ``sum(out * r)`` (fixed random r) w.r.t. every input (and module parameters)."""
    inputs = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*inputs)
    r = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    grads = torch.autograd.grad((out * r).sum(), inputs)
    return out, grads


def assert_same(a, b):
    out_a, g_a = a
    out_b, g_b = b
    assert out_a.shape == out_b.shape
    torch.testing.assert_close(out_a, out_b, **TOL)
    assert len(g_a) == len(g_b)
    for x, y in zip(g_a, g_b):
        assert (x is None) == (y is None)
        if x is not None:
            torch.testing.assert_close(x, y, **TOL)


def test_fast_path_is_default_and_switchable():
    assert fast_path_enabled()
    with reference_path():
        assert not fast_path_enabled()
    assert fast_path_enabled()
    assert set_fast_path(False) is True and set_fast_path(True) is False


@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2), (2, 2), (3, 1), (4, 2)])
@pytest.mark.parametrize("pad", [(0, 0), (1, 1), (2, 1), (1, 2), (2, 2), (-1, 2, 0, -1), (3, 0, 1, 2), (0, 3, -1, 0)])
def test_upfirdn2d_fast_matches_reference(up, down, pad):
    gen = torch.Generator().manual_seed(up * 100 + down * 10 + len(pad))
    for (b, c, h, w), (kh, kw) in [((2, 3, 7, 6), (4, 3)), ((1, 5, 8, 8), (4, 4)), ((3, 2, 5, 9), (2, 5)),
                                   ((2, 4, 6, 7), (1, 1))]:
        x = torch.randn(b, c, h, w, generator=gen, dtype=F64)
        k = torch.rand(kh, kw, generator=gen, dtype=F64)  # asymmetric: a wrong flip would show
        try:
            ref = upfirdn2d(x, k, up=up, down=down, pad=pad)
        except RuntimeError:  # the reference cannot build this window either
            continue
        if ref.numel() == 0:
            continue
        assert_same(grads_of(lambda t: upfirdn2d_fast(t, k, up=up, down=down, pad=pad), x),
                    grads_of(lambda t: upfirdn2d(t, k, up=up, down=down, pad=pad), x))


@pytest.mark.parametrize("c,b,size", [(1, 1, 4), (3, 2, 5), (8, 3, 8), (16, 2, 9)])
def test_model_blur_configurations(c, b, size):
    """The exact calls the networks make: Upsample (up 2, pad (2, 1)), the modconv blur (pad (1, 1)) and the
    D blurs (pad (2, 2) before a 3x3 stride-2 conv, (1, 1) with stride 2 for the 1x1 skip)."""
    k = make_kernel([1, 3, 3, 1], dtype=F64)
    x = torch.randn(b, c, size, size, dtype=F64)
    for kern, kw in [(k * 4, dict(up=2, pad=(2, 1))), (k * 4, dict(pad=(1, 1))), (k, dict(pad=(2, 2))),
                     (k, dict(pad=(1, 1), down=2))]:
        assert_same(grads_of(lambda t: upfirdn2d_fast(t, kern, **kw), x),
                    grads_of(lambda t: upfirdn2d(t, kern, **kw), x))


def test_demodulation_factors():
    w, s = torch.randn(1, 6, 5, 3, 3, dtype=F64), torch.randn(4, 5, dtype=F64)
    ref = modulate_weight(w, s)
    torch.testing.assert_close(w * s[:, None, :, None, None] * demodulation(w, s)[:, :, None, None, None], ref, **TOL)


def _perturb(module):
    """Random biases / noise strengths so every folded term is exercised."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "bias" in name or "noise" in name:
                p.normal_()
    return module


def _params(module):
    return [p for p in module.parameters()]


def module_grads(module, fn, *inputs, seed=0):
    """Output plus gradients w.r.t. inputs and parameters, for the current path."""
    inputs = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*inputs)
    r = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    grads = torch.autograd.grad((out * r).sum(), inputs + _params(module), allow_unused=True)
    return out, grads


def both_paths(module, fn, *inputs):
    fast = module_grads(module, fn, *inputs)
    with reference_path():
        ref = module_grads(module, fn, *inputs)
    return fast, ref


@pytest.mark.parametrize("cin,cout,k,up,demod", [(4, 6, 3, False, True), (4, 6, 3, True, True), (3, 5, 1, False, False),
                                                 (5, 2, 3, True, False), (1, 3, 3, False, True), (6, 4, 1, True, True)])
@pytest.mark.parametrize("b,size", [(1, 4), (3, 5), (2, 8)])
def test_modulated_conv(cin, cout, k, up, demod, b, size):
    torch.manual_seed(cin * 7 + b)
    m = _perturb(ModulatedConv2d(cin, cout, k, style_dim=7, demodulate=demod, upsample=up).double())
    x, s = torch.randn(b, cin, size, size, dtype=F64), torch.randn(b, 7, dtype=F64)
    assert_same(*both_paths(m, m, x, s))


@pytest.mark.parametrize("up", [False, True])
@pytest.mark.parametrize("noise_batch", [None, 1, "b"])
@pytest.mark.parametrize("b,c", [(1, 3), (3, 8)])
def test_styled_conv(up, noise_batch, b, c):
    torch.manual_seed(b + c)
    m = _perturb(StyledConv(c, c + 1, 3, style_dim=6, upsample=up).double())
    size = 5
    out_size = 2 * size if up else size
    x, s = torch.randn(b, c, size, size, dtype=F64), torch.randn(b, 6, dtype=F64)
    if noise_batch is None:  # fresh noise: same seed on both paths
        def fn(x, s):
            torch.manual_seed(123)
            return m(x, s)
    else:
        n = torch.randn(b if noise_batch == "b" else 1, 1, out_size, out_size, dtype=F64)

        def fn(x, s):
            return m(x, s, noise=n)
    assert_same(*both_paths(m, fn, x, s))


@pytest.mark.parametrize("b,c,size", [(1, 2, 4), (3, 8, 5), (2, 5, 8)])
def test_to_rgb(b, c, size):
    torch.manual_seed(c)
    m = _perturb(ToRGB(c, style_dim=6).double())
    x, s = torch.randn(b, c, size, size, dtype=F64), torch.randn(b, 6, dtype=F64)
    if size % 2:
        assert_same(*both_paths(m, lambda x, s: m(x, s), x, s))  # no skip for odd sizes
    else:
        skip = torch.randn(b, 3, size // 2, size // 2, dtype=F64)
        assert_same(*both_paths(m, m, x, s, skip))
    m1 = _perturb(ToRGB(c, style_dim=6, upsample=False).double())
    assert_same(*both_paths(m1, m1, x, s))


@pytest.mark.parametrize("cin,cout,k,down,act", [(3, 4, 1, False, True), (4, 4, 3, False, True), (4, 6, 3, True, True),
                                                 (4, 6, 1, True, False), (2, 3, 3, False, False)])
@pytest.mark.parametrize("b,size", [(1, 4), (3, 8), (2, 6)])
def test_conv_layer(cin, cout, k, down, act, b, size):
    torch.manual_seed(cin + k)
    m = _perturb(ConvLayer(cin, cout, k, downsample=down, activate=act, bias=act).double())
    x = torch.randn(b, cin, size, size, dtype=F64)
    assert_same(*both_paths(m, m, x))
    for gain in (1.0, 1 / math.sqrt(2)):
        fast = module_grads(m, lambda t: m.forward_fast(t, gain), x)
        with reference_path():
            ref = module_grads(m, lambda t: m(t) * gain, x)
        assert_same(fast, ref)


@pytest.mark.parametrize("b,cin,cout,size", [(1, 3, 4, 4), (4, 8, 6, 8), (2, 5, 5, 6)])
def test_res_block(b, cin, cout, size):
    torch.manual_seed(b * cin)
    m = _perturb(ResBlock(cin, cout).double())
    assert_same(*both_paths(m, m, torch.randn(b, cin, size, size, dtype=F64)))


CHANNELS = {4: 8, 8: 6, 16: 5, 32: 4}


@pytest.mark.parametrize("randomize_noise", [False, True])
@pytest.mark.parametrize("b", [1, 4])
def test_generator_unchanged(randomize_noise, b):
    torch.manual_seed(0)
    g = _perturb(Generator(32, style_dim=16, n_mlp=2, channels=CHANNELS).double())
    z = torch.randn(b, 16, dtype=F64)

    def fn(z):
        torch.manual_seed(7)
        return g([z], randomize_noise=randomize_noise)[0]
    assert_same(*both_paths(g, fn, z))
    w_plus = torch.randn(b, g.n_latent, 16, dtype=F64)
    assert_same(*both_paths(g, lambda w: g([w], input_is_w=True)[0], w_plus))


@pytest.mark.parametrize("b", [4, 8])
def test_discriminator_unchanged(b):
    torch.manual_seed(1)
    d = _perturb(Discriminator(32, channels=CHANNELS).double())
    img = torch.randn(b, 3, 32, 32, dtype=F64)
    assert_same(*both_paths(d, d, img))
    for i in range(3):
        assert_same(*both_paths(d, lambda x: d(x, ftr_num=3)[i], img))
    odd = torch.randn(2, 3, 24, 40, dtype=F64)  # the feature path takes other sizes divisible by 2^k
    assert_same(*both_paths(d, lambda x: d(x, ftr_num=2)[1], odd))


def test_float32_fast_path_close_to_reference():
    torch.manual_seed(2)
    g, d = Generator(32, style_dim=16, n_mlp=2, channels=CHANNELS), Discriminator(32, channels=CHANNELS)
    z = torch.randn(4, 16)
    with torch.no_grad():
        img, logits = g([z])[0], d(g([z])[0])
        with reference_path():
            img_ref, logits_ref = g([z])[0], d(g([z])[0])
    torch.testing.assert_close(img, img_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(logits, logits_ref, atol=1e-5, rtol=1e-4)
