"""The rasteriser against an independent reference: the synface_proc sphere tracer on the same shape.

A sphere off the rotation centre is traced frontally to give a canonical depth map; the tracer then traces the
sphere moved by a view (``P' = R (P - c) + c``), and the renderer warps the canonical depth map with that view.
Away from the silhouette, on surface the canonical view also sees, the depth maps must agree to a small fraction of
the depth range, while the view itself changes the depth by far more.
"""

import pytest
import torch

from benchmark.datasets.sdf_faces import sphere_trace
from methods.renderer.camera import depth_to_points, euler_to_rotation, intrinsics, points_to_grid
from methods.renderer.warp import Renderer, warp_canon_depth

CENTRE = torch.tensor([0.0, 0.0, 1.0])  # the renderer's rotation centre
SPHERE_CENTRE, SPHERE_RADIUS = torch.tensor([0.008, 0.004, 1.03]), 0.07
DEPTH_RANGE = 0.2


def sphere(points: torch.Tensor) -> torch.Tensor:
    """Exact SDF of the sphere, camera frame."""
    return (points - SPHERE_CENTRE).norm(dim=-1) - SPHERE_RADIUS


def moved(sdf, R):
    """The SDF of the shape moved by ``P' = R (P - c) + c``: evaluate the original at ``R^T (P' - c) + c``."""
    return lambda p: sdf((p - CENTRE) @ R + CENTRE)


def seen_by_canonical_view(view_depth, canon_depth, R, tol=2e-3):
    """Pixels of the moved view whose surface point the canonical view also sees (a height field holds nothing
    else)."""
    size = view_depth.shape[-1]
    K = intrinsics(size)
    points = (depth_to_points(view_depth, K) - CENTRE) @ R + CENTRE  # back to the canonical frame
    grid = points_to_grid(points, K, size, size)
    seen = torch.nn.functional.grid_sample(canon_depth[:, None], grid, align_corners=True)[:, 0]
    return (seen - points[..., 2]).abs() < tol


@pytest.mark.parametrize("angles_deg", [(0.0, 15.0, 0.0), (-10.0, -20.0, 5.0), (8.0, 0.0, 0.0)])
def test_warp_matches_sphere_traced_view(angles_deg):
    size = 64
    canon, _ = sphere_trace(sphere, image_size=size)
    view = torch.zeros(1, 6)
    view[0, :3] = torch.tensor(angles_deg) / 60.0  # (pitch, yaw, roll) in units of the 60-degree range
    R = euler_to_rotation(torch.deg2rad(torch.tensor(angles_deg)).view(1, 3))[0]
    expected, expected_mask = sphere_trace(moved(sphere, R), image_size=size)
    warped = warp_canon_depth(canon.double(), view.double(), Renderer())[0].float()
    inner = -torch.nn.functional.max_pool2d(-expected_mask[0].float()[None, None], 5, 1, 2)[0, 0] > 0
    inner &= seen_by_canonical_view(expected, canon, R)[0]
    assert inner.sum() > 1000
    assert (expected[0] - canon[0]).abs()[inner].max() > 0.04 * DEPTH_RANGE  # the view really changes the depth
    error = (warped - expected[0]).abs()[inner]
    assert error.max().item() < 0.01 * DEPTH_RANGE
    assert error.median().item() < 0.001 * DEPTH_RANGE
