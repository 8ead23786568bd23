"""The rasteriser against analytic ray casting, hand-made scenes and the naive reference (outputs and gradients)."""

import math

import pytest
import torch

from methods.renderer.camera import (
    canon_to_view,
    depth_to_points,
    intrinsics,
    points_to_pixels,
    view_to_canon,
    view_to_transform,
)
from methods.renderer.raster import grid_faces, interpolate_attributes, rasterize
from methods.renderer.reference import rasterize_depth_naive
from methods.renderer.warp import Renderer, warp_canon_depth

DOUBLE = torch.float64
CFG = Renderer()
LOW, HIGH = CFG.depth_bounds


def view_of(pitch_deg=0.0, yaw_deg=0.0, roll_deg=0.0, tx=0.0, ty=0.0) -> torch.Tensor:
    return torch.tensor([[pitch_deg / 60, yaw_deg / 60, roll_deg / 60, tx / 0.1, ty / 0.1, 0.0]], dtype=DOUBLE)


def rays(size: int) -> torch.Tensor:
    """``(1, S, S, 3)`` viewing rays ``K^-1 [u, v, 1]`` (unit z component)."""
    return depth_to_points(torch.ones(1, size, size, dtype=DOUBLE), intrinsics(size, dtype=DOUBLE))


def sphere_depth(ray: torch.Tensor, centre: torch.Tensor, radius: float) -> torch.Tensor:
    """Depth of the nearest ray/sphere hit (NaN on a miss); ``ray`` has unit z, so the ray parameter is the depth."""
    a = (ray * ray).sum(-1)
    b = (ray * centre).sum(-1)
    disc = b * b - a * ((centre * centre).sum() - radius**2)
    return (b - disc.sqrt()) / a


def inside_canon(points_view, R, t, size, margin=1.0) -> torch.Tensor:
    """Whether view-frame points come from the canonical image interior (``margin`` pixels from its border)."""
    uv = points_to_pixels(view_to_canon(points_view, R, t), intrinsics(size, dtype=DOUBLE))
    return ((uv >= margin) & (uv <= size - 1 - margin)).all(-1)


def plane_in_view(normal, offset, R, t):
    """``n . P = h`` in the canonical frame becomes ``n' . P' = h'`` in the view frame."""
    n = torch.tensor(normal, dtype=DOUBLE)
    n_view = R[0] @ n
    c = torch.tensor([0.0, 0.0, 1.0], dtype=DOUBLE)
    return n_view, offset - n @ c + n_view @ (c + t[0])


VIEWS = [view_of(yaw_deg=25), view_of(pitch_deg=-20), view_of(roll_deg=40, tx=0.02), view_of(15, -30, 10, -0.01, 0.02)]


class TestAnalyticScenes:
    @pytest.mark.parametrize("view", VIEWS)
    @pytest.mark.parametrize("normal", [(0.0, 0.0, 1.0), (0.35, -0.2, 1.0)])
    def test_tilted_plane(self, view, normal):
        size = 32
        ray = rays(size)
        canon = 1.0 / (ray @ torch.tensor(normal, dtype=DOUBLE))
        rendered = warp_canon_depth(canon, view, CFG)
        R, t = view_to_transform(view)
        n_view, h_view = plane_in_view(normal, 1.0, R, t)
        expected = h_view / (ray @ n_view)
        inside = inside_canon(expected.unsqueeze(-1) * ray, R, t, size)
        outside = ~inside_canon(expected.unsqueeze(-1) * ray, R, t, size, margin=-1.0)
        assert inside.float().mean() > 0.5
        assert (rendered - expected)[inside].abs().max() < 1e-9  # planar mesh: exact up to round-off
        assert (rendered[outside] == HIGH).all()

    def test_tilted_plane_float32(self):
        size, normal, view = 64, (0.2, 0.3, 1.0), VIEWS[3]
        ray = rays(size)
        canon = 1.0 / (ray @ torch.tensor(normal, dtype=DOUBLE))
        rendered = warp_canon_depth(canon.float(), view.float(), CFG)
        R, t = view_to_transform(view)
        n_view, h_view = plane_in_view(normal, 1.0, R, t)
        expected = h_view / (ray @ n_view)
        inside = inside_canon(expected.unsqueeze(-1) * ray, R, t, size)
        assert (rendered.double() - expected)[inside].abs().max() < 1e-5

    @pytest.mark.parametrize("view", VIEWS)
    def test_sphere_cap(self, view):
        size, radius = 48, 0.35
        centre = torch.tensor([0.0, 0.0, 1.3], dtype=DOUBLE)
        ray = rays(size)
        canon = sphere_depth(ray, centre, radius)
        assert not canon.isnan().any() and 0.9 < canon.min() and canon.max() < 1.0
        rendered = warp_canon_depth(canon, view, CFG)
        R, t = view_to_transform(view)
        centre_view = canon_to_view(centre.view(1, 1, 3), R, t)[0, 0]
        expected = sphere_depth(ray, centre_view, radius)
        hit = ~expected.isnan()
        inside = hit & inside_canon(expected.nan_to_num(1.0).unsqueeze(-1) * ray, R, t, size, margin=1.5)
        assert inside.float().mean() > 0.5
        error = (rendered - expected)[inside].abs().max()
        assert error < 1e-3 * (CFG.max_depth - CFG.min_depth)  # chord error of a 1-pixel facet is ~1e-5

    def test_occlusion_near_block_hides_floor(self):
        size, floor, top = 32, 1.06, 0.92
        canon = torch.full((1, size, size), floor, dtype=DOUBLE)
        canon[:, 12:21, 12:21] = top
        view = view_of(yaw_deg=25)
        rendered = warp_canon_depth(canon, view, CFG)
        R, t = view_to_transform(view)
        ray = rays(size)
        top_view_n, top_view_h = plane_in_view((0.0, 0.0, 1.0), top, R, t)
        floor_view_n, floor_view_h = plane_in_view((0.0, 0.0, 1.0), floor, R, t)
        top_depth, floor_depth = top_view_h / (ray @ top_view_n), floor_view_h / (ray @ floor_view_n)
        uv_top = points_to_pixels(view_to_canon(top_depth.unsqueeze(-1) * ray, R, t), intrinsics(size, dtype=DOUBLE))
        uv_floor = points_to_pixels(view_to_canon(floor_depth.unsqueeze(-1) * ray, R, t),
                                    intrinsics(size, dtype=DOUBLE))
        on_top = ((uv_top >= 12.5) & (uv_top <= 19.5)).all(-1)
        floor_behind = ~((uv_floor >= 11) & (uv_floor <= 21)).all(-1) & inside_canon(floor_depth.unsqueeze(-1) * ray,
                                                                                  R, t, size)
        hidden = on_top & floor_behind
        assert hidden.sum() >= 10  # the floor is really there behind the block at these pixels
        assert (rendered - top_depth)[on_top].abs().max() < 1e-9
        rows_without_block = torch.zeros_like(on_top)
        rows_without_block[:, :8] = rows_without_block[:, 25:] = True
        floor_only = rows_without_block & inside_canon(floor_depth.unsqueeze(-1) * ray, R, t, size)
        assert (rendered - floor_depth)[floor_only].abs().max() < 1e-9


class TestHandMadeMeshes:
    K = intrinsics(10, dtype=DOUBLE)

    def quad(self, z, lo=2.0, hi=7.0):
        corners = torch.tensor([[lo, lo], [hi, lo], [lo, hi], [hi, hi]], dtype=DOUBLE)
        points = torch.cat([(corners - 4.5) / self.K[0, 0] * z, torch.full((4, 1), z, dtype=DOUBLE)], dim=1)
        return points

    def test_nearest_wins_whatever_the_order(self):
        verts = torch.cat([self.quad(2.0, 0.0, 9.0), self.quad(1.0)]).unsqueeze(0)
        faces = torch.tensor([[0, 2, 1], [1, 2, 3], [4, 6, 5], [5, 6, 7]])
        for order in (faces, faces.flip(0)):
            frags = rasterize(verts, order, self.K, 10, 10)
            assert (frags.depth[0, 2:8, 2:8] == 1.0).all()
            assert frags.depth[0, 0, 0] == 2.0
            assert (order[frags.face_index[0, 2:8, 2:8]] >= 4).all()

    def test_back_faces_are_kept(self):
        verts = self.quad(1.5).unsqueeze(0)
        front = rasterize(verts, torch.tensor([[0, 2, 1]]), self.K, 10, 10)
        back = rasterize(verts, torch.tensor([[0, 1, 2]]), self.K, 10, 10)
        assert front.mask.sum() == back.mask.sum() > 10
        torch.testing.assert_close(front.depth, back.depth)

    def test_background_far_and_bary(self):
        frags = rasterize(self.quad(1.5).unsqueeze(0), torch.tensor([[0, 2, 1]]), self.K, 10, 10, far=7.0)
        assert (frags.depth[~frags.mask] == 7.0).all() and (frags.face_index[~frags.mask] == -1).all()
        torch.testing.assert_close(frags.bary[frags.mask].sum(-1), torch.ones(int(frags.mask.sum()), dtype=DOUBLE))

    def test_vertex_behind_camera_is_skipped(self):
        verts = self.quad(1.5).unsqueeze(0).clone()
        verts[0, 0, 2] = -0.5
        assert not rasterize(verts, torch.tensor([[0, 2, 1]]), self.K, 10, 10).mask.any()

    @pytest.mark.parametrize("max_pairs", [1 << 22, 7])
    def test_huge_grazing_triangle(self, max_pairs):
        """One triangle far larger than the image, strongly tilted: every pixel gets the plane's exact depth."""
        points = torch.tensor([[-1.0, -1.0, 0.6], [3.0, -1.0, 3.0], [-1.0, 3.0, 1.0]], dtype=DOUBLE).unsqueeze(0)
        frags = rasterize(points, torch.tensor([[0, 1, 2]]), self.K, 10, 10, max_pairs=max_pairs)
        normal = torch.linalg.cross(points[0, 1] - points[0, 0], points[0, 2] - points[0, 0])
        ray = depth_to_points(torch.ones(1, 10, 10, dtype=DOUBLE), self.K)
        expected = (normal @ points[0, 0]) / (ray @ normal)
        assert frags.mask.all()
        torch.testing.assert_close(frags.depth, expected)

    def test_perspective_correct_attributes(self):
        """Interpolating vertex x gives the x of the surface point on the pixel ray, i.e. depth * (u - c) / f."""
        size = 12
        depth = 1 + 0.1 * torch.rand(1, size, size, dtype=DOUBLE)
        K = intrinsics(size, dtype=DOUBLE)
        R, t = view_to_transform(view_of(10, 20))
        verts = canon_to_view(depth_to_points(depth, K), R, t).flatten(1, 2)
        frags = rasterize(verts, grid_faces(size, size), K, size, size)
        attrs = interpolate_attributes(frags, grid_faces(size, size), verts, background=-5.0)
        on_ray = frags.depth.unsqueeze(-1) * rays(size)
        torch.testing.assert_close(attrs[frags.mask], on_ray[frags.mask])
        assert (attrs[~frags.mask] == -5.0).all()


def random_grid_scene(seed: int, size: int, batch: int = 2):
    gen = torch.Generator().manual_seed(seed)
    depth = 1 + 0.1 * torch.tanh(torch.randn(batch, size, size, generator=gen, dtype=DOUBLE))
    view = torch.randn(batch, 6, generator=gen, dtype=DOUBLE) * torch.tensor([0.4, 0.6, 0.4, 0.3, 0.3, 0.0])
    K = intrinsics(size, dtype=DOUBLE)
    R, t = view_to_transform(view)
    verts = canon_to_view(depth_to_points(depth, K), R, t).flatten(1, 2)
    return verts, grid_faces(size, size), K


def random_soup(seed: int, size: int, count: int = 10):
    """Large, intersecting, arbitrarily oriented triangles (exercise the large-box path and z-buffer ties)."""
    gen = torch.Generator().manual_seed(seed)
    K = intrinsics(size, dtype=DOUBLE)
    z = 0.8 + 0.6 * torch.rand(1, 3 * count, 1, generator=gen, dtype=DOUBLE)
    uv = (torch.rand(1, 3 * count, 2, generator=gen, dtype=DOUBLE) * 1.6 - 0.3) * (size - 1)
    xy = (uv - K[:2, 2]) / K[0, 0] * z
    return torch.cat([xy, z], -1), torch.arange(3 * count).view(count, 3), K


class TestAgainstNaiveReference:
    @pytest.mark.parametrize("scene", [lambda: random_grid_scene(0, 8), lambda: random_grid_scene(1, 9),
                                       lambda: random_grid_scene(2, 7, batch=3), lambda: random_soup(3, 12),
                                       lambda: random_soup(4, 10, count=6)])
    @pytest.mark.parametrize("max_pairs", [1 << 22, 5])
    def test_outputs_and_gradients(self, scene, max_pairs):
        verts, faces, K = scene()
        verts.requires_grad_(True)
        size = int(K[0, 2] * 2 + 1)
        fast = rasterize(verts, faces, K, size, size, max_pairs=max_pairs)
        naive_depth, naive_face = rasterize_depth_naive(verts, faces, K, size, size)
        assert fast.mask.float().mean() > 0.3
        assert torch.equal(fast.face_index, naive_face)
        torch.testing.assert_close(fast.depth, naive_depth, atol=1e-10, rtol=0)
        upstream = torch.randn(fast.depth.shape, generator=torch.Generator().manual_seed(7), dtype=DOUBLE)
        grad_fast, = torch.autograd.grad((fast.depth * upstream).sum(), verts)
        grad_naive, = torch.autograd.grad((naive_depth * upstream).sum(), verts)
        assert grad_fast.abs().max() > 0
        torch.testing.assert_close(grad_fast, grad_naive, atol=1e-8, rtol=1e-6)

    def test_float32_matches_float64_reference(self):
        verts, faces, K = random_grid_scene(5, 8)
        fast = rasterize(verts.float(), faces, K.float(), 8, 8)
        naive_depth, _ = rasterize_depth_naive(verts, faces, K, 8, 8)
        torch.testing.assert_close(fast.depth.double(), naive_depth, atol=1e-5, rtol=0)

    def test_identity_view_covers_every_pixel(self):
        """Pixel centres fall exactly on vertices: the edge tolerance must not drop any of them, borders included."""
        size = 16
        depth = 1 + 0.1 * torch.rand(2, size, size)
        rendered = warp_canon_depth(depth, torch.zeros(2, 6))
        torch.testing.assert_close(rendered, depth)


class TestGradcheck:
    def test_rasterize_wrt_vertices(self):
        verts, faces, K = random_soup(11, 6, count=4)
        fn = lambda v: rasterize(v, faces, K, 6, 6).depth  # noqa: E731
        assert torch.autograd.gradcheck(fn, (verts.requires_grad_(),))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    verts, faces, K = random_grid_scene(9, 32, batch=4)
    cpu = rasterize(verts.float(), faces, K.float(), 32, 32)
    gpu = rasterize(verts.float().cuda(), faces.cuda(), K.float().cuda(), 32, 32)
    assert torch.equal(cpu.face_index, gpu.face_index.cpu())
    torch.testing.assert_close(cpu.depth, gpu.depth.cpu())
    assert math.isfinite(float(gpu.depth.sum()))
