"""Unsup3d's losses: confidence-weighted photometric and perceptual terms, with and without flip (pure functions).

The confidence network predicts a positive ``sigma`` per pixel. The photometric term is the negative log-likelihood
of a Laplacian, ``sqrt(2) |x - y| / sigma + log sigma`` (constants dropped); the perceptual term that of a Gaussian
on features, ``(f_x - f_y)^2 / (2 sigma^2) + log sigma``. Both are averaged over the render-validity mask. A small
``sigma`` (high confidence) raises a pixel's weight ``1 / sigma`` and lowers its ``log sigma``; a large one (low
confidence) lowers the weight and is penalised by ``log sigma``. ``EPS = 1e-7`` is added to ``sigma`` as in the
original.

Total: ``L = L1 + lam_flip L1_flip + lam_perc (P + lam_flip P_flip) + lam_depth_sm S`` with ``lam_flip = 0.5``,
``lam_perc = 1`` and ``lam_depth_sm = 0`` for faces (the first-order depth smoothness ``S`` was only used for
synthetic cars).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from methods.gan2shape.losses import photometric_l1
from methods.renderer.camera import check_shape

from .model import Unsup3dOutput

__all__ = ["EPS", "Unsup3dLoss", "confidence_l1", "confidence_feature_l2", "depth_smoothness", "depth_curvature",
           "unsup3d_loss"]

EPS = 1e-7
Features = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Unsup3dLoss:
    """Loss terms (scalars): ``total`` and its parts; ``*_flip`` and ``perc*`` are 0 when absent."""

    total: Tensor
    l1: Tensor
    l1_flip: Tensor
    perc: Tensor
    perc_flip: Tensor
    depth_smooth: Tensor
    depth_curv: Tensor
    coarse: Tensor

    def as_floats(self) -> dict[str, float]:
        """``{"loss": total, "loss_l1": ..., ...}`` as Python floats, for logging."""
        names = {"total": "loss", "l1": "loss_l1", "l1_flip": "loss_l1_flip", "perc": "loss_perc",
                 "perc_flip": "loss_perc_flip", "depth_smooth": "loss_depth_smooth",
                 "depth_curv": "loss_depth_curv", "coarse": "loss_coarse"}
        return {v: float(getattr(self, k).detach()) for k, v in names.items()}


def confidence_l1(x: Tensor, y: Tensor, mask: Tensor, sigma: Tensor | None = None) -> Tensor:
    """Confidence-weighted L1: masked mean of ``sqrt(2) |x - y| / (sigma + EPS) + log(sigma + EPS)``.

    Without ``sigma`` this is the plain masked L1 (:func:`methods.gan2shape.losses.photometric_l1`).

    Args:
        x, y: ``(B, C, H, W)`` images.
        mask: ``(B, 1, H, W)`` weights (broadcast over channels).
        sigma: ``(B, 1, H, W)`` positive scale, or None.
    Returns:
        scalar tensor.

    >>> x, y, m = torch.zeros(1, 1, 1, 2), torch.ones(1, 1, 1, 2), torch.ones(1, 1, 1, 2)
    >>> round(float(confidence_l1(x, y, m, torch.ones(1, 1, 1, 2))), 4)
    1.4142
    """
    if sigma is None:
        return photometric_l1(x, y, mask)
    check_shape(x, "B,C,H,W", "x")
    check_shape(sigma, "B,1,H,W", "sigma")
    loss = (x - y).abs() * 2**0.5 / (sigma + EPS) + (sigma + EPS).log()
    m = mask.to(loss.dtype).expand_as(loss)
    return (loss * m).sum() / m.sum().clamp_min(torch.finfo(loss.dtype).tiny)


def confidence_feature_l2(fx: Tensor, fy: Tensor, mask: Tensor, sigma: Tensor | None = None) -> Tensor:
    """Confidence-weighted squared feature distance: masked mean of ``(fx - fy)^2 / (2 sigma^2 + EPS) + log(sigma
    + EPS)``, with the image-resolution mask average-pooled to the feature resolution.

    Args:
        fx, fy: ``(B, C, h, w)`` features.
        mask: ``(B, 1, H, W)`` with ``H``, ``W`` multiples of ``h``, ``w``.
        sigma: ``(B, 1, h, w)`` positive scale, or None (plain squared distance).
    Returns:
        scalar tensor.

    >>> f = torch.zeros(1, 4, 2, 2)
    >>> float(confidence_feature_l2(f, f + 2, torch.ones(1, 1, 8, 8)))
    4.0
    """
    check_shape(fx, "B,C,H,W", "fx")
    loss = (fx - fy) ** 2
    if sigma is not None:
        check_shape(sigma, "B,1,H,W", "sigma")
        loss = loss / (2 * sigma**2 + EPS) + (sigma + EPS).log()
    kh, kw = mask.shape[-2] // loss.shape[-2], mask.shape[-1] // loss.shape[-1]
    m = F.avg_pool2d(mask.to(loss.dtype), kernel_size=(kh, kw), stride=(kh, kw)).expand_as(loss)
    return (loss * m).sum() / m.sum().clamp_min(torch.finfo(loss.dtype).tiny)


def depth_smoothness(depth: Tensor, min_depth: float = 0.9, max_depth: float = 1.1) -> Tensor:
    """Unsup3d's first-order depth smoothness: mean absolute vertical plus horizontal neighbour differences,
    divided by the depth range.

    Args:
        depth: ``(B, H, W)``.
    Returns:
        scalar tensor.

    >>> round(float(depth_smoothness(torch.tensor([[[0.9, 1.1], [0.9, 1.1]]]))), 6)
    1.0
    """
    check_shape(depth, "B,H,W", "depth")
    span = max_depth - min_depth
    vertical = ((depth[:, :-1] - depth[:, 1:]) / span).abs().mean()
    horizontal = ((depth[:, :, :-1] - depth[:, :, 1:]) / span).abs().mean()
    return vertical + horizontal


def depth_curvature(depth: Tensor, min_depth: float = 0.9, max_depth: float = 1.1) -> Tensor:
    """Second-order depth smoothness: mean absolute second differences ``d_xx + d_yy + 2 d_xy`` of the depth
    divided by the depth range. Zero on planes, so unlike :func:`depth_smoothness` it does not flatten a shape;
    it damps the grid-scale ripples that shading cannot see (central-difference normals are blind to a 2-pixel
    period) but the warp can use to displace texture.

    Args:
        depth: ``(B, H, W)``.
    Returns:
        scalar tensor.

    >>> plane = torch.arange(16.0).view(1, 4, 4) * 0.01
    >>> stripes = plane + torch.tensor([0.0, 0.01] * 2)  # a 2-pixel column pattern
    >>> float(depth_curvature(plane)) < 1e-5, round(float(depth_curvature(stripes)), 4)
    (True, 0.1)
    """
    check_shape(depth, "B,H,W", "depth")
    d = depth / (max_depth - min_depth)
    dxx = (d[:, :, 2:] - 2 * d[:, :, 1:-1] + d[:, :, :-2]).abs().mean()
    dyy = (d[:, 2:] - 2 * d[:, 1:-1] + d[:, :-2]).abs().mean()
    dxy = (d[:, 1:, 1:] - d[:, 1:, :-1] - d[:, :-1, 1:] + d[:, :-1, :-1]).abs().mean()
    return dxx + dyy + 2 * dxy


def coarse_l1(recon: Tensor, image: Tensor, mask: Tensor, kernel: int = 9) -> Tensor:
    """Masked L1 between box-blurred (``kernel`` px) masked images: a coarse-scale photometric term.

    Small facial features give the pixel L1 a basin of attraction around the true view only about as wide as
    the features; blurred, the images still move together over the whole head (``tests/unsup3d``, rung 4).

    Args:
        recon, image: ``(N, 3, H, W)``; mask: ``(N, 1, H, W)``.
    Returns:
        scalar tensor.

    >>> x = torch.zeros(1, 3, 8, 8); m = torch.ones(1, 1, 8, 8)
    >>> float(coarse_l1(x, x, m)), round(float(coarse_l1(x + 0.5, x, m)), 3)
    (0.0, 0.5)
    """
    check_shape(recon, "N,3,H,W", "recon")
    check_shape(mask, "N,1,H,W", "mask")
    blur = lambda x: F.avg_pool2d(x, kernel, stride=1, padding=kernel // 2, count_include_pad=False)  # noqa: E731
    return photometric_l1(blur(recon * mask), blur(image * mask), mask)


def _channel(conf: Tensor | None, i: int) -> Tensor | None:
    return None if conf is None else conf[:, i : i + 1]


def unsup3d_loss(out: Unsup3dOutput, features: Features | None = None, lam_perc: float = 1.0,
                 lam_flip: float = 0.5, lam_depth_sm: float = 0.0, lam_depth_curv: float = 0.0,
                 lam_coarse: float = 0.0, coarse_kernel: int = 9) -> Unsup3dLoss:
    """The published training loss of one forward pass.

    Confidence channel 0 weights the plain reconstruction and channel 1 the mirrored one. ``features`` maps
    ``(N, 3, S, S)`` images to ``(N, C, S/4, S/4)`` features (the perceptual network, frozen; None drops the
    perceptual terms). Without flipped renders (symmetry off) the flip terms are 0.

    Args:
        out: :class:`~methods.unsup3d.model.Unsup3dOutput`.
        features: perceptual feature network or None.
        lam_perc, lam_flip, lam_depth_sm, lam_depth_curv: weights (the last two: :func:`depth_smoothness` and
            :func:`depth_curvature` of the canonical depth before the border clamp).
        lam_coarse, coarse_kernel: weight and box size of :func:`coarse_l1` over all renders (0: off, as
            published).
    Returns:
        :class:`Unsup3dLoss`.
    """
    b, image = out.batch, out.image
    zero = image.new_zeros(())
    l1 = confidence_l1(out.recon_image[:b], image, out.mask[:b], _channel(out.conf_l1, 0))
    l1_flip = perc = perc_flip = zero
    if out.flipped:
        l1_flip = confidence_l1(out.recon_image[b:], image, out.mask[b:], _channel(out.conf_l1, 1))
    if features is not None:
        feats = features(torch.cat([out.recon_image, image]))
        f_recon, f_image = feats[: out.recon_image.shape[0]], feats[out.recon_image.shape[0]:]
        perc = confidence_feature_l2(f_recon[:b], f_image, out.mask[:b], _channel(out.conf_perc, 0))
        if out.flipped:
            perc_flip = confidence_feature_l2(f_recon[b:], f_image, out.mask[b:], _channel(out.conf_perc, 1))
    smooth = depth_smoothness(out.canon_depth_free) if lam_depth_sm else zero
    curv = depth_curvature(out.canon_depth_free) if lam_depth_curv else zero
    reps = out.recon_image.shape[0] // b
    coarse = (coarse_l1(out.recon_image, image.repeat(reps, 1, 1, 1), out.mask, coarse_kernel) if lam_coarse
              else zero)
    total = (l1 + lam_flip * l1_flip + lam_perc * (perc + lam_flip * perc_flip) + lam_depth_sm * smooth
             + lam_depth_curv * curv + lam_coarse * coarse)
    return Unsup3dLoss(total, l1, l1_flip, perc, perc_flip, smooth, curv, coarse)
