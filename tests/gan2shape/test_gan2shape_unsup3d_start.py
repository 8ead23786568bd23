"""GAN2Shape started from Unsup3d's networks (the CPU recipe): the converted networks and geometry render exactly as
Unsup3d does; the camera-frame light agrees between the Step-1 render and the pseudo samples; the card keeps the
widths and geometry the weights were trained with."""

import json

import pytest
import torch

from core.errors import BenchError
from methods.gan2shape.method import load_networks, read_card, save_networks
from methods.gan2shape.model import (Geometry, Networks, canonical, geometry_from_dict, geometry_to_dict, lit_normals,
                                     photo_forward, render)
from methods.gan2shape.pretrain import init_from_unsup3d
from methods.gan2shape.pseudo import PseudoLights, render_pseudo_samples
from methods.gan2shape.steps import Hyper, step1, step3
from methods.unsup3d.model import Unsup3dConfig, Unsup3dNet
from methods.unsup3d.training import save_weights

torch.set_num_threads(1)
SMALL = {"nf_depth_albedo": 16, "nf_view_light": 8, "zdim": 32, "gn_base": 4, "conf_nf": 16, "use_conf": False,
         "light_frame": "camera", "hard_symmetry": True, "view_spread": True, "border_factor": 1.0}


@pytest.fixture(scope="module")
def unsup3d(tmp_path_factory):
    torch.manual_seed(0)
    net = Unsup3dNet(Unsup3dConfig(**SMALL))
    net.view_spread.copy_(torch.tensor([0.05, 0.2, 15.0]))  # running yaw statistics, spread 15 degrees
    path = save_weights(tmp_path_factory.mktemp("u3") / "u3.safetensors", net, {"command": "test"})
    return net.eval(), path


def test_unsup3d_networks_render_in_gan2shape_exactly_as_in_unsup3d(unsup3d):
    net, path = unsup3d
    nets, geom = init_from_unsup3d(path, latent_dim=16)
    assert (geom.light_frame, geom.hard_symmetry, geom.border_factor) == ("camera", True, 1.0)
    image = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        ref, ours = net(image), photo_forward(nets.eval(), image, geom, flip=True)
    assert ours.render_flip is None  # hard symmetry: the mirrored render is the plain one, skipped
    torch.testing.assert_close(ours.view, ref.view)
    torch.testing.assert_close(ours.depth, ref.canon_depth)
    torch.testing.assert_close(ours.render.view_depth, ref.recon_depth)
    torch.testing.assert_close(ours.render.image * ref.mask, ref.recon_image.clamp(-1, 1))


def test_hard_symmetry_makes_the_canonical_model_its_own_mirror():
    torch.manual_seed(0)
    nets = Networks(64, latent_dim=16, nf_depth_albedo=16, nf_view_light=8, zdim=32, gn_base=4)
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        depth, albedo = canonical(nets, image, Geometry(hard_symmetry=True))
        free, _ = canonical(nets, image, Geometry())
    torch.testing.assert_close(depth, depth.flip(-1))
    torch.testing.assert_close(albedo, albedo.flip(-1))
    assert not torch.allclose(free, free.flip(-1))


@pytest.mark.parametrize("frame", ["canonical", "camera"])
def test_pseudo_samples_shade_in_the_same_light_frame_as_the_render(frame):
    """A pseudo sample rendered under a turned view with a light of zero shift equals the Step-1 render of the same
    canonical model, view and light vector: the two shading paths agree in both light frames."""
    geom = Geometry(light_frame=frame)
    g = torch.Generator().manual_seed(3)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    depth = (1.05 - 0.08 * (1 - xx**2 - yy**2).clamp_min(0).sqrt())[None]
    albedo = torch.rand(1, 3, 64, 64, generator=g) * 1.2 - 0.6
    view = torch.tensor([[0.1, 0.3, 0.0, 0.0, 0.0, 0.0]])
    lights = PseudoLights(torch.tensor([0.4]), torch.tensor([0.7]), torch.nn.functional.normalize(
        torch.tensor([[0.5, -0.3, 1.0]]), dim=1), torch.zeros(1), -0.4)
    ref = render(depth, albedo, view, lights.light_vectors(), geom)
    normals = lit_normals(ref.normal, view, geom)
    pseudo = render_pseudo_samples(albedo, depth, view, lights, geom.renderer, normals=normals)
    torch.testing.assert_close(pseudo.images, ref.image, atol=1e-5, rtol=0)
    other = Geometry(light_frame="camera" if frame == "canonical" else "canonical")
    assert (render(depth, albedo, view, lights.light_vectors(), other).image - ref.image).abs().mean() > 1e-3


def test_card_keeps_widths_and_geometry_and_loading_checks_them(tmp_path, unsup3d):
    _, path = unsup3d
    nets, geom = init_from_unsup3d(path, latent_dim=16)
    out = save_networks(tmp_path / "g2s.safetensors", nets, {"command": "test"}, geom)
    meta = read_card(out)
    assert meta["arch"]["nf_depth_albedo"] == 16 and meta["arch"]["nf_view_light"] == 8
    back = geometry_from_dict(meta["geometry"])
    assert geometry_to_dict(back) == geometry_to_dict(geom)
    same = Networks(64, 16, **meta["arch"])
    load_networks(same, out)
    for key, value in nets.state_dict().items():
        assert torch.equal(same.state_dict()[key], value)
    with pytest.raises(BenchError, match="does not fit GAN2Shape networks.*has shape"):
        load_networks(Networks(64, 16), out)  # the published widths: every shape differs
    (tmp_path / "bad.json").write_text(json.dumps({"format": "something else"}))
    (tmp_path / "bad.safetensors").write_bytes(out.read_bytes())
    with pytest.raises(BenchError, match="is not a GAN2Shape model card"):
        read_card(tmp_path / "bad.safetensors")


def test_step3_skips_the_mirrored_terms_under_hard_symmetry(unsup3d):
    _, path = unsup3d
    nets, geom = init_from_unsup3d(path, latent_dim=16)
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    projected = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4)) * 2 - 1
    loss, fwd = step3(nets, image, projected, torch.ones(2, 1, 64, 64), geom, Hyper(), flip=True)
    assert fwd.render_flip is None and torch.isfinite(loss.total)
    plain, _ = step1(nets, image, geom, Hyper(), flip=False)
    torch.testing.assert_close(loss.image.total, plain.total)


@pytest.mark.parametrize("frame", ["canonical", "camera"])
def test_image_albedo_re_renders_the_image(unsup3d, frame):
    """Pseudo samples textured with the image (pseudo_albedo=image): the unshaded pull-back of the image renders the
    image again under the same depth, view and light, where A's albedo does not."""
    from dataclasses import replace

    from methods.gan2shape.model import image_albedo

    _, path = unsup3d
    nets, geom = init_from_unsup3d(path, latent_dim=16)
    geom = replace(geom, light_frame=frame)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    image = torch.stack([0.3 * torch.sin(3 * xx) * torch.cos(2 * yy), 0.2 * xx, -0.3 * yy])[None] - 0.3  # shading <= 1
    with torch.no_grad():
        fwd = photo_forward(nets.eval(), image, geom)
        again = render(fwd.depth, image_albedo(fwd, image, geom), fwd.view, fwd.light, geom)
    m = again.valid[:, :, 4:-4, 4:-4]
    err = lambda x: float(((x[:, :, 4:-4, 4:-4] - image[:, :, 4:-4, 4:-4]).abs() * m).sum() / m.sum() / 3)  # noqa: E731
    assert err(again.image) < 0.02 and err(fwd.render.image) > 0.1, (err(again.image), err(fwd.render.image))


def test_shipped_cpu_export_is_unsup3ds_networks_in_half_precision():
    """weights/gan2shape_synface_proc_pretrain_cpu.safetensors (what preset=cpu starts from) holds the shipped
    Unsup3d networks as its card and config say: same widths and geometry, D/A/V/L equal to float16 rounding."""
    from core.paths import asset_path

    export = asset_path("weights/gan2shape_synface_proc_pretrain_cpu.safetensors")
    card = read_card(export)
    assert card["card"]["init"] == "weights/unsup3d_synface_proc.safetensors"
    assert card["step2"] == {"F1_d": 8, "relative_enc": True, "pseudo_albedo": "network"}
    ref, geom = init_from_unsup3d(asset_path(card["card"]["init"]), latent_dim=card["latent_dim"])
    assert card["geometry"] == geometry_to_dict(geom) and card["arch"] == ref.arch
    nets = Networks(card["image_size"], card["latent_dim"], **card["arch"])
    load_networks(nets, export)
    shipped, expected = nets.state_dict(), ref.state_dict()
    for name, tensor in expected.items():
        if name.split(".")[0] != "netEnc" and tensor.is_floating_point():
            assert torch.equal(shipped[name], tensor.half().float()), name
