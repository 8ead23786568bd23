"""Unsup3d forward pass: the flip path, the loss mask, the no-symmetry path and the perceptual features."""

import pytest
import torch
from torch import nn

from methods.unsup3d.losses import unsup3d_loss
from methods.unsup3d.model import Unsup3dConfig, Unsup3dNet, mirror
from methods.unsup3d.perceptual import DiscriminatorFeatures
from methods.renderer.shading import clamp_border_depth
from methods.renderer.warp import render_given_view, warp_canon_depth
from methods.stylegan2.model import Discriminator

TINY = {"nf_depth_albedo": 8, "nf_view_light": 8, "zdim": 16, "gn_base": 2, "conf_nf": 8, "conf_zdim": 16}


class Constant(nn.Module):
    """Stands in for the view network: the same vector for every image."""

    def __init__(self, value):
        super().__init__()
        self.value = torch.tensor(value)

    def forward(self, image):
        return self.value.to(image).expand(image.shape[0], -1)


def _smooth_depth(image):
    """A smooth, asymmetric canonical depth (off-centre bump plus a slope) in place of the depth network."""
    b, _, s, _ = image.shape
    v, u = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
    free = 1.02 - 0.08 * torch.exp(-((u + 0.25) ** 2 + v**2) / 0.3) + 0.01 * u
    free = free.expand(b, s, s).clone()
    return free, clamp_border_depth(free, factor=1.0)


def _net(**kw) -> Unsup3dNet:
    torch.manual_seed(0)
    return Unsup3dNet(Unsup3dConfig(**{**TINY, **kw})).eval()


def _images(b=2):
    return torch.rand(b, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1


@torch.no_grad()
def test_flip_path_renders_the_mirrored_canonical_shape():
    net = _net()
    net.netV = Constant([0.0] * 6)  # frontal view: the warp is the identity
    out = net(_images())
    b = 2
    assert out.flipped and out.recon_image.shape == (4, 3, 64, 64)
    assert torch.equal(out.canon_depth[b:], mirror(out.canon_depth[:b]))
    assert torch.equal(out.canon_albedo[b:], mirror(out.canon_albedo[:b]))
    torch.testing.assert_close(out.recon_depth[b:], mirror(out.canon_depth[:b]), atol=1e-5, rtol=0)
    # the loss mask is the product of both renders' masks, shared by both halves
    assert torch.equal(out.mask[:b], out.mask[b:])
    assert torch.equal(out.mask[:b], out.valid[:b] * out.valid[b:])


@torch.no_grad()
def test_mirrored_render_equals_mirror_of_render_from_mirrored_view():
    """render(flip(d), v) = flip(render(d, v')) with v' = v mirrored (yaw, roll and x translation negated)."""
    view = [0.05, 0.3, 0.05, 0.2, -0.1, 0.0]
    mirrored_view = [0.05, -0.3, -0.05, -0.2, -0.1, 0.0]
    net = _net()
    net.canonical_depth = _smooth_depth
    net.netV = Constant(view)
    out = net(_images())
    net.netV = Constant(mirrored_view)
    ref = net(_images())
    b = 2
    interior = (out.valid[b:] * mirror(ref.valid[:b]))[:, 0].bool()
    diff = (out.recon_depth[b:] - mirror(ref.recon_depth[:b]))[interior]
    # equal up to the triangulation of each pixel quad, whose diagonal also mirrors
    assert diff.abs().max() < 1e-3
    assert diff.abs().mean() < 1e-4
    assert interior.float().mean() > 0.6


def test_recon_matches_shared_renderer():
    net = _net()
    net.netV = Constant([0.0, 0.2, 0.0, 0.0, 0.0, 0.0])
    with torch.no_grad():
        out = net(_images(1))
        ref = render_given_view(out.canon_image[:1].clamp(-1, 1), out.canon_depth[:1], out.view,
                                net.cfg.renderer)
    torch.testing.assert_close(out.recon_depth[:1], warp_canon_depth(out.canon_depth[:1], out.view,
                                                                      net.cfg.renderer))
    # identical where the canonical image is inside [-1, 1] (ours is not clamped, as in Unsup3d)
    inside = (out.canon_image[:1].abs() < 1).all()
    if inside:
        torch.testing.assert_close(out.recon_image[:1], ref.image * out.mask[:1])


def test_border_clamp_uses_unsup3d_factor():
    out = _net()(_images(1))
    border = 0.7 * 1.1 + 0.3 * 0.9
    for cols in (slice(0, 2), slice(-2, None)):
        torch.testing.assert_close(out.canon_depth[:, :, cols], torch.full_like(out.canon_depth[:, :, cols], border))
    assert out.canon_depth.min() >= 0.9 and out.canon_depth.max() <= 1.1


def test_no_symmetry_has_no_flip_terms():
    net = _net(symmetry=False)
    out = net(_images())
    assert not out.flipped and out.recon_image.shape[0] == 2
    loss = unsup3d_loss(out)
    assert float(loss.l1_flip) == 0 and float(loss.perc_flip) == 0
    loss.total.backward()
    assert net.netD.network[0].weight.grad is not None


def test_discriminator_features_at_quarter_resolution():
    feats = DiscriminatorFeatures(Discriminator(32, max_channels=8), 64)
    f = feats(_images())
    assert f.shape == (2, 8, 16, 16)
    assert not any(p.requires_grad for p in feats.parameters())
    net = _net()
    out = net(_images())
    loss = unsup3d_loss(out, feats)
    assert float(loss.perc) != 0 and float(loss.perc_flip) != 0
    loss.total.backward()


def test_unknown_setting_is_an_error():
    with pytest.raises(ValueError, match="nf_depht"):
        Unsup3dConfig.from_dict({"nf_depht": 3})


@torch.no_grad()
def test_hard_symmetry_gives_a_symmetric_canonical_and_one_render():
    net = _net(hard_symmetry=True)
    out = net(_images())
    assert not out.flipped and out.recon_image.shape[0] == 2
    assert torch.equal(out.canon_depth, mirror(out.canon_depth))
    assert torch.equal(out.canon_albedo, mirror(out.canon_albedo))
    assert float(unsup3d_loss(out).l1_flip) == 0
    # without symmetry the flag does nothing
    assert not torch.equal(_net(symmetry=False, hard_symmetry=True)(_images()).canon_albedo,
                           mirror(_net(symmetry=False, hard_symmetry=True)(_images()).canon_albedo))


@torch.no_grad()
def test_camera_frame_light_is_the_canonical_light_rotated():
    """Shading the view-rotated normals with light l equals shading the canonical normals with R^T l."""
    from methods.renderer.shading import light_direction

    view = [0.1, -0.4, 0.05, 0.0, 0.0, 0.0]
    cam_light = torch.tensor([[0.1, 0.6, 0.5, -0.3]])
    camera = _net(light_frame="camera")
    camera.netV, camera.netL = Constant(view), Constant(cam_light[0].tolist())
    R, _ = camera.cfg.renderer.transform(torch.tensor([view]))
    d = R[0].T @ light_direction(cam_light)[0]
    canonical = _net()
    canonical.netV = Constant(view)
    canonical.netL = Constant([0.1, 0.6, float(d[0] / d[2]), float(d[1] / d[2])])
    a, b = camera(_images()), canonical(_images())
    torch.testing.assert_close(a.canon_shading, b.canon_shading, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.recon_image, b.recon_image, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="light_frame"):
        Unsup3dConfig.from_dict({"light_frame": "world"})


@torch.no_grad()
def test_mirrored_camera_light_mirrors_the_render():
    """With the view and light mirrored by VIEW_MIRROR and LIGHT_MIRROR, a symmetric canonical shape renders as the
    mirror of its render (camera-frame light: l_x changes sign with the image)."""
    from methods.unsup3d.model import LIGHT_MIRROR, VIEW_MIRROR

    net = _net(light_frame="camera")
    s = 64
    v, u = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
    depth = (1.05 - 0.08 * (1 - (u / 0.6) ** 2 - (v / 0.8) ** 2).clamp(min=0).sqrt())[None]
    albedo = (torch.stack([u.abs(), v, u * u]) - 0.3)[None]  # symmetric
    view, light = torch.tensor([[0.1, 0.25, 0.05, 0.2, -0.1, 0.0]]), torch.tensor([[0.0, 0.5, 0.4, 0.3]])
    image = torch.zeros(1, 3, s, s)
    base = net.render(image, depth, depth, albedo, view, light).recon_image
    mirrored = net.render(image, depth, depth, albedo, view * torch.tensor(VIEW_MIRROR),
                          light * torch.tensor(LIGHT_MIRROR)).recon_image
    unmirrored_light = net.render(image, depth, depth, albedo, view * torch.tensor(VIEW_MIRROR), light).recon_image
    assert (mirrored - mirror(base)).abs().mean() < 2e-3
    assert (unmirrored_light - mirror(base)).abs().mean() > 0.02


@torch.no_grad()
def test_equivariant_views_mirror_with_the_image():
    from methods.unsup3d.model import LIGHT_MIRROR, VIEW_MIRROR

    net, images = _net(equivariant_views=True), _images()
    view, light = net.view_light(images)
    mview, mlight = net.view_light(mirror(images))
    torch.testing.assert_close(mview, view * torch.tensor(VIEW_MIRROR), atol=1e-6, rtol=0)
    torch.testing.assert_close(mlight, light * torch.tensor(LIGHT_MIRROR), atol=1e-6, rtol=0)
    symmetric = 0.5 * (images + mirror(images))
    assert net.view_light(symmetric)[0][:, 1].abs().max() < 1e-6  # a symmetric face is frontal in yaw
    assert torch.equal(net(images).view, view) and torch.equal(net(images).light, light)
    plain = _net()
    plain_view = plain.view_light(images)[0] * torch.tensor(VIEW_MIRROR)
    assert not torch.allclose(plain.view_light(mirror(images))[0], plain_view)  # not so without the option
