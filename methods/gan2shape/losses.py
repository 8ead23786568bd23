"""GAN2Shape losses (``method.md`` section 5): pure functions of tensors returning scalars or frozen records.

Images are ``(B, 3, H, W)`` in [-1, 1], masks ``(B, H, W)`` or ``(B, 1, H, W)`` (broadcast over channels), depth
and shading maps ``(B, H, W)`` (a ``(B, 1, H, W)`` shading is accepted). Weights default to the published ones:
``lam_perc = 0.5``, ``lam_smooth = 0.01``, ``lam_regular = 0.01``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from methods.renderer.camera import check_shape

__all__ = ["Step1Loss", "Step2Loss", "photometric_l1", "smoothness", "step1_loss", "step2_loss"]

Perceptual = Callable[[Tensor, Tensor], Tensor]
FeatureLoss = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Step1Loss:
    """Step-1 (and Step-3 image) loss terms, all scalars: ``total = photometric + lam_perc * perceptual +
    lam_smooth * smooth``; ``photometric`` and ``perceptual`` already include the mirrored terms when flipping;
    ``perceptual`` is 0 when no perceptual callable was given."""

    total: Tensor
    photometric: Tensor
    perceptual: Tensor
    smooth: Tensor


@dataclass(frozen=True)
class Step2Loss:
    """Step-2 loss terms, all scalars: ``total = photometric + disc_feature + lam_regular * regular``."""

    total: Tensor
    photometric: Tensor
    disc_feature: Tensor
    regular: Tensor


def _mask4(mask: Tensor, like: Tensor) -> Tensor:
    """(B, H, W) or (B, 1, H, W) mask -> (B, 1, H, W) in the dtype of ``like``."""
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    check_shape(mask, "B,1,H,W", "mask")
    if mask.shape[0] != like.shape[0] or mask.shape[-2:] != like.shape[-2:]:
        raise ValueError(f"mask {tuple(mask.shape)} does not match images {tuple(like.shape)}")
    return mask.to(like.dtype)


def _map3(x: Tensor, name: str) -> Tensor:
    """(B, H, W) or (B, 1, H, W) map -> (B, H, W)."""
    if x.dim() == 4 and x.shape[1] == 1:
        x = x[:, 0]
    check_shape(x, "B,H,W", name)
    return x


def photometric_l1(x: Tensor, y: Tensor, mask: Tensor) -> Tensor:
    """Masked L1: ``sum |x - y| m / sum m`` with ``m`` broadcast to every channel (a per-channel masked mean).

    An all-zero mask gives 0 (not NaN).

    Args:
        x, y: ``(B, C, H, W)`` images.
        mask: ``(B, H, W)`` or ``(B, 1, H, W)`` weights in [0, 1].
    Returns:
        scalar tensor.

    >>> x, y = torch.zeros(1, 3, 1, 2), torch.tensor([2.0, 9.0]).expand(1, 3, 1, 2)
    >>> float(photometric_l1(x, y, torch.tensor([[[1.0, 0.0]]])))
    2.0
    """
    check_shape(x, "B,C,H,W", "x")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    m = _mask4(mask, x).expand_as(x)
    return ((x - y).abs() * m).sum() / m.sum().clamp_min(torch.finfo(x.dtype).tiny)


def smoothness(x: Tensor) -> Tensor:
    """Second-order smoothness: ``mean|d_xx| + mean|d_xy| + mean|d_yx| + mean|d_yy|`` of a map.

    Forward differences along columns (x) and rows (y); each of the four terms is a mean over its own valid region,
    and they are summed, as in the original ``smooth_loss``. ``d_xy`` and ``d_yx`` hold the same values, so a map
    ``x * y`` scores 2, ``x**2`` scores 2 and any plane scores 0.

    Args:
        x: ``(B, H, W)`` (or ``(B, 1, H, W)``) map, ``H, W >= 3``.
    Returns:
        scalar tensor.

    >>> col = torch.arange(5.0)
    >>> float(smoothness((col ** 2).expand(1, 5, 5)))
    2.0
    """
    x = _map3(x, "x")
    dx, dy = x[:, :, 1:] - x[:, :, :-1], x[:, 1:] - x[:, :-1]
    dxx, dxy = dx[:, :, 1:] - dx[:, :, :-1], dx[:, 1:] - dx[:, :-1]
    dyx, dyy = dy[:, :, 1:] - dy[:, :, :-1], dy[:, 1:] - dy[:, :-1]
    return sum(d.abs().mean() for d in (dxx, dxy, dyx, dyy))


def step1_loss(
    recon: Tensor,
    image: Tensor,
    mask: Tensor,
    canon_depth: Tensor,
    diffuse_shading: Tensor,
    perceptual: Perceptual | None = None,
    lam_perc: float = 0.5,
    lam_smooth: float = 0.01,
    *,
    recon_flip: Tensor | None = None,
    mask_flip: Tensor | None = None,
    shading_flip: Tensor | None = None,
) -> Step1Loss:
    """Step-1 loss ``L1(Î, I; m) + lam_perc P(Î m, I m) + lam_smooth [smooth(d) + smooth(s)]``.

    ``m`` is detached. With ``recon_flip`` (the render of the mirrored canonical depth and albedo under the same
    view and light) the photometric and perceptual terms of the mirrored render are added with weight 1, ``m``
    becomes ``mask * mask_flip`` (when given), and the smoothness is computed once over the stacked plain and
    mirrored maps: depth ``[d, flip(d)]`` and shading ``[s, shading_flip]`` (the shading of the mirrored depth under
    the same light is not the mirror of ``s``, so it must be passed).

    Args:
        recon: ``(B, 3, H, W)`` reconstruction Î.
        image: ``(B, 3, H, W)`` target I.
        mask: ``(B, H, W)`` or ``(B, 1, H, W)`` render-validity mask.
        canon_depth: ``(B, H, W)`` canonical depth.
        diffuse_shading: ``(B, H, W)`` or ``(B, 1, H, W)`` diffuse term ``max(0, n . l)``.
        perceptual: callable ``(a, b) -> scalar`` (e.g. LPIPS averaged over the batch); None omits the term.
        lam_perc, lam_smooth: weights.
        recon_flip, mask_flip, shading_flip: mirrored render ``(B, 3, H, W)``, its mask and its diffuse shading.
    Returns:
        :class:`Step1Loss`.

    >>> x, d = torch.zeros(2, 3, 4, 4), torch.ones(2, 4, 4)
    >>> float(step1_loss(x, x + 1, torch.ones(2, 4, 4), d, d).total)
    1.0
    """
    m = _mask4(mask, recon).detach()
    depth, shading = canon_depth, _map3(diffuse_shading, "diffuse_shading")
    recons = [recon]
    if recon_flip is not None:
        if shading_flip is None:
            raise ValueError("recon_flip needs shading_flip, the diffuse shading of the mirrored depth")
        if mask_flip is not None:
            m = m * _mask4(mask_flip, recon).detach()
        recons.append(recon_flip)
        depth = torch.cat([canon_depth, canon_depth.flip(-1)], 0)
        shading = torch.cat([shading, _map3(shading_flip, "shading_flip")], 0)
    photo = sum(photometric_l1(r, image, m) for r in recons)
    perc = recon.new_zeros(())
    if perceptual is not None:
        perc = sum(perceptual(r * m, image * m).mean() for r in recons)
    smooth = smoothness(depth) + smoothness(shading)
    return Step1Loss(photo + lam_perc * perc + lam_smooth * smooth, photo, perc, smooth)


def step2_loss(
    projected: Tensor,
    pseudo: Tensor,
    mask: Tensor,
    delta_w: Tensor,
    disc_feature_fn: FeatureLoss | None,
    lam_regular: float = 0.01,
) -> Step2Loss:
    """Step-2 loss ``L1(proj, P; m) + DisFeat(proj, P; m) + lam_regular mean(Δw²)``.

    The regulariser acts on the W-space offset after the partial mapping (see :mod:`.latent`), not on E's output.

    Args:
        projected: ``(B, 3, S, S)`` generator images ``G(w + Δw)`` at the working resolution.
        pseudo: ``(B, 3, S, S)`` pseudo samples (targets).
        mask: ``(B, 1, S, S)`` or ``(B, S, S)`` pseudo-sample masks.
        delta_w: ``(B, D)`` latent offsets.
        disc_feature_fn: ``(fake, real, mask) -> scalar``, e.g.
            ``functools.partial(methods.stylegan2.losses.discriminator_feature_loss, discriminator)``; None omits it.
        lam_regular: weight of the offset penalty.
    Returns:
        :class:`Step2Loss`.

    >>> x = torch.zeros(2, 3, 4, 4)
    >>> float(step2_loss(x, x, torch.ones(2, 4, 4), torch.full((2, 8), 10.0), None).total)
    1.0
    """
    check_shape(delta_w, "B,D", "delta_w")
    m = _mask4(mask, projected)
    photo = photometric_l1(projected, pseudo, m)
    feat = projected.new_zeros(()) if disc_feature_fn is None else disc_feature_fn(projected, pseudo, m)
    regular = delta_w.pow(2).mean()
    return Step2Loss(photo + feat + lam_regular * regular, photo, feat, regular)
