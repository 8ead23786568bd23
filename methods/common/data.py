"""A dataset split as in-memory tensors, for the trainers: uint8 images and, where the split has them, depths."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from core.errors import BenchError

__all__ = ["split_images", "split_images_depths", "resize_uint8"]


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


def resize_uint8(images: Tensor, size: int, upsample: str | None = None) -> Tensor:
    """Square uint8 images ``(N, 3, H, W)`` -> ``(N, 3, size, size)`` uint8, rounded: area-averaged when shrinking,
    interpolated with the ``upsample`` mode (e.g. ``"bicubic"``) when enlarging; ``upsample=None`` refuses images
    smaller than ``size`` in one line. Unchanged (no copy) when they already have that size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    smaller = images.shape[-1] < size
    if smaller and upsample is None:
        raise BenchError(f"dataset images are {images.shape[-1]}px, smaller than the model size {size}; choose a "
                         "smaller model or regenerate the dataset")
    mode = upsample if smaller else "area"
    chunks = [F.interpolate(c.float(), size=(size, size), mode=mode) for c in images.split(1024)]
    return torch.cat(chunks).round().clamp(0, 255).to(torch.uint8)
