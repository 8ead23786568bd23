"""StyleGAN2 speed on the thin configurations of the project issue, fast path vs the reference ops.

Run: ``python -m pytest benchmarks/test_stylegan2_bench.py --benchmark-only -q`` (add ``-k fast`` to skip the slow
reference cases). Cases: G forward+backward at batch 16 (64x64 thin config; the GAN2Shape step-2 generator cost) and
one training iteration at batch 32 (D step on real + fake with the logistic loss, G step with the non-saturating
loss, no regularisers) for the 64x64 and 32x32 configs. ``path`` is ``fast`` (default kernels) or ``reference``
(``ops.reference_path()``: zero-stuffing ``upfirdn2d`` and grouped modulated convs). CPU runs use 2 threads; CUDA
cases are skipped without a GPU.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from methods.stylegan2.model import Discriminator, Generator
from methods.stylegan2.ops import reference_path

CONFIGS = {64: {4: 128, 8: 128, 16: 128, 32: 128, 64: 64}, 32: {4: 128, 8: 128, 16: 64, 32: 32}}
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
PATHS = ["fast", "reference"]


def build(size: int, device: str):
    torch.manual_seed(0)
    g = Generator(size, style_dim=512, n_mlp=8, channels=CONFIGS[size]).to(device)
    d = Discriminator(size, channels=CONFIGS[size]).to(device)
    return g, d


def path_context(path: str):
    return reference_path() if path == "reference" else contextlib.nullcontext()


def sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def train_iteration(g, d, g_opt, d_opt, real: Tensor, device: str):
    """One StyleGAN2 iteration without regularisers: D logistic loss on real + fake, then G non-saturating loss."""
    b = real.shape[0]
    g.requires_grad_(False)
    d.requires_grad_(True)
    fake, _ = g([torch.randn(b, g.style_dim, device=device)], randomize_noise=True)
    d_loss = F.softplus(d(fake)).mean() + F.softplus(-d(real)).mean()
    d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    d_opt.step()
    g.requires_grad_(True)
    d.requires_grad_(False)
    fake, _ = g([torch.randn(b, g.style_dim, device=device)], randomize_noise=True)
    g_loss = F.softplus(-d(fake)).mean()
    g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    g_opt.step()
    sync(device)


Tensor = torch.Tensor


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", PATHS)
def test_generator_forward_backward_b16_64(benchmark, path, device):
    benchmark.group = f"sg2-G-fwd-bwd-b16-64-{device}"
    g, _ = build(64, device)
    z = torch.randn(16, 512, device=device)

    def step():
        g.zero_grad(set_to_none=True)
        img, _ = g([z])
        img.square().mean().backward()
        sync(device)

    with path_context(path):
        step()
        benchmark.pedantic(step, rounds=3, iterations=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("size", [64, 32])
def test_training_iteration_b32(benchmark, size, path, device):
    benchmark.group = f"sg2-train-iter-b32-{size}-{device}"
    g, d = build(size, device)
    g_opt = torch.optim.Adam(g.parameters(), lr=2e-3, betas=(0.0, 0.99))
    d_opt = torch.optim.Adam(d.parameters(), lr=2e-3, betas=(0.0, 0.99))
    real = torch.rand(32, 3, size, size, device=device) * 2 - 1
    with path_context(path):
        train_iteration(g, d, g_opt, d_opt, real, device)
        benchmark.pedantic(train_iteration, args=(g, d, g_opt, d_opt, real, device), rounds=3, iterations=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [64, 32])
def test_step2_gan_cost_b16(benchmark, size, device):
    """The GAN part of a GAN2Shape Step-2 iteration at batch 16: G from W (stored noise) forward+backward to the
    latent offsets, with the L1 + 4-feature discriminator loss against pseudo-samples (fast path)."""
    from methods.stylegan2.losses import discriminator_feature_loss

    g, d = build(size, device)
    g.requires_grad_(False)
    d.requires_grad_(False)
    w = g.mean_latent(256).detach().expand(16, -1).clone()
    target = torch.rand(16, 3, size, size, device=device) * 2 - 1
    mask = torch.ones(16, 1, size, size, device=device)

    def step():
        offset = torch.zeros_like(w, requires_grad=True)
        image, _ = g([w + offset], input_is_w=True)
        depth = min(4, size.bit_length() - 3)  # D has log2(size) - 2 residual blocks
        loss = (image - target).abs().mean() + discriminator_feature_loss(d, image, target, mask, ftr_num=depth)
        loss.backward()
        sync(device)

    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
