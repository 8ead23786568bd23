"""SIDE and MAD against cases with closed-form answers (method.md section 9)."""

import math

import pytest
import torch

from methods.renderer.camera import depth_to_points, intrinsics, pixel_grid
from metrics.shape import erode_mask, evaluation_mask, mad, nan_summary, shape_metrics, side


def plane_depth(normal, offset=1.0, size=32):
    """Depth of the plane {P : P . n = offset} seen by the method's camera: d = offset / (K^-1 [u, v, 1] . n)."""
    n = torch.tensor(normal, dtype=torch.float64)
    n = n / n.norm()
    rays = pixel_grid(size, size, dtype=torch.float64) @ torch.linalg.inv(intrinsics(size, dtype=torch.float64)).T
    return (offset / (rays @ n))[None], n


def framed(depth, far=2.0, width=2):
    """Put a background frame at ``far`` around a depth map so the GT mask (depth < max) is its interior."""
    out = torch.full_like(depth, far)
    out[:, width:-width, width:-width] = depth[:, width:-width, width:-width]
    return out


def bump(size=64, height=0.06):
    rows = torch.linspace(-1, 1, size, dtype=torch.float64)
    r2 = rows[:, None] ** 2 + rows[None, :] ** 2
    face = 1.0 - height * torch.exp(-r2 / 0.3)
    return torch.where(r2 < 0.8, face, torch.full_like(face, 1.1))[None]


def test_side_is_zero_for_scaled_depth():
    gt = bump()
    out = shape_metrics(gt * 1.37, gt, torch.ones_like(gt))
    assert out["side"].item() == pytest.approx(0.0, abs=1e-9)


def test_side_known_value():
    gt = torch.ones(1, 10, 10, dtype=torch.float64)
    pred = gt.clone()
    pred[:, :5] *= math.exp(0.01)
    pred[:, 5:] *= math.exp(-0.01)
    # delta is +-0.01 on half the pixels each: its standard deviation is 0.01.
    assert side(pred, gt, torch.ones_like(gt)).item() == pytest.approx(0.01, rel=1e-9)


def test_tilted_planes_give_their_angle():
    d1 = framed(plane_depth([0.0, 0.0, 1.0])[0])
    d2 = plane_depth([math.sin(math.radians(20)), 0.0, math.cos(math.radians(20))])[0]
    d3 = plane_depth([0.0, math.sin(math.radians(-35)), math.cos(math.radians(-35))])[0]
    ones = torch.ones_like(d1)
    assert shape_metrics(d2, d1, ones)["mad_exact"].item() == pytest.approx(20.0, abs=1e-6)
    assert shape_metrics(d3, d1, ones)["mad_exact"].item() == pytest.approx(35.0, abs=1e-6)


def test_plane_normals_are_exact_and_face_the_light_hemisphere():
    d, n = plane_depth([0.3, -0.2, 0.9])
    from methods.renderer.camera import depth_to_normals

    normals = depth_to_normals(d, intrinsics(32, dtype=torch.float64), eps=0.0)
    assert torch.allclose(normals[0, 1:-1, 1:-1], n.expand(30, 30, 3), atol=1e-9)
    assert (normals[0, 0] == torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)).all()


def test_masked_pixels_do_not_count():
    gt = bump(32)
    pred = gt.clone()
    pred[:, :, :16] = pred[:, :, :16] * torch.exp(0.05 * torch.randn(1, 32, 16, dtype=torch.float64))
    valid = torch.zeros_like(gt)
    valid[:, :, 17:] = 1.0  # after erosion, only columns >= 18 count: all untouched
    out = shape_metrics(pred, gt, valid)
    assert out["side"].item() == pytest.approx(0.0, abs=1e-9)
    assert out["mad_exact"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["mask_pixels"].item() > 0


def test_mad_quirk_floor_and_exact_zero_for_identical_depth():
    gt = bump(64)
    out = shape_metrics(gt.clone(), gt, torch.ones_like(gt))
    assert out["mad_exact"].item() == pytest.approx(0.0, abs=1e-5)
    # The original normal formula's epsilon leaves a floor of a few degrees (method.md section 9).
    assert 2.0 < out["mad"].item() < 10.0


def test_erosion_and_gt_mask():
    mask = torch.zeros(1, 7, 7)
    mask[0, 1:6, 1:6] = 1
    eroded = erode_mask(mask)
    assert eroded.sum() == 9 and eroded[0, 2:5, 2:5].all()
    gt = torch.full((1, 7, 7), 1.1)
    gt[0, 1:6, 1:6] = 1.0
    assert torch.equal(evaluation_mask(gt, torch.ones(1, 7, 7)), eroded)


def test_empty_mask_is_nan_and_counted():
    gt = torch.full((2, 8, 8), 1.1, dtype=torch.float64)
    gt[1, 2:6, 2:6] = 1.0
    gt[1, 3:5, 3:5] = 0.98
    out = shape_metrics(gt, gt, torch.ones_like(gt))
    assert math.isnan(out["side"][0].item()) and not math.isnan(out["side"][1].item())
    mean, std, nans = nan_summary(out["side"])
    assert nans == 1 and mean == pytest.approx(0.0, abs=1e-9) and std == 0.0


def test_mad_rejects_bad_shapes():
    with pytest.raises(ValueError, match="B,H,W,3"):
        mad(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4), torch.ones(2, 4, 4))


def test_unprojection_round_trip():
    d = bump(16).float()
    K = intrinsics(16)
    points = depth_to_points(d, K)
    uv = (points @ K.T)[..., :2] / points[..., 2:]
    assert torch.allclose(uv, pixel_grid(16, 16)[..., :2], atol=1e-4)
