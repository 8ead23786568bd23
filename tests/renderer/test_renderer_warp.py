"""Warps between canonical frame and view: round trips, gradchecks, masks, sweeps and renderer options."""

import pytest
import torch
import torch.nn.functional as F

from methods.renderer.camera import depth_to_points, intrinsics, transform_to_view, view_to_transform
from methods.renderer.warp import (
    Renderer,
    canon_to_view_grid,
    render_given_view,
    render_mesh,
    render_view,
    sample_texture,
    sweep_views,
    view_to_canon_grid,
    view_valid_mask,
    warp_canon_depth,
)

DOUBLE = torch.float64


def smooth_depth(batch: int, size: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    raw = F.interpolate(torch.randn(batch, 1, 4, 4, generator=gen), size=(size, size), mode="bicubic",
                        align_corners=True)[:, 0]
    return (1 + 0.08 * torch.tanh(raw - raw.mean(dim=(1, 2), keepdim=True))).to(dtype)


def random_texture(batch: int, size: int, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, size, size, generator=gen) * 1.8 - 0.9).to(dtype)


class TestWarpCanonDepth:
    @pytest.mark.parametrize("batch", [1, 3])
    def test_shapes_range_and_mask(self, batch):
        depth = smooth_depth(batch, 16)
        view = torch.randn(batch, 6) * 0.3
        out = warp_canon_depth(depth, view)
        assert out.shape == depth.shape and out.dtype == depth.dtype
        low, high = Renderer().depth_bounds
        assert (out >= low).all() and (out <= high).all()
        assert view_valid_mask(out).shape == (batch, 1, 16, 16)

    def test_identity_view_is_identity(self):
        depth = smooth_depth(2, 16)
        torch.testing.assert_close(warp_canon_depth(depth, torch.zeros(2, 6)), depth)

    @pytest.mark.parametrize("view", [[0.0, 0.25, 0.0, 0.0, 0.0, 0.0], [-0.2, 0.15, 0.1, 0.2, -0.1, 0.0],
                                      [0.1, -0.2, -0.3, -0.1, 0.3, 0.5]])
    def test_view_then_inverse_view_returns_depth(self, view):
        """Warp a sphere cap into a view and back with the inverse transform (which needs the z translation)."""
        size, cfg = 48, Renderer(z_range=0.1)
        ray = depth_to_points(torch.ones(1, size, size, dtype=DOUBLE), intrinsics(size, dtype=DOUBLE))
        centre = torch.tensor([0.0, 0.0, 1.3], dtype=DOUBLE)
        b = ray @ centre
        depth = (b - (b * b - (ray * ray).sum(-1) * (centre @ centre - 0.35**2)).sqrt()) / (ray * ray).sum(-1)
        view = torch.tensor([view], dtype=DOUBLE)
        R, t = view_to_transform(view, cfg.z_range)
        inverse = transform_to_view(R.transpose(1, 2), -(R.transpose(1, 2) @ t.unsqueeze(-1))[..., 0], cfg.z_range)
        back = warp_canon_depth(warp_canon_depth(depth, view, cfg), inverse, cfg)
        in_view = ((canon_to_view_grid(depth, view, cfg) + 1) * (size - 1) / 2 - (size - 1) / 2).abs() < size / 2 - 3
        seen = in_view.all(-1)
        seen[:, :2] = seen[:, -2:] = seen[:, :, :2] = seen[:, :, -2:] = False  # resampling loses up to a pixel
        assert seen.float().mean() > 0.4
        assert (back - depth)[seen].abs().max() < 1e-4  # two piecewise-linear resamplings of a smooth surface

    def test_supersampling_and_half_pixel_offset(self):
        depth = torch.ones(1, 12, 12)
        plain = view_valid_mask(warp_canon_depth(depth, torch.zeros(1, 6)))
        assert plain.all()
        centred = view_valid_mask(warp_canon_depth(depth, torch.zeros(1, 6), Renderer(supersample=2)))
        assert centred[0, 0, 1:-1, 1:-1].all() and not centred[0, 0, 0].any() and not centred[0, 0, -1].any()
        legacy = Renderer(supersample=2, pixel_offset=0.5)  # the original's sampling positions j + 0.25, j + 0.75
        shifted = view_valid_mask(warp_canon_depth(depth, torch.zeros(1, 6), legacy))
        assert shifted[0, 0, :-1, :-1].all() and not shifted[0, 0, -1].any() and not shifted[0, 0, :, -1].any()
        torch.testing.assert_close(warp_canon_depth(depth, torch.zeros(1, 6), legacy)[0, :-1, :-1],
                                   torch.ones(11, 11))

    def test_gradcheck_depth_and_view(self):
        cfg = Renderer(z_range=0.1)
        depth = smooth_depth(2, 6, seed=4, dtype=DOUBLE)
        depth = (depth + 0.01 * torch.rand(2, 6, 6, dtype=DOUBLE)).requires_grad_()
        view = torch.tensor([[0.1, 0.15, 0.05, 0.1, -0.1, 0.2], [-0.12, -0.2, 0.03, 0.0, 0.2, -0.1]], dtype=DOUBLE)
        out = warp_canon_depth(depth, view, cfg)
        assert view_valid_mask(out, cfg).mean() > 0.5
        assert torch.autograd.gradcheck(lambda d, v: warp_canon_depth(d, v, cfg), (depth, view.requires_grad_()))


class TestInverseWarp:
    def test_identity_reproduces_texture(self):
        depth, texture = smooth_depth(2, 16), random_texture(2, 16)
        out = render_given_view(texture, depth, torch.zeros(2, 6))
        torch.testing.assert_close(out.image, texture, atol=1e-5, rtol=0)
        assert out.valid.all() and out.mask is None

    def test_plane_translation_shifts_image(self):
        """A fronto-parallel plane at the rotation depth moved by t_x shifts the image by f * t_x pixels."""
        size, cfg = 32, Renderer()
        K = cfg.intrinsics(size, torch.zeros(1))
        shift = 3.0
        view = torch.tensor([[0.0, 0.0, 0.0, shift / float(K[0, 0]) / cfg.xy_range, 0.0, 0.0]])
        texture = random_texture(1, size)
        out = render_given_view(texture, torch.ones(1, size, size), view, cfg)
        torch.testing.assert_close(out.image[..., 3:], texture[..., :-3], atol=1e-4, rtol=0)
        assert not out.valid[..., :3].any() and out.valid[..., 3:].all()

    def test_gradcheck_reconstruction(self):
        size = 6
        texture = random_texture(1, size, dtype=DOUBLE).requires_grad_()
        depth = smooth_depth(1, size, seed=5, dtype=DOUBLE).requires_grad_()
        view = torch.tensor([[0.08, -0.12, 0.05, 0.1, 0.05, 0.0]], dtype=DOUBLE, requires_grad=True)
        fn = lambda tex, d, v: render_given_view(tex, d, v).image  # noqa: E731
        assert torch.autograd.gradcheck(fn, (texture, depth, view))

    def test_mask_is_warped_with_nearest(self):
        depth, texture = smooth_depth(1, 16), random_texture(1, 16)
        mask = (torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(2)) > 0.5).float()
        out = render_given_view(texture, depth, torch.tensor([[0.05, 0.2, 0.0, 0.0, 0.0, 0.0]]), mask=mask)
        assert set(out.mask.unique().tolist()) <= {0.0, 1.0}

    def test_forward_grid_brings_view_mask_to_canonical(self):
        size = 32
        depth = smooth_depth(1, size, seed=6)
        view = torch.tensor([[0.1, 0.3, 0.0, 0.1, 0.0, 0.0]])
        rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        canon_mask = (((rows - 15.5) ** 2 + (cols - 15.5) ** 2) < 64).float().view(1, 1, size, size)
        view_mask = render_given_view(random_texture(1, size), depth, view, mask=canon_mask).mask
        back = sample_texture(view_mask, canon_to_view_grid(depth, view), mode="nearest")
        assert (back == canon_mask).float().mean() > 0.97
        identity = canon_to_view_grid(depth, torch.zeros(1, 6))
        torch.testing.assert_close(sample_texture(canon_mask, identity, mode="nearest"), canon_mask)

    def test_inverse_grid_of_plane_is_consistent_with_forward_grid(self):
        """For a visible plane, following the inverse grid then the forward grid returns to the same view pixel."""
        size = 24
        depth = torch.ones(1, size, size, dtype=DOUBLE) * 1.02
        view = torch.tensor([[0.1, -0.2, 0.1, 0.0, 0.0, 0.0]], dtype=DOUBLE)
        inverse = view_to_canon_grid(warp_canon_depth(depth, view), view)
        forward = canon_to_view_grid(depth, view).permute(0, 3, 1, 2)
        round_trip = F.grid_sample(forward, inverse, align_corners=True).permute(0, 2, 3, 1)
        pixels = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="xy"), -1)
        expected = 2 * pixels.to(DOUBLE) / (size - 1) - 1
        interior = (inverse.abs() < 0.9).all(-1) & (warp_canon_depth(depth, view) < Renderer().depth_bounds[1])
        assert interior.float().mean() > 0.5
        torch.testing.assert_close(round_trip[interior], expected.expand(1, -1, -1, -1)[interior], atol=1e-4, rtol=0)


class TestVisualisation:
    def test_sweep_views(self):
        views = sweep_views()
        assert views.shape == (14, 6)
        torch.testing.assert_close(views[:9, 1] * 60, torch.linspace(-70, 70, 9))
        torch.testing.assert_close(views[9:, 0] * 60, torch.linspace(-20, 20, 5))
        assert views[:9, [0, 2, 3, 4, 5]].abs().sum() == 0 and views[9:, 1:].abs().sum() == 0
        assert sweep_views(yaw_max_deg=45)[0, 1] * 60 == pytest.approx(-45)

    @pytest.mark.parametrize("yaw_max_deg", [70.0, 45.0])
    def test_render_view(self, yaw_max_deg):
        depth, texture = smooth_depth(2, 16), random_texture(2, 16)
        sweep = render_view(texture, depth, yaw_max_deg=yaw_max_deg)
        assert sweep.warp.shape == sweep.mesh.shape == (2, 14, 3, 16, 16) and sweep.valid.shape == (2, 14, 1, 16, 16)
        torch.testing.assert_close(sweep.warp[:, 4], texture, atol=1e-5, rtol=0)  # yaw 0 frame
        torch.testing.assert_close(sweep.mesh[:, 4], texture, atol=1e-5, rtol=0)
        assert (sweep.mesh[:, 0] == 1.0).any()  # white background at the extreme yaw
        assert sweep.warp.abs().max() <= 1

    def test_mesh_and_warp_agree_on_visible_smooth_surface(self):
        size = 32
        depth = smooth_depth(1, size, seed=8)
        rows, cols = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
        texture = torch.stack([rows, cols, rows * cols]).unsqueeze(0) * 0.8  # smooth, so both paths agree
        view = torch.tensor([[0.1, 0.25, 0.0, 0.0, 0.0, 0.0]])
        warp = render_given_view(texture, depth, view)
        mesh = render_mesh(texture, depth, view)
        valid = F.max_pool2d(1 - warp.valid, 3, 1, 1) == 0
        assert ((warp.image - mesh).abs() * valid).max() < 0.02
        torch.testing.assert_close(render_given_view(texture, depth, view, backend="mesh").image, mesh)
        with pytest.raises(ValueError):
            render_given_view(texture, depth, view, backend="nope")
