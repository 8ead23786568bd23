"""The supervised depth network: Unsup3d's depth encoder-decoder, trained on ground-truth input-view depth.

Unsup3d's tables carry a "supervised" row: the same depth network as the photo-geometric autoencoder, trained with
the ground-truth depth of the training images instead of the reconstruction loss, as an upper bound of what the
architecture reaches. Here it predicts the depth of the *input view* directly (there is no canonical frame, view or
renderer): ``d = mid + half * tanh(D(I))`` with ``mid, half`` from ``[min_depth, max_depth]``, wide enough to hold
both the head (about 0.93 to 1.07) and the dataset's background depth (1.1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from methods.common.networks import EDDeconv
from methods.common.settings import strict_from_dict
from methods.renderer.camera import check_shape

__all__ = ["SupervisedConfig", "SupervisedDepthNet"]


@dataclass(frozen=True)
class SupervisedConfig:
    """Architecture: ``EDDeconv`` of width ``nf`` (GroupNorm groups ``gn_base``, bottleneck ``zdim``) and the
    output depth range."""

    image_size: int = 64
    nf: int = 16
    zdim: int = 256
    gn_base: int = 4
    min_depth: float = 0.85
    max_depth: float = 1.15

    @classmethod
    def from_dict(cls, values: dict) -> "SupervisedConfig":
        """Build from a mapping; unknown keys are an error (a misspelt key must not fall back to a default)."""
        return strict_from_dict(cls, values, "supervised model settings")

    def to_dict(self) -> dict:
        return asdict(self)


class SupervisedDepthNet(nn.Module):
    """Image ``(B, 3, S, S)`` in [-1, 1] -> input-view depth ``(B, S, S)`` in ``[min_depth, max_depth]``.

    >>> net = SupervisedDepthNet(SupervisedConfig())
    >>> d = net(torch.zeros(2, 3, 64, 64))
    >>> d.shape, bool(((d >= 0.85) & (d <= 1.15)).all())
    (torch.Size([2, 64, 64]), True)
    """

    def __init__(self, cfg: SupervisedConfig = SupervisedConfig()):
        super().__init__()
        self.cfg = cfg
        self.netD = EDDeconv(3, 1, cfg.image_size, nf=cfg.nf, zdim=cfg.zdim, gn_base=cfg.gn_base)

    def forward(self, image: Tensor) -> Tensor:
        s = self.cfg.image_size
        check_shape(image, f"B,3,{s},{s}", "image")
        mid, half = (self.cfg.min_depth + self.cfg.max_depth) / 2, (self.cfg.max_depth - self.cfg.min_depth) / 2
        return mid + half * torch.tanh(self.netD(image)[:, 0])
