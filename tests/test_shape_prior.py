"""The ellipsoid shape prior of method.md section 7 and its ablation variants."""

import math

import pytest
import torch

from methods.common.shape_prior import ellipsoid_depth, mask_box, shape_prior_depth


def box_mask(h=64, w=64, rows=(12, 52), cols=(16, 48)):
    m = torch.zeros(1, h, w)
    m[0, rows[0]:rows[1], cols[0]:cols[1]] = 1
    return m


def test_cap_goes_from_near_to_far():
    d = ellipsoid_depth(box_mask(), near=0.91, far=1.02)
    assert d.min().item() == pytest.approx(0.91, abs=2e-3)
    assert d.max().item() == pytest.approx(1.02)
    assert d[0, 0, 0].item() == pytest.approx(1.02)


def test_tau_matches_the_published_value():
    # tau = sqrt(R^2 - (R - (f - n))^2) = 0.2755 for R = 0.4, n = 0.91, f = 1.02
    assert math.sqrt(0.4**2 - (0.4 - 0.11) ** 2) == pytest.approx(0.2755, abs=1e-4)


def test_centre_row_quirk():
    # synface moves y_min up by a sixth of the height; rows are rescaled about H/2, not the box centre.
    m = box_mask(rows=(30, 60), cols=(20, 44))
    d = ellipsoid_depth(m, category="none")
    x0, x1, y0, y1 = mask_box(m)[0].tolist()
    rho = (y1 - y0) / (x1 - x0)
    expected_row = 64 / 2 + rho * ((y0 + y1) / 2 - 64 / 2)
    deepest_row = d[0, :, 32].argmin().item()
    assert abs(deepest_row - expected_row) <= 1.0


def test_sphere_is_circular_and_flat_is_constant():
    m = box_mask(rows=(8, 56), cols=(20, 44))
    sphere = shape_prior_depth(m, kind="sphere", category="none")
    inside = sphere[0] < 1.02
    rows, cols = inside.nonzero().T
    assert (rows.max() - rows.min()).item() == pytest.approx((cols.max() - cols.min()).item(), abs=1)
    assert shape_prior_depth(m, kind="flat").unique().numel() == 1


def test_scale_changes_the_footprint():
    small = ellipsoid_depth(box_mask(), scale=0.75)
    large = ellipsoid_depth(box_mask(), scale=1.25)
    assert (small < 1.02).sum() < (ellipsoid_depth(box_mask()) < 1.02).sum() < (large < 1.02).sum()


def test_empty_mask_uses_the_whole_frame_and_unknown_category_fails():
    assert mask_box(torch.zeros(1, 8, 8)).tolist() == [[0.0, 7.0, 0.0, 7.0]]
    with pytest.raises(ValueError, match="unknown shape-prior category"):
        ellipsoid_depth(box_mask(), category="horse")
