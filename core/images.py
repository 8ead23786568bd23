"""Turn tensors into uint8 pictures for logging: images, depth maps, normal maps, masks, and grids of them.

Normal maps of depth maps are made by ``methods.renderer.mesh.normals_to_uint8``, which computes the normals.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def image_to_uint8(image: Tensor) -> np.ndarray:
    """``(C, H, W)`` in [-1, 1] -> ``(H, W, C)`` uint8.

    >>> image_to_uint8(torch.tensor([[[-1.0, 1.0]]])).tolist()
    [[[0], [255]]]
    """
    return ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def depth_to_uint8(depth: Tensor, near: float = 0.9, far: float = 1.1) -> np.ndarray:
    """``(H, W)`` depth -> ``(H, W, 3)`` grey uint8, near white and far black (the synface PNG convention)."""
    value = ((far - depth.detach().float().cpu()) / (far - near)).clamp(0, 1)
    return (value * 255).round().byte()[..., None].expand(-1, -1, 3).numpy()


def normal_map_to_uint8(normals: Tensor) -> np.ndarray:
    """``(H, W, 3)`` unit normals -> ``(H, W, 3)`` uint8 (x, y, z mapped from [-1, 1] to [0, 255])."""
    return ((normals.detach().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().numpy()


def mask_to_uint8(mask: Tensor) -> np.ndarray:
    """``(H, W)`` mask in [0, 1] -> ``(H, W, 3)`` uint8."""
    return (mask.detach().float().cpu().clamp(0, 1) * 255).round().byte()[..., None].expand(-1, -1, 3).numpy()


def grid(rows: list[list[np.ndarray]], upscale: int = 2, pad: int = 2) -> np.ndarray:
    """Tile equally sized ``(H, W, 3)`` uint8 tiles row by row with white padding, nearest-upscaled."""
    tiles = [[np.kron(t, np.ones((upscale, upscale, 1), dtype=np.uint8)) for t in row] for row in rows]
    h, w = tiles[0][0].shape[:2]
    cols = max(len(r) for r in tiles)
    out = np.full((len(tiles) * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(tiles):
        for j, tile in enumerate(row):
            out[pad + i * (h + pad):pad + i * (h + pad) + h, pad + j * (w + pad):pad + j * (w + pad) + w] = tile
    return out
