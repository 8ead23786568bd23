"""Speed of one GAN2Shape iteration of each step at the published synface sizes (S = 64, batch 16) with the shipped
32x32 GAN: where a per-image run spends its time.

Run: ``python -m pytest benchmarks/test_gan2shape_bench.py --benchmark-only -q``. Cases: the ellipsoid pre-fit
iteration (D only), Step 1 (A only, no flip), Step 2 (pseudo samples + E + G + discriminator features), one collect
pass, Step 3 with flip (D, A, V, L on the image and 16 projected samples). Each includes the Adam step. CPU cases use
2 threads; CUDA cases are skipped without a GPU. Multiply by the schedule (``presets.gan2shape``) for a per-image
estimate; the measured per-image phases of a run are its ``time_<phase>_s`` metrics.
"""

from __future__ import annotations

import pytest
import torch

from core.paths import asset_path
from methods.stylegan2.checkpoints import load_gan
from methods.common.shape_prior import ellipsoid_depth
from methods.gan2shape.model import STEP_NETS, Geometry, Networks, canonical
from methods.gan2shape.pseudo import default_view_prior
from methods.gan2shape.steps import Hyper, gan_images, make_pseudo, step1, step2, step3
from methods.gan2shape.fitting import Optim
from methods.stylegan2.losses import discriminator_feature_loss

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
BATCH = 16


def setup(device: str):
    torch.manual_seed(0)
    G, D = load_gan(str(asset_path("weights/stylegan2_synface_proc_32.safetensors")), torch.device(device), True)
    G.requires_grad_(False)
    D.requires_grad_(False)
    w = G.style(torch.randn(1, G.style_dim, device=device))
    image = gan_images(G, w, 64)
    nets = Networks(64, G.style_dim).to(device)
    feats = lambda a, b, m=None: discriminator_feature_loss(D, a, b, m, 3)  # noqa: E731
    return G, w, image, nets, feats


def _iteration(nets, names, loss_fn):
    nets.train_only(names)
    opt = Optim().make(nets.parameters_of(names))

    def run():
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if loss.device.type == "cuda":
            torch.cuda.synchronize()
    return run


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("phase", ["prefit", "step1", "step2", "collect", "step3"])
def test_gan2shape_iteration(benchmark, device, phase):
    G, w, image, nets, feats = setup(device)
    geom, hp = Geometry(), Hyper()
    mask = torch.zeros(1, 64, 64, device=device)
    mask[:, 10:54, 14:50] = 1
    prior = ellipsoid_depth(mask, "synface_proc")
    with torch.no_grad():
        canon = step1(nets, image, geom, hp)[1].detach()
    rng = torch.Generator().manual_seed(0)
    pseudo = make_pseudo(canon, BATCH, default_view_prior(device=device), geom, hp, rng)
    if phase == "prefit":
        benchmark(_iteration(nets, ("netD",), lambda: (canonical(nets, image, geom, border=False)[0] - prior)
                             .pow(2).mean()))
    elif phase == "step1":
        benchmark(_iteration(nets, STEP_NETS[1], lambda: step1(nets, image, geom, hp, perceptual=feats)[0].total))
    elif phase == "step2":
        def loss():
            fresh = make_pseudo(canon, BATCH, default_view_prior(device=device), geom, hp, rng)
            return step2(nets, G, w, image, fresh, hp, feats)[0].total
        benchmark(_iteration(nets, STEP_NETS[2], loss))
    elif phase == "collect":
        nets.train_only(())

        @torch.no_grad()
        def collect():
            fresh = make_pseudo(canon, BATCH, default_view_prior(device=device), geom, hp, rng)
            return step2(nets, G, w, image, fresh, hp, None)[1]
        benchmark(collect)
    else:
        with torch.no_grad():
            projected = step2(nets, G, w, image, pseudo, hp, None)[1]
        benchmark(_iteration(nets, STEP_NETS[3], lambda: step3(nets, image, projected, pseudo.masks, geom, hp,
                                                               flip=True, perceptual=feats)[0].total))


@pytest.mark.parametrize("how", ["loop", "vmap"])
def test_gan2shape_networks_of_two_images(benchmark, how):
    """D forward + backward for 2 images' own networks on their batches of 16: one after the other (``loop``) or
    stacked with ``torch.func`` and run as one batched call (``vmap``, the in-process batching issue 15 suggests).
    Measured on the project's 2-core CPU, the stacked call is not faster than the loop, so several images are
    fitted at once by torchrun ranks (``tests/gan2shape``: sharded runs match one process) instead."""
    import copy

    from torch.func import functional_call, stack_module_state, vmap

    torch.manual_seed(0)
    nets = [Networks(64, 256).netD for _ in range(2)]
    x = torch.randn(2, BATCH, 3, 64, 64)
    if how == "loop":
        params = [p for n in nets for p in n.parameters()]

        def run():
            loss = sum(n(x[i]).sum() for i, n in enumerate(nets))
            torch.autograd.grad(loss, params)
    else:
        stacked, buffers = stack_module_state(nets)
        base = copy.deepcopy(nets[0]).to("meta")
        call = vmap(lambda p, b, xi: functional_call(base, (p, b), (xi,)))

        def run():
            torch.autograd.grad(call(stacked, buffers, x).sum(), list(stacked.values()))
    benchmark(run)
