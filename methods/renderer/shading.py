"""Depth post-processing and Lambertian shading (``method.md`` section 2).

All functions are pure and batched; depth maps are ``(B, H, W)``, images ``(B, C, H, W)`` in [-1, 1], normals
``(B, H, W, 3)`` as returned by :func:`methods.renderer.camera.depth_to_normals`, lights ``(B, 4)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .camera import check_shape

__all__ = ["raw_to_depth", "clamp_border_depth", "light_direction", "diffuse_shading", "light_to_shading",
           "albedo_to_texture"]


def raw_to_depth(raw: Tensor, min_depth: float = 0.9, max_depth: float = 1.1) -> Tensor:
    """Map the raw depth-network output onto ``[min_depth, max_depth]``.

    ``d = mid + half * tanh(r - mean(r))`` with ``mid = (min + max) / 2``, ``half = (max - min) / 2`` and the mean
    taken per sample over the image; the defaults give GAN2Shape's ``d = 1 + 0.1 tanh(r - mean r)``.

    Args:
        raw: ``(B, H, W)`` unbounded network output.
        min_depth: lower end of the range.
        max_depth: upper end of the range.
    Returns:
        ``(B, H, W)`` depth in ``[min_depth, max_depth]``.

    >>> raw_to_depth(torch.zeros(1, 2, 2))[0, 0].tolist()
    [1.0, 1.0]
    """
    check_shape(raw, "B,H,W", "raw")
    centred = raw - raw.mean(dim=(1, 2), keepdim=True)
    return (min_depth + max_depth) / 2 + (max_depth - min_depth) / 2 * torch.tanh(centred)


def clamp_border_depth(
    depth: Tensor, min_depth: float = 0.9, max_depth: float = 1.1, factor: float = 1.02, width: int = 2
) -> Tensor:
    """Push the ``width`` leftmost and rightmost columns towards the far border depth.

    There ``d <- d (1 - factor) + factor * d_b`` with ``d_b = 0.7 max_depth + 0.3 min_depth``; other columns are
    unchanged. Quirk reproduced on purpose: GAN2Shape uses ``factor = 1.02`` (Unsup3d uses 1, which replaces the
    border by ``d_b``), so the border is an extrapolation slightly beyond ``d_b`` (1.039 to 1.043 for the default
    range) that still depends weakly, and with a negative sign, on the predicted depth.

    Args:
        depth: ``(B, H, W)``.
        min_depth: lower end of the depth range.
        max_depth: upper end of the depth range.
        factor: blend factor, 1.02 in GAN2Shape.
        width: number of columns clamped on each side.
    Returns:
        ``(B, H, W)`` depth with clamped side borders.

    >>> d = clamp_border_depth(torch.ones(1, 1, 5), factor=1.0)
    >>> [round(x, 4) for x in d[0, 0].tolist()]
    [1.04, 1.04, 1.0, 1.04, 1.04]
    """
    check_shape(depth, "B,H,W", "depth")
    border = 0.7 * max_depth + 0.3 * min_depth
    cols = torch.arange(depth.shape[-1], device=depth.device)
    is_border = (cols < width) | (cols >= depth.shape[-1] - width)
    return torch.where(is_border, depth * (1 - factor) + factor * border, depth)


def light_direction(light: Tensor) -> Tensor:
    """Unit light direction ``(l2, l3, 1) / |(l2, l3, 1)|`` of a ``(B, 4)`` light vector, ``(B, 3)``.

    >>> light_direction(torch.zeros(1, 4)).tolist()
    [[0.0, 0.0, 1.0]]
    """
    check_shape(light, "B,4", "light")
    direction = torch.cat([light[:, 2:], torch.ones_like(light[:, :1])], dim=1)
    return direction / direction.norm(dim=1, keepdim=True)


def diffuse_shading(normals: Tensor, light: Tensor) -> Tensor:
    """The diffuse term ``max(0, n . dir)`` of :func:`light_to_shading` (what the smoothness loss sees).

    Args:
        normals: ``(B, H, W, 3)``.
        light: ``(B, 4)``.
    Returns:
        ``(B, 1, H, W)``.

    >>> n = torch.tensor([0.0, 0.0, 1.0]).expand(1, 1, 1, 3)
    >>> round(diffuse_shading(n, torch.tensor([[0.0, 0.0, 1.0, 0.0]])).item(), 4)
    0.7071
    """
    check_shape(normals, "B,H,W,3", "normals")
    return (normals * light_direction(light)[:, None, None]).sum(-1).clamp_min(0).unsqueeze(1)


def light_to_shading(normals: Tensor, light: Tensor) -> Tensor:
    """Lambertian shading from the 4-d light vector.

    ``k_a = (l0 + 1) / 2``, ``k_d = (l1 + 1) / 2``, ``dir = (l2, l3, 1) / |(l2, l3, 1)|`` and
    ``shading = k_a + k_d max(0, n . dir)``. Normals point away from the camera (``+z`` for a fronto-parallel
    surface), the same hemisphere as ``dir``.

    Args:
        normals: ``(B, H, W, 3)``.
        light: ``(B, 4)``.
    Returns:
        ``(B, 1, H, W)`` shading.

    >>> n = torch.tensor([0.0, 0.0, 1.0]).expand(1, 2, 2, 3)
    >>> light_to_shading(n, torch.tensor([[0.0, 0.0, 0.0, 0.0]]))[0, 0].tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """
    k_ambient = (light[:, 0] + 1) / 2
    k_diffuse = (light[:, 1] + 1) / 2
    return k_ambient[:, None, None, None] + k_diffuse[:, None, None, None] * diffuse_shading(normals, light)


def albedo_to_texture(albedo: Tensor, shading: Tensor) -> Tensor:
    """Shade an albedo image: ``texture = 2 ((albedo + 1) / 2 * shading) - 1``.

    Args:
        albedo: ``(B, C, H, W)`` in [-1, 1].
        shading: ``(B, 1, H, W)``.
    Returns:
        ``(B, C, H, W)`` texture (not clamped).

    >>> albedo_to_texture(torch.zeros(1, 3, 1, 1), torch.full((1, 1, 1, 1), 0.5)).flatten().tolist()
    [-0.5, -0.5, -0.5]
    """
    check_shape(albedo, "B,C,H,W", "albedo")
    check_shape(shading, "B,1,H,W", "shading")
    return 2 * ((albedo + 1) / 2 * shading) - 1
