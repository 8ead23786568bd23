"""Deliberately naive reference rasteriser: the test oracle for :mod:`methods.renderer.raster`.

Python loops over every pixel and every face, plain-float visibility, then for each covered pixel the depth is
recomputed with torch ops as the intersection of the pixel's viewing ray with the plane of the winning triangle
(``z = (n . P0) / (n . r)`` with ``r = K^-1 [u, v, 1]``), a formula independent of the barycentric, perspective-
correct interpolation used by the fast path, and equal to it as a function of the vertices. Use only on tiny images
(a 16 x 16 grid mesh takes about a second). It follows the same coverage rules as the fast rasteriser: pixel centres
at integer coordinates, a signed edge-distance tolerance ``eps_px``, faces with a vertex nearer than ``near`` or a
doubled screen area below ``min_area`` skipped, nearest face wins and, on exact ties, the lower face index.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .camera import check_shape

__all__ = ["rasterize_depth_naive"]


def _edge(a, b, p) -> float:
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def _covering_depth(tri, zs, p, eps_px: float) -> float | None:
    """Perspective-correct depth of triangle ``tri`` (three (u, v) tuples) at pixel ``p``, or None if outside."""
    area = _edge(*tri)
    sign = 1.0 if area > 0 else -1.0
    inv_z = 0.0
    for i in range(3):
        a, b = tri[(i + 1) % 3], tri[(i + 2) % 3]
        length = ((b[0] - a[0]) ** 2 + (b[1] - a[1]) ** 2) ** 0.5
        e = _edge(a, b, p)
        if e * sign < -eps_px * length:
            return None
        inv_z += e / area / zs[i]
    return 1.0 / inv_z if inv_z > 0 else None


def rasterize_depth_naive(
    verts: Tensor,
    faces: Tensor,
    K: Tensor,
    height: int,
    width: int,
    *,
    far: float = 100.0,
    near: float = 1e-3,
    min_area: float = 1e-7,
    eps_px: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    """Depth and face-index maps of camera-frame meshes by brute force; same contract as ``raster.rasterize``.

    Args:
        verts: ``(B, N, 3)`` camera-frame vertices.
        faces: ``(F, 3)`` vertex indices.
        K: ``(3, 3)`` intrinsics.
        height: output height.
        width: output width.
        far: background depth.
    Returns:
        ``depth`` ``(B, H, W)`` (differentiable w.r.t. ``verts``) and ``face_index`` ``(B, H, W)`` (-1 background).

    >>> from methods.renderer.camera import depth_to_points, intrinsics
    >>> verts = depth_to_points(torch.ones(1, 3, 3), intrinsics(3)).view(1, -1, 3)
    >>> depth, face = rasterize_depth_naive(verts, torch.tensor([[0, 3, 1], [1, 3, 4]]), intrinsics(3), 3, 3)
    >>> face[0].tolist()
    [[0, 0, -1], [0, 1, -1], [-1, -1, -1]]
    """
    check_shape(verts, "B,N,3", "verts")
    check_shape(faces, "F,3", "faces")
    check_shape(K, "3,3", "K")
    K = K.to(verts)
    fx, fy, cx, cy = (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))
    face_list = faces.tolist()
    depth_rows, face_rows = [], []
    for b in range(verts.shape[0]):
        pts = verts[b].detach().tolist()
        uv = [(fx * x / z + cx, fy * y / z + cy) if z > 0 else None for x, y, z in pts]
        winners = []
        for i in range(height):
            for j in range(width):
                best, best_face = float("inf"), -1
                for f, (a, c, d) in enumerate(face_list):
                    if min(pts[a][2], pts[c][2], pts[d][2]) <= near:
                        continue
                    tri = (uv[a], uv[c], uv[d])
                    if abs(_edge(*tri)) <= min_area:
                        continue
                    z = _covering_depth(tri, (pts[a][2], pts[c][2], pts[d][2]), (float(j), float(i)), eps_px)
                    if z is not None and z < best:
                        best, best_face = z, f
                winners.append(best_face)
        depth_rows.append(torch.stack([_ray_plane_depth(verts[b], face_list[f], K, k, width) if f >= 0
                                       else verts.new_tensor(far) for k, f in enumerate(winners)]))
        face_rows.append(torch.tensor(winners))
    shape = (verts.shape[0], height, width)
    return torch.stack(depth_rows).view(shape), torch.stack(face_rows).view(shape).to(verts.device)


def _ray_plane_depth(points: Tensor, face: list[int], K: Tensor, pixel: int, width: int) -> Tensor:
    """Depth where the ray through pixel number ``pixel`` meets the plane of triangle ``face``."""
    p0, p1, p2 = points[face[0]], points[face[1]], points[face[2]]
    normal = torch.linalg.cross(p1 - p0, p2 - p0)
    u, v = pixel % width, pixel // width
    ray = torch.linalg.solve(K, K.new_tensor([float(u), float(v), 1.0]))
    return (normal @ p0) / (normal @ ray)
