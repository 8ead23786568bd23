"""A dataset split as in-memory tensors, for the trainers: uint8 images and, where the split has them, depths."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from core.errors import BenchError

__all__ = ["split_images", "split_images_depths"]


def split_images(ds, channels_last: bool = False) -> Tensor:
    """All images of a dataset split as ``(N, 3, S, S)`` uint8 (at once when the dataset stores arrays).

    With ``channels_last`` an array-backed split is returned as its ``(N, S, S, 3)`` array viewed as NCHW, without
    a copy: batches indexed from it keep channels-last memory, which selects other convolution kernels (so other
    bits) than a contiguous NCHW tensor. The StyleGAN2, HoloGAN and Unsup3d trainers have always trained on that
    view; their checkpoints stay reproducible only with it.
    """
    if hasattr(ds, "array"):
        images = torch.from_numpy(np.ascontiguousarray(ds.array("image"))).permute(0, 3, 1, 2)
        return images if channels_last else images.contiguous()
    return torch.stack([((ds[i]["image"] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
                        for i in range(len(ds))])


def split_images_depths(ds, what: str) -> tuple[Tensor, Tensor]:
    """Images ``(N, 3, S, S)`` uint8 and ground-truth depths ``(N, S, S)`` float32 of a split; ``what`` names the
    split in the one-line error when it has no depth."""
    if not getattr(ds, "has_depth", False):
        raise BenchError(f"{what} has no ground-truth depth")
    depths = (torch.from_numpy(np.ascontiguousarray(ds.depth_array())) if hasattr(ds, "depth_array")
              else torch.stack([ds[i]["depth"] for i in range(len(ds))]))
    return split_images(ds), depths
