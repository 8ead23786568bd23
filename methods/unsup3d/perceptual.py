"""The perceptual feature network of Unsup3d, without a download.

Unsup3d compares VGG16 ``relu3_3`` features (ImageNet weights, 1/4 of the input resolution) of the reconstruction
and the input. Those weights cannot be downloaded here, so the default stand-in is the frozen discriminator of our
StyleGAN2 trained on the same data (``weights/stylegan2_synface_proc_32.safetensors``): the image is resized
(area / bilinear) to the discriminator's resolution and the output of the ResBlock whose resolution is 1/4 of the
input image is used, so the features line up with the 1/4-resolution perceptual confidence map. ``none``
(``model.perceptual=none``) drops the perceptual term. This is a documented deviation from the published model.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.errors import BenchError

__all__ = ["DiscriminatorFeatures", "build_features"]


class DiscriminatorFeatures(nn.Module):
    """Frozen StyleGAN2 discriminator features at 1/4 of the input resolution.

    Args:
        discriminator: a :class:`methods.stylegan2.model.Discriminator` (frozen here, eval mode).
        image_size: side S of the images this will see; features are ``(B, C, S/4, S/4)``.

    >>> from methods.stylegan2.model import Discriminator
    >>> feats = DiscriminatorFeatures(Discriminator(32, max_channels=8), 64)
    >>> feats(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 8, 16, 16])
    """

    def __init__(self, discriminator: nn.Module, image_size: int):
        super().__init__()
        self.discriminator = discriminator.eval().requires_grad_(False)
        self.image_size, self.d_size = image_size, int(discriminator.size)
        out_size = image_size // 4
        level = math.log2(self.d_size / out_size) if out_size else -1
        if out_size < 1 or level != int(level) or not 1 <= level < len(discriminator.convs):
            raise BenchError(f"a {self.d_size}px discriminator has no feature map at {out_size}px (1/4 of the "
                             f"{image_size}px images); use a discriminator of side {2 * out_size} to "
                             f"{out_size * 2 ** (len(discriminator.convs) - 1)}")
        self.level = int(level)

    def train(self, mode: bool = True) -> "DiscriminatorFeatures":  # stays frozen in eval mode
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        """``(B, 3, S, S)`` in [-1, 1] -> ``(B, C, S/4, S/4)``."""
        if images.shape[-1] != self.d_size:
            mode = "area" if images.shape[-1] > self.d_size else "bilinear"
            images = F.interpolate(images, size=(self.d_size, self.d_size), mode=mode,
                                   **({} if mode == "area" else {"align_corners": False}))
        return self.discriminator(images, ftr_num=self.level)[-1]


def build_features(kind: str, weights: str | Path | None, image_size: int,
                   device: torch.device | str = "cpu") -> DiscriminatorFeatures | None:
    """The perceptual network named by ``kind``: ``"discriminator"`` (from a StyleGAN2 weights file) or ``"none"``.

    Relative ``weights`` paths are relative to the working directory.
    """
    if kind == "none":
        return None
    if kind != "discriminator":
        raise BenchError(f"unknown perceptual network '{kind}'; valid: discriminator, none")
    if not weights or not Path(weights).is_file():
        raise BenchError(f"perceptual discriminator weights {weights} not found; train them with `bench train "
                         f"model=stylegan2_32` or set model.perceptual=none")
    from methods.stylegan2.checkpoints import load_discriminator

    return DiscriminatorFeatures(load_discriminator(weights, device), image_size).to(device)
