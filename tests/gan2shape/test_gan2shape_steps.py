"""GAN2Shape's schedule on one fixed image with a tiny GAN: what each step trains, and that its loss goes down."""

import functools

import pytest
import torch

from methods.gan2shape.model import NET_NAMES, STEP_NETS, Geometry, Networks
from methods.gan2shape.pseudo import default_view_prior
from methods.gan2shape.steps import Hyper, gan_images, make_pseudo, step1, step2, step3
from methods.gan2shape.fitting import ImageTask, Optim, Schedule, fit_image
from methods.stylegan2.losses import discriminator_feature_loss
from methods.stylegan2.model import Discriminator, Generator

torch.set_num_threads(1)
S = 64


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    G = Generator(32, style_dim=32, n_mlp=8, max_channels=16).eval().requires_grad_(False)
    D = Discriminator(32, max_channels=16).eval().requires_grad_(False)
    w = G.style(torch.randn(1, 32))
    image = gan_images(G, w, S)
    nets = Networks(S, latent_dim=32)
    hp = Hyper()
    perceptual = lambda a, b: discriminator_feature_loss(D, a, b, None, 3)  # noqa: E731
    disc = functools.partial(discriminator_feature_loss, D, ftr_num=3)
    return G, w, image, nets, hp, perceptual, disc


def _snapshot(nets):
    return {n: [p.detach().clone() for p in getattr(nets, n).parameters()] for n in NET_NAMES}


def _changed(nets, before):
    return {n for n in NET_NAMES if any(not torch.equal(p, q) for p, q in zip(getattr(nets, n).parameters(), before[n]))}


@pytest.mark.parametrize("step", [1, 2, 3])
def test_each_step_optimises_exactly_its_networks(setup, step):
    G, w, image, nets, hp, perceptual, disc = setup
    lengths = tuple(2 if k == step else 0 for k in (1, 2, 3))
    schedule = Schedule(stage_len=lengths, batch_size=2, collect_iters=1)
    before = _snapshot(nets)
    fit_image(nets, G, ImageTask(image, w, image), default_view_prior(), Geometry(), hp, schedule, Optim(),
              rng=torch.Generator().manual_seed(0), perceptual=perceptual, disc_feature=disc)
    assert _changed(nets, before) == set(STEP_NETS[step])


def _descends(loss_fn, nets, names, iters=6, lr=1e-4):
    nets.train_only(names)
    opt = Optim(lr=lr).make(nets.parameters_of(names))
    losses = []
    for _ in range(iters):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_each_step_loss_decreases_on_a_fixed_image(setup):
    G, w, image, nets, hp, perceptual, disc = setup
    geom = Geometry()
    nets = Networks(S, latent_dim=32)
    losses1 = _descends(lambda: step1(nets, image, geom, hp, flip=True, perceptual=perceptual)[0].total, nets,
                        STEP_NETS[1])
    assert losses1[-1] < losses1[0]
    with torch.no_grad():
        canon = step1(nets, image, geom, hp)[1].detach()
    pseudo = make_pseudo(canon, 4, default_view_prior(), geom, hp, torch.Generator().manual_seed(1))
    losses2 = _descends(lambda: step2(nets, G, w, image, pseudo, hp, disc)[0].total, nets, STEP_NETS[2])
    assert losses2[-1] < losses2[0]
    with torch.no_grad():
        _, projected = step2(nets, G, w, image, pseudo, hp, None)
    losses3 = _descends(lambda: step3(nets, image, projected, pseudo.masks, geom, hp, flip=True,
                                      perceptual=perceptual)[0].total, nets, STEP_NETS[3])
    assert losses3[-1] < losses3[0]


def test_step3_reconstructs_projected_samples_from_the_images_canonical_model(setup):
    """The projected-sample term renders the input's canonical depth and albedo, not the samples' own."""
    G, w, image, nets, hp, perceptual, disc = setup
    geom = Geometry()
    projected = torch.rand(3, 3, S, S) * 2 - 1
    nets.train_only(STEP_NETS[3])
    loss, fwd = step3(nets, image, projected, torch.ones(3, 1, S, S), geom, hp)
    assert fwd.depth.shape == (1, S, S)
    loss.total.backward()
    assert nets.netV.network[0].weight.grad is not None and nets.netD.network[0].weight.grad is not None
    nets.zero_grad(set_to_none=True)


def test_step3_with_pseudo_views_renders_under_the_given_views(setup):
    """step3_views='pseudo': the samples are rendered under the views given (here V's own prediction, so the loss
    is the 'predicted' one), and V then gets no gradient from them; without views it refuses."""
    from dataclasses import replace

    G, w, image, nets, hp, perceptual, disc = setup
    geom = Geometry()
    projected, masks = torch.rand(3, 3, S, S) * 2 - 1, torch.ones(3, 1, S, S)
    with torch.no_grad():
        views = nets.netV(projected) + geom.view_mean
        predicted = step3(nets, image, projected, masks, geom, hp)[0].projected
        given = step3(nets, image, projected, masks, geom, replace(hp, step3_views="pseudo"), views=views)[0]
    assert torch.equal(given.projected, predicted)
    nets.train_only(STEP_NETS[3])
    step3(nets, image, projected, masks, geom, replace(hp, step3_views="pseudo"), views=views)[0].projected.backward()
    assert nets.netV.network[0].weight.grad is None and nets.netD.network[0].weight.grad is not None
    nets.zero_grad(set_to_none=True)
    with pytest.raises(ValueError, match="needs the pseudo samples' views"):
        step3(nets, image, projected, masks, geom, replace(hp, step3_views="pseudo"))
    with pytest.raises(ValueError, match="step3_views must be"):
        Hyper(step3_views="nope")


def test_schedule_validation():
    with pytest.raises(ValueError, match="flip3 needs one flag per stage"):
        Schedule(num_stage=2, flip1=(False, True), flip3=(True,))
    assert Schedule(num_stage=2, flip1=(0, 1), flip3=(1, 1), stage_len=(1, 2, 3), stage_len_later=(4, 5, 6)
                    ).iterations() == 21


def test_depth_pool_band_limits_the_canonical_depth(setup):
    """depth_pool=k: the depth is the bilinear upsampling of a (S/k)^2 grid; k=1 is the per-pixel original."""
    from methods.gan2shape.model import canonical
    from methods.renderer.shading import raw_to_depth

    _, _, image, nets, _, _, _ = setup
    with torch.no_grad():
        raw = nets.netD(image)
        plain, _ = canonical(nets, image, Geometry(depth_pool=1), border=False)
        pooled, _ = canonical(nets, image, Geometry(depth_pool=8), border=False)
    r = Geometry().renderer
    assert torch.equal(plain, raw_to_depth(raw[:, 0], r.min_depth, r.max_depth))
    grid = torch.nn.functional.avg_pool2d(raw, 8)
    expected = torch.nn.functional.interpolate(grid, size=(S, S), mode="bilinear", align_corners=False)
    assert torch.allclose(pooled, raw_to_depth(expected[:, 0], r.min_depth, r.max_depth))
    roughness = lambda d: (d[..., 1:] - d[..., :-1]).abs().mean()  # noqa: E731
    assert roughness(pooled) < roughness(plain)


def test_pretrained_weights_are_checked_key_by_key_and_shape_by_shape(tmp_path):
    from safetensors.torch import save_file

    from core.errors import BenchError
    from methods.gan2shape.method import load_networks

    source = Networks(S, latent_dim=32)
    path = tmp_path / "g2s.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = Networks(S, latent_dim=32)
    load_networks(target, path)
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), source.state_dict().values()))
    with pytest.raises(BenchError, match=r"latent_dim 16: netEnc\..* has shape .*32.*, they need .*16"):
        load_networks(Networks(S, latent_dim=16), path)
    save_file({k: v.contiguous() for k, v in source.state_dict().items() if not k.startswith("netL.")}, str(path))
    with pytest.raises(BenchError, match=r"keys missing \(e\.g\. netL\."):
        load_networks(Networks(S, latent_dim=32), path)


def test_refine_projection_moves_the_offsets_toward_the_targets(setup):
    """Rotation-GAN's refinement: targets G(w + Δ*) of known offsets are matched better after the Adam steps than by
    the starting offsets (zero), the GAN is untouched, zero steps return the start's projections, and ``on_step``
    sees every step's offsets (the last ones give the result)."""
    from methods.gan2shape.losses import photometric_l1
    from methods.gan2shape.steps import refine_projection

    G, w, _, _, hp, _, _ = setup
    before = [p.clone() for p in G.parameters()]
    true_offset = 0.5 * torch.randn(3, 32, generator=torch.Generator().manual_seed(2))
    targets = gan_images(G, w + true_offset, S)
    masks, start = torch.ones(3, 1, S, S), torch.zeros(3, 32)
    assert torch.equal(refine_projection(G, w, start, targets, masks, hp, steps=0), gan_images(G, w.expand(3, -1), S))
    seen = []
    refined = refine_projection(G, w, start, targets, masks, hp, steps=40, lr=0.05,
                                on_step=lambda k, delta: seen.append((k, delta.clone())))
    assert refined.shape == (3, 3, S, S)
    assert [k for k, _ in seen] == list(range(1, 41)) and torch.equal(refined, gan_images(G, w + seen[-1][1], S))
    assert photometric_l1(refined, targets, masks) < 0.5 * photometric_l1(gan_images(G, w.expand(3, -1), S), targets,
                                                                          masks)
    assert all(torch.equal(a, b) and b.grad is None for a, b in zip(before, G.parameters()))
