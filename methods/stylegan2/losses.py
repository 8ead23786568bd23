"""Discriminator features as a reconstruction loss (GAN2Shape Step 2, ``method.md`` sections 4 and 5).

The frozen StyleGAN2 discriminator sees the S-resolution images; the outputs of its ResBlocks ``convs[1..k]``
(k = ``ftr_num``, 4 in GAN2Shape) at S/2 ... S/2^k are compared with an L1 distance. Each term is the mean over
batch, channels and positions of ``|f_fake - f_real| * m``, with the validity mask m average-pooled to that
feature's resolution (the mask is not renormalised); the terms are summed unweighted. Real features carry no
gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .model import Discriminator

__all__ = ["masked_feature_l1", "discriminator_feature_loss"]


def _as_mask(mask: Tensor, like: Tensor) -> Tensor:
    """Mask (B, H, W) or (B, 1, H, W) -> (B, 1, H, W) in the dtype of ``like``."""
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] not in (1, like.shape[0]):
        raise ValueError(f"mask must be (B, 1, H, W) or (B, H, W) with B = {like.shape[0]}, got {tuple(mask.shape)}")
    return mask.to(like.dtype)


def masked_feature_l1(fake_features: Sequence[Tensor], real_features: Sequence[Tensor],
                      mask: Tensor | None = None) -> Tensor:
    """Sum over features of ``mean(|fake - real| * pool(mask))``; each feature (B, C_i, H_i, W_i), mask (B, 1, H, W).

    The mask is average-pooled to (H_i, W_i) for each feature; without a mask the terms are plain L1 means.
    Returns a scalar tensor.

    >>> f = [torch.ones(1, 2, 4, 4)]
    >>> float(masked_feature_l1(f, [torch.zeros(1, 2, 4, 4)], torch.ones(1, 1, 8, 8)))
    1.0
    """
    if len(fake_features) != len(real_features) or not fake_features:
        raise ValueError(f"need equally many features, got {len(fake_features)} and {len(real_features)}")
    total = fake_features[0].new_zeros(())
    for fake, real in zip(fake_features, real_features):
        if fake.shape != real.shape:
            raise ValueError(f"feature shapes differ: {tuple(fake.shape)} vs {tuple(real.shape)}")
        diff = (fake - real).abs()
        if mask is not None:
            diff = diff * F.adaptive_avg_pool2d(_as_mask(mask, fake), fake.shape[-2:])
        total = total + diff.mean()
    return total


def discriminator_feature_loss(discriminator: Discriminator, fake: Tensor, real: Tensor, mask: Tensor | None = None,
                               ftr_num: int = 4) -> Tensor:
    """GAN2Shape's ``DisFeat(fake, real; m)``: images (B, 3, S, S), mask (B, 1, S, S) or (B, S, S) -> scalar.

    ``real`` features are computed under ``torch.no_grad``; gradients flow into ``fake`` (and the discriminator's
    parameters, if they require grad; GAN2Shape keeps it frozen).

    >>> d = Discriminator(16, max_channels=8)
    >>> x = torch.randn(2, 3, 16, 16)
    >>> float(discriminator_feature_loss(d, x, x, torch.ones(2, 1, 16, 16), ftr_num=2).detach())
    0.0
    """
    if fake.shape != real.shape:
        raise ValueError(f"fake and real images must have the same shape, got {tuple(fake.shape)}, {tuple(real.shape)}")
    with torch.no_grad():
        real_features = discriminator(real.detach(), ftr_num=ftr_num)
    fake_features = discriminator(fake, ftr_num=ftr_num)
    return masked_feature_l1(fake_features, real_features, mask)
