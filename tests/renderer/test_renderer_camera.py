"""Camera geometry and shading: known values, round trips, shapes and gradchecks (one class per function)."""

import math

import pytest
import torch

from methods.renderer.camera import (
    canon_to_view,
    check_shape,
    depth_to_normals,
    depth_to_points,
    euler_to_rotation,
    intrinsics,
    pixels_to_grid,
    points_to_grid,
    points_to_pixels,
    rotation_to_euler,
    transform_to_view,
    view_to_canon,
    view_to_transform,
)
from methods.renderer.shading import albedo_to_texture, clamp_border_depth, light_to_shading, raw_to_depth

DOUBLE = torch.float64


def plane_depth(normal, offset: float, size: int) -> torch.Tensor:
    """Depth map ``(1, S, S)`` of the plane ``n . P = offset`` seen by the camera of ``intrinsics(size)``."""
    rays = depth_to_points(torch.ones(1, size, size, dtype=DOUBLE), intrinsics(size, dtype=DOUBLE))
    return offset / (rays @ torch.tensor(normal, dtype=DOUBLE))


class TestCheckShape:
    def test_accepts_and_rejects(self):
        check_shape(torch.zeros(2, 5, 3), "B,N,3")
        check_shape(torch.zeros(3), "*,3")
        with pytest.raises(ValueError, match=r"\(B,N,3\)"):
            check_shape(torch.zeros(2, 5, 2), "B,N,3")
        with pytest.raises(ValueError):
            check_shape(torch.zeros(2), "B,*,3")


class TestIntrinsics:
    @pytest.mark.parametrize(("size", "focal"), [(64, 360.05), (128, 725.81)])
    def test_known_values(self, size, focal):
        K = intrinsics(size)
        assert float(K[0, 0]) == pytest.approx(focal, abs=5e-3)
        assert float(K[1, 1]) == float(K[0, 0])
        assert K[:2, 2].tolist() == [(size - 1) / 2] * 2


class TestRotation:
    def test_elementary_axes(self):
        quarter = math.pi / 2
        pitch = euler_to_rotation(torch.tensor([[quarter, 0.0, 0.0]]))[0]
        yaw = euler_to_rotation(torch.tensor([[0.0, quarter, 0.0]]))[0]
        roll = euler_to_rotation(torch.tensor([[0.0, 0.0, quarter]]))[0]
        y, z, x = torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 0.0])
        torch.testing.assert_close(pitch @ y, z, atol=1e-6, rtol=0)  # right-handed about x: y -> z
        torch.testing.assert_close(yaw @ z, x, atol=1e-6, rtol=0)  # about y: z -> x
        torch.testing.assert_close(roll @ x, y, atol=1e-6, rtol=0)  # about z: x -> y

    def test_order_is_z_y_x(self):
        a = torch.tensor([[0.3, -0.4, 0.5]])
        single = [euler_to_rotation(a * torch.eye(3)[i]) for i in range(3)]
        torch.testing.assert_close(euler_to_rotation(a), single[2] @ single[1] @ single[0])

    @pytest.mark.parametrize("batch", [1, 4])
    def test_orthonormal_and_round_trip(self, batch):
        angles = (torch.rand(batch, 3, dtype=DOUBLE) - 0.5) * 2.5
        R = euler_to_rotation(angles)
        torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=DOUBLE).expand(batch, 3, 3))
        torch.testing.assert_close(torch.linalg.det(R), torch.ones(batch, dtype=DOUBLE))
        torch.testing.assert_close(rotation_to_euler(R), angles)

    def test_gradcheck(self):
        angles = torch.rand(2, 3, dtype=DOUBLE, requires_grad=True)
        assert torch.autograd.gradcheck(euler_to_rotation, (angles,))


class TestViewTransform:
    def test_known_values(self):
        R, t = view_to_transform(torch.tensor([[0.0, 0.5, 0.0, 1.0, -0.5, 1.0]]), z_range=0.2)
        assert float(R[0, 0, 0]) == pytest.approx(math.cos(math.radians(30)))
        assert float(R[0, 0, 2]) == pytest.approx(math.sin(math.radians(30)))
        torch.testing.assert_close(t, torch.tensor([[0.1, -0.05, 0.2]]))
        assert float(view_to_transform(torch.ones(1, 6))[1][0, 2]) == 0.0  # z_range defaults to 0

    @pytest.mark.parametrize("z_range", [0.0, 0.1])
    def test_round_trip(self, z_range):
        view = (torch.rand(5, 6, dtype=DOUBLE) - 0.5) * 2
        if z_range == 0:
            view[:, 5] = 0
        torch.testing.assert_close(transform_to_view(*view_to_transform(view, z_range), z_range), view)

    def test_canon_view_inverse(self):
        R, t = view_to_transform(torch.randn(3, 6, dtype=DOUBLE) * 0.5, z_range=0.1)
        points = torch.rand(3, 4, 5, 3, dtype=DOUBLE) + 0.5
        moved = canon_to_view(points, R, t)
        assert moved.shape == points.shape
        torch.testing.assert_close(view_to_canon(moved, R, t), points)

    def test_rotation_centre_is_fixed(self):
        R, t = view_to_transform(torch.tensor([[0.4, -0.7, 0.2, 0.0, 0.0, 0.0]]))
        centre = torch.tensor([[[0.0, 0.0, 1.0]]])
        torch.testing.assert_close(canon_to_view(centre, R, t), centre)
        far_centre = torch.tensor([[[0.0, 0.0, 2.0]]])
        torch.testing.assert_close(canon_to_view(far_centre, R, t, center_depth=2.0), far_centre)
        assert not torch.allclose(canon_to_view(centre, R, t, center_depth=2.0), centre)


class TestProjection:
    @pytest.mark.parametrize("batch", [1, 3])
    def test_project_unproject_round_trip(self, batch):
        size = 16
        depth = torch.rand(batch, size, size, dtype=DOUBLE) + 0.5
        K = intrinsics(size, dtype=DOUBLE)
        pixels = points_to_pixels(depth_to_points(depth, K), K)
        grid = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="xy"), -1).to(DOUBLE)
        torch.testing.assert_close(pixels, grid.expand(batch, -1, -1, -1))

    def test_grid_is_align_corners_true(self):
        size = 8
        points = depth_to_points(torch.full((1, size, size), 1.3), intrinsics(size))
        grid = points_to_grid(points, intrinsics(size), size, size)
        image = torch.arange(size * size, dtype=torch.float32).view(1, 1, size, size)
        sampled = torch.nn.functional.grid_sample(image, grid, align_corners=True)
        torch.testing.assert_close(sampled, image)

    def test_pixels_to_grid_rectangular(self):
        assert pixels_to_grid(torch.tensor([4.0, 2.0]), height=3, width=5).tolist() == [1.0, 1.0]


class TestNormals:
    @pytest.mark.parametrize("normal", [(0.0, 0.0, 1.0), (0.3, 0.0, 1.0), (0.0, -0.4, 1.0), (0.2, 0.25, 1.0)])
    def test_planes_of_known_tilt(self, normal):
        depth = plane_depth(normal, 1.0, 16)
        n = depth_to_normals(depth, intrinsics(16, dtype=DOUBLE), eps=0.0)
        expected = torch.tensor(normal, dtype=DOUBLE) / torch.tensor(normal, dtype=DOUBLE).norm()
        torch.testing.assert_close(n[0, 1:-1, 1:-1], expected.expand(14, 14, 3))
        assert n[0, 0, 0].tolist() == [0.0, 0.0, 1.0]


class TestShading:
    def test_known_values(self):
        n = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]).view(1, 1, 3, 3)
        light = torch.tensor([[0.0, 0.0, 1.0, 0.0]])  # k_a = k_d = 0.5, direction (1, 0, 1) / sqrt 2
        shading = light_to_shading(n, light)[0, 0, 0]
        half = 0.5 / math.sqrt(2)
        torch.testing.assert_close(shading, torch.tensor([0.5 + half, 0.5 + half, 0.5]))

    def test_ambient_diffuse_scales(self):
        n = torch.tensor([0.0, 0.0, 1.0]).expand(2, 2, 2, 3)
        shading = light_to_shading(n, torch.tensor([[1.0, -1.0, 0.0, 0.0], [-1.0, 1.0, 0.0, 0.0]]))
        assert shading[:, 0, 0, 0].tolist() == [1.0, 1.0]

    def test_texture(self):
        albedo = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1)
        texture = albedo_to_texture(albedo, torch.full((1, 1, 1, 1), 1.5))
        assert texture.flatten().tolist() == [-1.0, 0.5, 2.0]

    def test_gradcheck(self):
        n = torch.nn.functional.normalize(torch.randn(1, 3, 3, 3, dtype=DOUBLE) + torch.tensor([0, 0, 2.0]), dim=-1)
        light = torch.randn(1, 4, dtype=DOUBLE) * 0.5
        assert torch.autograd.gradcheck(light_to_shading, (n.requires_grad_(), light.requires_grad_()))


class TestDepthPostProcessing:
    def test_border_clamp(self):
        depth = torch.full((2, 3, 8), 0.95)
        out = clamp_border_depth(depth)
        border = 0.95 * (1 - 1.02) + 1.02 * (0.7 * 1.1 + 0.3 * 0.9)
        torch.testing.assert_close(out[..., [0, 1, 6, 7]], torch.full((2, 3, 4), border))
        torch.testing.assert_close(out[..., 2:6], depth[..., 2:6])
        assert 1.039 < border < 1.043

    def test_border_clamp_factor_one_is_unsup3d(self):
        out = clamp_border_depth(torch.rand(1, 4, 6), factor=1.0, width=1)
        torch.testing.assert_close(out[..., [0, 5]], torch.full((1, 4, 2), 1.04))

    def test_raw_to_depth(self):
        raw = torch.randn(3, 8, 8)
        depth = raw_to_depth(raw, 0.8, 1.2)
        assert depth.min() >= 0.8 and depth.max() <= 1.2
        torch.testing.assert_close(raw_to_depth(raw + 7.0, 0.8, 1.2), depth)  # mean-centred
        expected = 1.0 + 0.1 * torch.tanh(raw - raw.mean(dim=(1, 2), keepdim=True))
        torch.testing.assert_close(raw_to_depth(raw), expected)
