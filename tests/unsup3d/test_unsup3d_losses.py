"""Confidence weighting behaves as Unsup3d's published losses."""

import math

import torch

from methods.gan2shape.losses import photometric_l1
from methods.unsup3d.losses import EPS, confidence_feature_l2, confidence_l1, depth_smoothness


def _pair():
    x = torch.zeros(1, 3, 1, 2, requires_grad=True)
    y = torch.full((1, 3, 1, 2), 0.5)
    return x, y


def test_confidence_l1_formula_and_mask():
    x, y = _pair()
    sigma = torch.tensor([[[[0.5, 2.0]]]])
    mask = torch.tensor([[[[1.0, 0.0]]]])
    expected = 0.5 * math.sqrt(2) / (0.5 + EPS) + math.log(0.5 + EPS)  # only the first pixel counts
    assert math.isclose(float(confidence_l1(x, y, mask, sigma)), expected, rel_tol=1e-6)
    # without sigma: the plain masked L1 shared with GAN2Shape
    assert float(confidence_l1(x, y, mask)) == float(photometric_l1(x, y, mask))


def test_low_confidence_lowers_a_pixels_weight():
    x, y = _pair()
    sigma = torch.tensor([[[[0.1, 1.0]]]])  # pixel 0 confident, pixel 1 not
    confidence_l1(x, y, torch.ones(1, 1, 1, 2), sigma).backward()
    g = x.grad.abs()[0, 0, 0]
    assert g[0] > g[1] * 9.9  # gradient weight sqrt(2) / sigma


def test_log_term_penalises_low_confidence():
    x = torch.zeros(1, 1, 1, 1)
    mask = torch.ones(1, 1, 1, 1)
    # perfect reconstruction: the loss is log(sigma), so a larger sigma (lower confidence) costs more
    losses = [float(confidence_l1(x, x, mask, torch.full((1, 1, 1, 1), s))) for s in (0.1, 1.0, 10.0)]
    assert losses[0] < losses[1] < losses[2]
    # for a fixed error e the Laplacian NLL is minimal at sigma = sqrt(2) e
    e = torch.full((1, 1, 1, 1), 0.3)
    sigmas = torch.linspace(0.05, 1.5, 300)
    values = torch.stack([confidence_l1(x, e, mask, s.view(1, 1, 1, 1)) for s in sigmas])
    assert abs(float(sigmas[values.argmin()]) - math.sqrt(2) * 0.3) < 0.01


def test_feature_loss_gaussian_nll_and_pooled_mask():
    f = torch.zeros(1, 2, 2, 2)
    g = torch.full((1, 2, 2, 2), 0.4)
    sigmas = torch.linspace(0.05, 1.5, 300)
    mask = torch.ones(1, 1, 8, 8)
    values = torch.stack([confidence_feature_l2(f, g, mask, torch.full((1, 1, 2, 2), float(s))) for s in sigmas])
    assert abs(float(sigmas[values.argmin()]) - 0.4) < 0.01  # minimum at sigma = |f - g|
    # the mask is average-pooled to the feature resolution: a masked-out quadrant does not count
    mask = torch.ones(1, 1, 8, 8)
    mask[..., :4, :4] = 0
    g2 = g.clone()
    g2[..., 0, 0] = 100.0
    assert math.isclose(float(confidence_feature_l2(f, g2, mask)), 0.16, rel_tol=1e-6)


def test_depth_smoothness_first_order():
    ramp = torch.linspace(0.9, 1.1, 5).expand(1, 5, 5)
    assert math.isclose(float(depth_smoothness(ramp)), 0.25, rel_tol=1e-5)  # (0.05 / 0.2) horizontally only
    assert float(depth_smoothness(torch.ones(1, 4, 4))) == 0.0
