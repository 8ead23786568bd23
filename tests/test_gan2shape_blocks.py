"""GAN2Shape building blocks: losses, pseudo samples and the latent offset (``methods/gan2shape``)."""

import functools
import json

import pytest
import torch

from core.errors import BenchError
from methods.gan2shape.latent import latent_offset, project_latent
from methods.gan2shape.losses import photometric_l1, smoothness, step1_loss, step2_loss
from methods.gan2shape.pseudo import (
    RAND_LIGHT_DEFAULT,
    RAND_LIGHT_SYNFACE,
    default_view_prior,
    load_view_light_prior,
    pseudo_shading,
    render_pseudo_samples,
    sample_lights,
    sample_views,
)
from methods.renderer.camera import depth_to_normals, intrinsics
from methods.renderer.shading import albedo_to_texture, light_to_shading
from methods.renderer.warp import Renderer
from methods.stylegan2.losses import discriminator_feature_loss
from methods.stylegan2.model import Discriminator, Generator

torch.set_num_threads(1)


def _grid(h=6, w=7):
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return x[None], y[None]


# ------------------------------------------------------------------------------------------------------- losses
class TestPhotometricL1:
    def test_masked_pixels_do_not_count(self):
        x = torch.zeros(2, 3, 4, 4)
        y = torch.full((2, 3, 4, 4), 0.5)
        y[:, :, :, :2] = 100.0  # masked out below
        mask = torch.ones(2, 4, 4)
        mask[:, :, :2] = 0
        assert photometric_l1(x, y, mask).item() == pytest.approx(0.5)

    def test_known_value_and_mask_layouts(self):
        x = torch.zeros(1, 3, 1, 2)
        y = torch.tensor([[[[1.0, 5.0]], [[2.0, 5.0]], [[3.0, 5.0]]]])
        m3 = torch.tensor([[[1.0, 0.0]]])
        # (1 + 2 + 3) / 3 masked pixels (one pixel, broadcast to 3 channels)
        assert photometric_l1(x, y, m3).item() == pytest.approx(2.0)
        assert photometric_l1(x, y, m3.unsqueeze(1)).item() == pytest.approx(2.0)

    def test_soft_mask_weights(self):
        x, y = torch.zeros(1, 3, 1, 2), torch.tensor([1.0, 4.0]).expand(1, 3, 1, 2)
        m = torch.tensor([[[0.75, 0.25]]])
        assert photometric_l1(x, y, m).item() == pytest.approx((0.75 * 1 + 0.25 * 4) / 1.0)

    def test_empty_mask_is_zero_not_nan(self):
        x = torch.randn(1, 3, 4, 4)
        assert photometric_l1(x, x + 1, torch.zeros(1, 4, 4)).item() == 0.0

    def test_shape_errors(self):
        with pytest.raises(ValueError):
            photometric_l1(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5), torch.ones(1, 4, 4))
        with pytest.raises(ValueError):
            photometric_l1(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4))


class TestSmoothness:
    def test_planes_score_zero(self):
        x, y = _grid()
        for plane in (torch.ones_like(x) * 3, 2 * x - 0.5 * y + 1, -x, y):
            assert smoothness(plane).item() == pytest.approx(0.0, abs=1e-12)

    def test_known_values_on_quadratics(self):
        x, y = _grid()
        assert smoothness(x**2).item() == pytest.approx(2.0)  # d_xx = 2
        assert smoothness(x**2 + y**2).item() == pytest.approx(4.0)  # d_xx = d_yy = 2
        assert smoothness(x * y).item() == pytest.approx(2.0)  # d_xy = d_yx = 1
        assert smoothness(0.5 * y**2).item() == pytest.approx(1.0)

    def test_channel_dim_accepted(self):
        x, _ = _grid()
        assert smoothness((x**2).unsqueeze(1)).item() == pytest.approx(2.0)

    def test_batch_is_averaged(self):
        x, _ = _grid()
        assert smoothness(torch.cat([x**2, torch.zeros_like(x)])).item() == pytest.approx(1.0)


def _l1_perceptual(a, b):
    return (a - b).abs().mean()


class TestStep1Loss:
    def setup_method(self):
        g = torch.Generator().manual_seed(0)
        self.recon = torch.rand(2, 3, 6, 6, generator=g) * 2 - 1
        self.image = torch.rand(2, 3, 6, 6, generator=g) * 2 - 1
        self.mask = (torch.rand(2, 1, 6, 6, generator=g) > 0.3).float()
        self.depth = 1 + 0.1 * torch.rand(2, 6, 6, generator=g)
        self.shading = torch.rand(2, 6, 6, generator=g)

    def test_formula(self):
        out = step1_loss(self.recon, self.image, self.mask, self.depth, self.shading, _l1_perceptual)
        photo = photometric_l1(self.recon, self.image, self.mask)
        perc = _l1_perceptual(self.recon * self.mask, self.image * self.mask)
        smooth = smoothness(self.depth) + smoothness(self.shading)
        assert torch.allclose(out.total, photo + 0.5 * perc + 0.01 * smooth)
        assert torch.allclose(out.smooth, smooth) and torch.allclose(out.perceptual, perc)

    def test_no_perceptual_omits_term(self):
        out = step1_loss(self.recon, self.image, self.mask, self.depth, self.shading, lam_smooth=0.0)
        assert out.perceptual.item() == 0.0
        assert torch.allclose(out.total, photometric_l1(self.recon, self.image, self.mask))

    def test_flip_variant(self):
        shading_flip = self.shading.flip(-1) * 0.5
        mask_flip = self.mask.flip(-1)
        out = step1_loss(self.recon, self.image, self.mask, self.depth, self.shading, _l1_perceptual,
                         recon_flip=self.recon.flip(-1), mask_flip=mask_flip, shading_flip=shading_flip)
        m = self.mask * mask_flip
        photo = photometric_l1(self.recon, self.image, m) + photometric_l1(self.recon.flip(-1), self.image, m)
        perc = _l1_perceptual(self.recon * m, self.image * m) + _l1_perceptual(self.recon.flip(-1) * m, self.image * m)
        smooth = smoothness(torch.cat([self.depth, self.depth.flip(-1)])) + smoothness(
            torch.cat([self.shading, shading_flip]))
        assert torch.allclose(out.total, photo + 0.5 * perc + 0.01 * smooth)
        # stacking averages the two maps' smoothness (each computed once)
        halves = (smoothness(self.shading) + smoothness(shading_flip)) / 2
        assert torch.allclose(smooth, smoothness(self.depth) + halves)

    def test_flip_needs_shading(self):
        with pytest.raises(ValueError, match="shading_flip"):
            step1_loss(self.recon, self.image, self.mask, self.depth, self.shading, recon_flip=self.recon)

    def test_gradient_flows_to_inputs_not_mask(self):
        recon = self.recon.clone().requires_grad_()
        depth = self.depth.clone().requires_grad_()
        mask = self.mask.clone().requires_grad_()
        step1_loss(recon, self.image, mask, depth, self.shading, _l1_perceptual).total.backward()
        assert recon.grad.abs().sum() > 0 and depth.grad.abs().sum() > 0 and mask.grad is None


class TestStep2Loss:
    def test_formula_with_discriminator_features(self):
        torch.manual_seed(0)
        disc = Discriminator(16, max_channels=8).eval()
        feat = functools.partial(discriminator_feature_loss, disc, ftr_num=2)
        proj, pseudo = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
        mask = torch.ones(2, 1, 16, 16)
        mask[:, :, :4] = 0
        dw = torch.randn(2, 32)
        out = step2_loss(proj, pseudo, mask, dw, feat)
        expected = photometric_l1(proj, pseudo, mask) + feat(proj, pseudo, mask) + 0.01 * dw.pow(2).mean()
        assert torch.allclose(out.total, expected)
        assert out.disc_feature.item() > 0

    def test_zero_at_target(self):
        x = torch.rand(1, 3, 16, 16)
        disc = Discriminator(16, max_channels=8).eval()
        feat = functools.partial(discriminator_feature_loss, disc, ftr_num=2)
        assert step2_loss(x, x, torch.ones(1, 16, 16), torch.zeros(1, 32), feat).total.item() == 0.0

    def test_regulariser_weight(self):
        x = torch.zeros(1, 3, 4, 4)
        out = step2_loss(x, x, torch.ones(1, 4, 4), torch.full((1, 8), 2.0), None, lam_regular=0.5)
        assert out.regular.item() == pytest.approx(4.0) and out.total.item() == pytest.approx(2.0)


# ----------------------------------------------------------------------------------------------- pseudo samples
class TestPseudoShading:
    def test_known_values(self):
        normals = torch.tensor([[[[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]]]])  # (1, 1, 2, 3)
        light = torch.tensor([[0.6, 0.0, 0.8]])
        s = pseudo_shading(normals, torch.tensor([0.3]), torch.tensor([0.5]), light, torch.tensor([0.1]), -0.6)
        # ambient 0.3 - 0.06 = 0.24; diffuse (0.5 + 0.1) * 0.8 = 0.48; second normal faces away -> ambient only
        assert s.shape == (1, 1, 1, 2)
        assert s[0, 0, 0].tolist() == pytest.approx([0.72, 0.24])

    def test_matches_light_vectors_through_renderer_shading(self):
        g = torch.Generator().manual_seed(1)
        depth = 1 + 0.05 * torch.rand(1, 8, 8, generator=g)
        normals = depth_to_normals(depth, intrinsics(8))
        lights = sample_lights(5, RAND_LIGHT_SYNFACE, k_a=torch.tensor([0.4]), k_d=torch.tensor([0.7]), generator=g)
        ours = lights.shading(normals)
        ref = light_to_shading(normals.expand(5, -1, -1, -1), lights.light_vectors())
        assert ours.shape == (5, 1, 8, 8) and torch.allclose(ours, ref, atol=1e-6)

    def test_batch_mismatch(self):
        with pytest.raises(ValueError):
            pseudo_shading(torch.zeros(2, 4, 4, 3), 0.5, 0.5, torch.zeros(3, 3), torch.zeros(3), 0.0)


class TestSampleLights:
    def test_ranges_and_repeatability(self):
        a = sample_lights(500, RAND_LIGHT_DEFAULT, k_a=0.5, k_d=0.25, generator=torch.Generator().manual_seed(3))
        b = sample_lights(500, RAND_LIGHT_DEFAULT, k_a=0.5, k_d=0.25, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a.direction, b.direction) and torch.equal(a.delta, b.delta)
        x, y = (a.direction[:, :2] / a.direction[:, 2:]).unbind(1)
        assert -1 <= x.min() and x.max() <= 1 and -0.2 <= y.min() and y.max() <= 0.8
        assert -0.1 <= a.delta.min() and a.delta.max() <= 0.6 and a.alpha == -0.6
        assert torch.allclose(a.direction.norm(dim=1), torch.ones(500))
        assert a.k_ambient.shape == (500,) and float(a.k_diffuse[7]) == 0.25
        assert x.std() > 0.3  # actually spread over the range

    def test_published_constants(self):
        assert RAND_LIGHT_DEFAULT == (-1.0, 1.0, -0.2, 0.8, -0.1, 0.6, -0.6)
        assert RAND_LIGHT_SYNFACE == (-0.9, 0.9, -0.3, 0.8, -0.1, 0.7, -0.4)


class TestSampleViews:
    def _prior(self):
        g = torch.Generator().manual_seed(0)
        a = torch.randn(6, 6, generator=g, dtype=torch.float64) * 0.2
        cov = a @ a.T + 0.01 * torch.eye(6, dtype=torch.float64)
        mean = torch.tensor([0.1, 0.2, -0.1, 0.0, 0.05, 0.0], dtype=torch.float64)
        return mean, cov

    def test_yaw_scaling_and_covariance(self):
        mean, cov = self._prior()
        v = sample_views(40000, mean, cov, 1.2, torch.Generator().manual_seed(1))
        scale = torch.tensor([1.0, 1.2, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
        assert v.shape == (40000, 6) and v.dtype == torch.float64
        assert torch.allclose(v.mean(0), mean * scale, atol=0.01)
        expected_cov = cov * scale[:, None] * scale[None, :]
        assert torch.allclose(torch.cov(v.T), expected_cov, atol=0.01, rtol=0.05)

    def test_seeded_repeatability(self):
        mean, cov = self._prior()
        a = sample_views(4, mean, cov, 1.2, torch.Generator().manual_seed(5))
        b = sample_views(4, mean, cov, 1.2, torch.Generator().manual_seed(5))
        c = sample_views(4, mean, cov, 1.2, torch.Generator().manual_seed(6))
        assert torch.equal(a, b) and not torch.equal(a, c)

    def test_scale_one_keeps_prior(self):
        mean, cov = self._prior()
        a = sample_views(3, mean, cov, 1.0, torch.Generator().manual_seed(5))
        b = sample_views(3, mean, cov, 2.0, torch.Generator().manual_seed(5))
        assert torch.allclose(b[:, 1], 2 * a[:, 1]) and torch.equal(a[:, [0, 2, 3, 4, 5]], b[:, [0, 2, 3, 4, 5]])

    def test_invalid_prior(self):
        with pytest.raises(ValueError, match="positive definite"):
            sample_views(2, torch.zeros(6), -torch.eye(6))
        with pytest.raises(ValueError, match="shape"):
            sample_views(2, torch.zeros(4), torch.eye(4))

    def test_default_prior(self):
        prior = default_view_prior()
        assert prior.mean.shape == (6,) and torch.equal(prior.mean, torch.zeros(6))
        assert torch.equal(prior.cov, torch.diag(prior.cov.diagonal()))


class TestLoadPrior:
    def test_round_trip_torch_and_json(self, tmp_path):
        mean, cov = torch.arange(6.0) / 10, torch.eye(6) * 0.04
        torch.save({"mean": mean, "cov": cov}, tmp_path / "view_mvn.pth")
        (tmp_path / "view.json").write_text(json.dumps({"mean": mean.tolist(), "cov": cov.tolist()}))
        for name in ("view_mvn.pth", "view.json"):
            prior = load_view_light_prior(tmp_path / name, dim=6)
            assert torch.allclose(prior.mean, mean) and torch.allclose(prior.cov, cov)

    @pytest.mark.parametrize("mean, cov, message", [
        (torch.zeros(6), torch.diag(torch.tensor([1.0, 1, 1, 1, 1, -1])), "positive definite"),
        (torch.zeros(6), torch.zeros(6, 6), "positive definite"),
        (torch.zeros(6), torch.eye(6) + torch.triu(torch.ones(6, 6), 1) * 0.1, "symmetric"),
        (torch.zeros(6), torch.eye(5), "shape"),
        (torch.zeros(4), torch.eye(4), "shape"),  # dim=6 expected
        (torch.zeros(2, 3), torch.eye(6), "shape"),
    ])
    def test_invalid_contents(self, tmp_path, mean, cov, message):
        path = tmp_path / "bad.pth"
        torch.save({"mean": mean, "cov": cov}, path)
        with pytest.raises(BenchError, match=message) as info:
            load_view_light_prior(path, dim=6)
        assert str(path) in str(info.value)

    def test_light_dim(self, tmp_path):
        torch.save({"mean": torch.zeros(4), "cov": torch.eye(4)}, tmp_path / "light.pth")
        assert load_view_light_prior(tmp_path / "light.pth", dim=4).mean.shape == (4,)

    def test_missing_unreadable_and_keyless(self, tmp_path):
        with pytest.raises(BenchError, match="does not exist"):
            load_view_light_prior(tmp_path / "nope.pth")
        (tmp_path / "junk.pth").write_bytes(b"not a torch file")
        with pytest.raises(BenchError, match="cannot read"):
            load_view_light_prior(tmp_path / "junk.pth")
        (tmp_path / "keys.json").write_text(json.dumps({"mu": [0.0]}))
        with pytest.raises(BenchError, match="'mean' and 'cov'"):
            load_view_light_prior(tmp_path / "keys.json")


class TestRenderPseudoSamples:
    def _scene(self, size=12):
        g = torch.Generator().manual_seed(0)
        v, u = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
        depth = (1.05 - 0.05 * torch.exp(-2 * (u**2 + v**2)))[None]
        albedo = torch.rand(1, 3, size, size, generator=g) * 1.6 - 0.8
        return depth, albedo

    def test_identity_view_reproduces_canonical_texture(self):
        depth, albedo = self._scene()
        rand_light = (-1.0, 1.0, -0.2, 0.8, 0.0, 0.0, -0.6)  # no intensity variation
        lights = sample_lights(2, rand_light, k_a=0.6, k_d=0.4, generator=torch.Generator().manual_seed(0))
        out = render_pseudo_samples(albedo, depth, torch.zeros(2, 6), lights)
        normals = depth_to_normals(depth, intrinsics(12))
        shading = light_to_shading(normals.expand(2, -1, -1, -1), lights.light_vectors())
        expected = albedo_to_texture(albedo.expand(2, -1, -1, -1), shading).clamp(-1, 1)
        assert out.images.shape == (2, 3, 12, 12) and out.masks.shape == (2, 1, 12, 12)
        assert torch.allclose(out.images, expected, atol=1e-4)
        assert torch.equal(out.masks, torch.ones_like(out.masks))
        assert out.images.min() >= -1 and out.images.max() <= 1
        assert out.lights is lights and torch.equal(out.views, torch.zeros(2, 6))

    def test_given_normals_and_canonical_mask(self):
        depth, albedo = self._scene()
        lights = sample_lights(1, k_a=0.6, k_d=0.4, generator=torch.Generator().manual_seed(0))
        canon_mask = torch.ones(1, 1, 12, 12)
        canon_mask[..., :3] = 0
        normals = depth_to_normals(depth, intrinsics(12))
        a = render_pseudo_samples(albedo, depth, torch.zeros(1, 6), lights, Renderer(), canon_mask=canon_mask)
        b = render_pseudo_samples(albedo, depth, torch.zeros(1, 6), lights, normals=normals, canon_mask=canon_mask)
        assert torch.allclose(a.images, b.images) and torch.equal(a.masks, canon_mask)

    def test_large_yaw_masks_out_of_frame(self):
        depth, albedo = self._scene()
        lights = sample_lights(1, k_a=0.6, k_d=0.4, generator=torch.Generator().manual_seed(0))
        out = render_pseudo_samples(albedo, depth, torch.tensor([[0.0, 0.5, 0, 0, 0, 0]]), lights)
        assert 0 < out.masks.mean() < 1

    def test_light_view_count_mismatch(self):
        depth, albedo = self._scene()
        lights = sample_lights(2, k_a=0.6, k_d=0.4)
        with pytest.raises(ValueError, match="one light per view"):
            render_pseudo_samples(albedo, depth, torch.zeros(3, 6), lights)


# ------------------------------------------------------------------------------------------------ latent offset
@pytest.fixture(scope="module")
def tiny_g():
    torch.manual_seed(0)
    g = Generator(16, style_dim=32, n_mlp=8, channels={4: 16, 8: 16, 16: 8}).eval()
    with torch.no_grad():  # non-zero biases, so c_w and c_h are not trivially 0
        for layer in g.style[1:]:
            layer.bias.normal_(0, 50.0)
    return g


class TestLatentOffset:
    def test_anchor_is_nonzero(self, tiny_g):
        assert tiny_g.style_forward(torch.zeros(1, 32)).abs().max() > 1e-3

    @pytest.mark.parametrize("f1_d", [0, 2, 8])
    def test_zero_encoding_gives_zero_offset(self, tiny_g, f1_d):
        assert latent_offset(tiny_g, torch.zeros(3, 32), f1_d).abs().max().item() == pytest.approx(0, abs=1e-6)

    def test_f1d_8_is_full_mapping(self, tiny_g):
        e = torch.randn(4, 32)
        c_w = tiny_g.style_forward(torch.zeros(1, 32), 0, 9)
        expected = tiny_g.style_forward(e, 0, 9) - c_w
        assert torch.allclose(latent_offset(tiny_g, e, 8), expected, atol=1e-5)

    def test_f1d_2_uses_last_three_linear_layers(self, tiny_g):
        e = torch.randn(2, 32)
        zero = torch.zeros(1, 32)
        c_h = tiny_g.style[:6](zero)
        expected = tiny_g.style[6:9](e + c_h) - tiny_g.style(zero)
        assert torch.allclose(latent_offset(tiny_g, e, 2), expected, atol=1e-5)
        # off by one: only the last 2 linear layers would give something else
        wrong = tiny_g.style[7:9](e + tiny_g.style[:7](zero)) - tiny_g.style(zero)
        assert not torch.allclose(latent_offset(tiny_g, e, 2), wrong, atol=1e-3)

    def test_invalid_f1d(self, tiny_g):
        for bad in (-1, 9):
            with pytest.raises(ValueError, match="F1_d"):
                latent_offset(tiny_g, torch.zeros(1, 32), bad)

    def test_project_latent_relative(self, tiny_g):
        w, e, e_ref = torch.randn(1, 32), torch.randn(3, 32), torch.randn(3, 32)
        w2, dw = project_latent(tiny_g, w, e, e_ref, F1_d=2)
        assert torch.allclose(dw, latent_offset(tiny_g, e - e_ref, 2)) and torch.allclose(w2, w + dw)
        same = project_latent(tiny_g, w, e, e, F1_d=2)
        assert torch.allclose(same.w, w.expand(3, -1), atol=1e-5)

    def test_gradient_reaches_encoding_and_image(self, tiny_g):
        e = torch.randn(1, 32, requires_grad=True)
        w, dw = project_latent(tiny_g, torch.zeros(1, 32), e, F1_d=2)
        img, _ = tiny_g([w], input_is_w=True)
        (img.mean() + dw.pow(2).mean()).backward()
        assert img.shape == (1, 3, 16, 16) and e.grad.abs().sum() > 0
