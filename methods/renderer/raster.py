"""Vectorised pure-PyTorch z-buffer rasteriser for triangle meshes given in the camera frame.

The rasteriser works in two passes, as nvdiffrast splits "rasterise" and "interpolate":

1. **Visibility (no gradients).** Vertices are projected with ``K``. Every triangle lists the pixel centres inside its
   screen bounding box (for a depth-map grid mesh almost all boxes hold 0 to 2 pixels); the (triangle, pixel) pairs
   are enumerated with ``repeat_interleave`` in chunks of at most ``max_pairs`` pairs, so grazing, stretched
   triangles are rasterised exactly and memory stays bounded. Each pair inside its triangle gets the perspective-
   correct depth and a packed int64 key ``(float32 depth bits << 32) | face id``; ``scatter_reduce(amin)`` keeps the
   nearest face per pixel (ties go to the lower face id). Back faces are not culled.
2. **Differentiable recomputation.** For each covered pixel the screen-space barycentrics ``w`` of its winning face
   are recomputed from the projected vertices, and depth is interpolated perspective-correctly:
   ``1 / z = sum_i w_i / z_i``. Gradients flow to all vertex coordinates through ``w`` and ``z_i``; visibility
   itself (which face wins, silhouettes) has no gradient.

Conventions: pixel ``(row i, column j)`` samples the image position ``(u, v) = (j, i)``, i.e. pixel centres sit at
integer coordinates like ``grid_sample(align_corners=True)``. A pixel centre counts as inside a triangle when its
signed distance to every edge is at least ``-eps_px`` (a tiny tolerance, so that pixel centres falling exactly on
shared edges or vertices, as happens for the identity view of a grid mesh, are never lost to round-off).
Triangles with a vertex nearer than ``near`` or with a screen area below ``min_area`` are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .camera import check_shape, points_to_pixels

__all__ = ["Fragments", "grid_faces", "rasterize", "interpolate_attributes"]

_NO_FACE = torch.iinfo(torch.int64).max


@dataclass(frozen=True)
class Fragments:
    """Per-pixel output of :func:`rasterize`.

    Attributes:
        face_index: ``(B, H, W)`` int64 index of the visible face in ``faces``, ``-1`` for background.
        depth: ``(B, H, W)`` perspective-correct camera-frame depth; ``far`` for background.
        bary: ``(B, H, W, 3)`` perspective-correct barycentric weights of the visible face; 0 for background.
    """

    face_index: Tensor
    depth: Tensor
    bary: Tensor

    @property
    def mask(self) -> Tensor:
        """``(B, H, W)`` bool, True where some face is visible."""
        return self.face_index >= 0

    def detach(self) -> "Fragments":
        return Fragments(self.face_index, self.depth.detach(), self.bary.detach())


def grid_faces(height: int, width: int, *, device=None) -> Tensor:
    """Faces of the depth-map grid mesh: per pixel quad ``(TL, BL, TR)`` then ``(TR, BL, BR)``.

    Vertex ``i * width + j`` is pixel ``(row i, column j)``. All first triangles come first, then all second ones,
    ``2 (H - 1) (W - 1)`` faces in total. In the camera frame (x right, y down, z forward) both windings give normals
    pointing towards the camera.

    Args:
        height: grid height ``H``.
        width: grid width ``W``.
    Returns:
        ``(2 (H - 1) (W - 1), 3)`` int64 vertex indices.

    >>> grid_faces(2, 2).tolist()
    [[0, 2, 1], [1, 2, 3]]
    """
    idx = torch.arange(height * width, device=device).view(height, width)
    tl, tr, bl, br = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    first = torch.stack([tl, bl, tr], dim=-1).reshape(-1, 3)
    second = torch.stack([tr, bl, br], dim=-1).reshape(-1, 3)
    return torch.cat([first, second], dim=0)


def _edge(a: Tensor, b: Tensor, p: Tensor) -> Tensor:
    """Twice the signed area of ``(a, b, p)``; inputs ``(..., 2)``."""
    return (b[..., 0] - a[..., 0]) * (p[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (p[..., 0] - a[..., 0])


def _barycentric(tri: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
    """Screen-space barycentrics ``(M, 3)`` of points ``p`` ``(M, 2)`` in triangles ``tri`` ``(M, 3, 2)``, and the
    signed double areas ``(M,)``."""
    a, b, c = tri.unbind(1)
    area = _edge(a, b, c)
    edges = torch.stack([_edge(b, c, p), _edge(c, a, p), _edge(a, b, p)], dim=-1)
    return edges / area.unsqueeze(-1), area


Affine = tuple[Tensor, Tensor, Tensor]


def _face_equations(u: Tensor, v: Tensor, inv_z: Tensor, x0: Tensor, y0: Tensor) -> list[Affine]:
    """Per-triangle affine functions ``a * dx + b * dy + c`` of a pixel's offset ``(dx, dy)`` from ``(x0, y0)``.

    Functions 0-2: signed distance in pixels to the edge opposite vertex ``i``, positive inside whatever the winding.
    Function 3: the perspective-correct inverse depth ``sum_i w_i / z_i``, which is affine in screen space.

    Args:
        u, v, inv_z: ``(3, K)`` vertex columns, rows and inverse depths.
        x0, y0: ``(K,)`` integer origins (the bounding-box corners).
    Returns:
        four ``(a, b, c)`` triples of ``(K,)`` tensors.
    """
    area = (u[1] - u[0]) * (v[2] - v[0]) - (v[1] - v[0]) * (u[2] - u[0])
    sign, weight = area.sign(), inv_z / area
    dist, depth = [], [0.0, 0.0, 0.0]
    for i in range(3):
        s, e = (i + 1) % 3, (i + 2) % 3
        du, dv = u[e] - u[s], v[e] - v[s]
        edge = (-dv, du, dv * (u[s] - x0) - du * (v[s] - y0))  # twice the signed area of (start, end, p)
        scale = sign / torch.hypot(du, dv)
        dist.append(tuple(coef * scale for coef in edge))
        depth = [acc + coef * weight[i] for acc, coef in zip(depth, edge)]
    return dist + [tuple(depth)]


def _evaluate(eqs: list[Affine], dx, dy, index=slice(None)) -> list[Tensor]:
    """Values of the four functions at offsets ``(dx, dy)`` (ints or tensors) for the faces selected by ``index``."""
    out = []
    for a, b, c in eqs:
        val = c[index]
        val = val + dx * a[index] if not isinstance(dx, int) or dx else val
        out.append(val + dy * b[index] if not isinstance(dy, int) or dy else val)
    return out


def _inside(vals: list[Tensor], eps_px: float) -> Tensor:
    """Inside test from the three edge distances (the inverse depth is checked after selection)."""
    return torch.minimum(torch.minimum(vals[0], vals[1]), vals[2]) >= -eps_px


def _splat(zbuf: Tensor, inv_z: Tensor, px: Tensor, py: Tensor, face_id: Tensor, size: tuple[int, int, int]) -> None:
    """Write candidate (face, pixel) depths into the packed int64 z-buffer ``zbuf`` (amin, in place)."""
    front = inv_z > 0
    inv_z, px, py, face_id = inv_z[front], px[front], py[front], face_id[front]
    z = (1.0 / inv_z).float().clamp_min(torch.finfo(torch.float32).tiny)
    keys = (z.view(torch.int32).long() << 32) | face_id
    num_faces, height, width = size
    pix = (face_id // num_faces) * (height * width) + py * width + px
    zbuf.scatter_reduce_(0, pix, keys, reduce="amin")


@torch.no_grad()
def _visible_faces(
    uv: Tensor, z: Tensor, faces: Tensor, height: int, width: int, near: float, min_area: float,
    eps_px: float, max_pairs: int,
) -> Tensor:
    """Global id ``b * F + f`` of the nearest face per pixel, ``(B * H * W,)``, ``-1`` where none.

    Triangles whose pixel bounding box is at most 2 x 2 (nearly all of a height field) are tested against a fixed
    2 x 2 block; larger ones enumerate their boxes with ``repeat_interleave``. Both run in chunks of ``max_pairs``.
    """
    sizes, dev = (faces.shape[0], height, width), z.device
    vid = (faces.T.unsqueeze(1) + torch.arange(z.shape[0], device=dev).view(1, -1, 1) * z.shape[1]).flatten(1)
    u, v, tz = uv[..., 0].reshape(-1)[vid], uv[..., 1].reshape(-1)[vid], z.reshape(-1)[vid]  # (3, B * F)
    x0, y0 = torch.ceil(u.amin(0) - eps_px).clamp_min(0), torch.ceil(v.amin(0) - eps_px).clamp_min(0)
    nx = (torch.floor(u.amax(0) + eps_px).clamp_max(width - 1) - x0 + 1).long()
    ny = (torch.floor(v.amax(0) + eps_px).clamp_max(height - 1) - y0 + 1).long()
    area = (u[1] - u[0]) * (v[2] - v[0]) - (v[1] - v[0]) * (u[2] - u[0])
    ok = (tz.amin(0) > near) & torch.isfinite(area) & (area.abs() > min_area) & (nx > 0) & (ny > 0)
    eqs = _face_equations(u, v, 1.0 / tz, x0, y0)
    x0, y0 = x0.long(), y0.long()
    zbuf = torch.full((z.shape[0] * height * width,), _NO_FACE, dtype=torch.int64, device=dev)
    small = ok & (nx <= 2) & (ny <= 2)
    wide, tall = nx == 2, ny == 2
    step = max(max_pairs // 4, 1)
    for lo in range(0, small.numel(), step):
        sl = slice(lo, lo + step)
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            fits = small[sl] & (wide[sl] if dx else True) & (tall[sl] if dy else True)
            k = (_inside(_evaluate(eqs[:3], dx, dy, sl), eps_px) & fits).nonzero().squeeze(1) + lo
            inv_z = _evaluate(eqs[3:], dx, dy, k)[0]
            _splat(zbuf, inv_z, x0[k] + dx, y0[k] + dy, k, sizes)
    large = (ok & ~small).nonzero().squeeze(1)
    counts = nx[large] * ny[large]
    ends, start = torch.cumsum(counts, 0), 0
    while start < large.numel():
        base = int(ends[start - 1]) if start else 0
        stop = max(int(torch.searchsorted(ends, base + max_pairs, right=True)), start + 1)
        idx, cnt = large[start:stop], counts[start:stop]
        rep = torch.repeat_interleave(idx, cnt)
        local = torch.arange(rep.numel(), device=dev) - (torch.cumsum(cnt, 0) - cnt).repeat_interleave(cnt)
        dx, dy = local % nx[rep], local // nx[rep]
        vals = _evaluate(eqs, dx, dy, rep)
        m = _inside(vals, eps_px)
        _splat(zbuf, vals[3][m], x0[rep][m] + dx[m], y0[rep][m] + dy[m], rep[m], sizes)
        start = stop
    return torch.where(zbuf == _NO_FACE, -1, zbuf & 0xFFFFFFFF)


def rasterize(
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
    max_pairs: int = 1 << 22,
) -> Fragments:
    """Rasterise camera-frame triangle meshes into depth, face index and barycentric maps (z-buffer, nearest wins).

    Args:
        verts: ``(B, N, 3)`` camera-frame vertices (x right, y down, z forward).
        faces: ``(F, 3)`` int64 vertex indices shared by the batch.
        K: ``(3, 3)`` intrinsics; pixel ``(i, j)`` samples ``(u, v) = (j, i)``.
        height: output height ``H``.
        width: output width ``W``.
        far: depth written where no face is visible.
        near: faces with a vertex at ``z <= near`` are skipped.
        min_area: faces whose doubled screen area (pixels^2) is below this are skipped.
        eps_px: inside-test tolerance in pixels.
        max_pairs: most (triangle, pixel) candidate pairs held in memory at once.
    Returns:
        :class:`Fragments` with ``(B, H, W)`` maps; ``depth`` and ``bary`` are differentiable w.r.t. ``verts``.

    >>> from methods.renderer.camera import depth_to_points, intrinsics
    >>> verts = depth_to_points(torch.ones(1, 4, 4), intrinsics(4)).view(1, -1, 3)
    >>> frags = rasterize(verts, grid_faces(4, 4), intrinsics(4), 4, 4)
    >>> frags.depth.shape, bool(frags.mask.all()), round(float(frags.depth.mean()), 4)
    (torch.Size([1, 4, 4]), True, 1.0)
    """
    check_shape(verts, "B,N,3", "verts")
    check_shape(faces, "F,3", "faces")
    check_shape(K, "3,3", "K")
    if verts.shape[0] * faces.shape[0] >= 2**31:
        raise ValueError("batch * faces must stay below 2**31 (face ids are packed into 32 bits)")
    faces = faces.to(device=verts.device, dtype=torch.int64)
    uv, z = points_to_pixels(verts, K), verts[..., 2]
    face_g = _visible_faces(uv.detach(), z.detach(), faces, height, width, near, min_area, eps_px, max_pairs)
    covered = (face_g >= 0).nonzero().squeeze(1)
    g = face_g[covered]
    batch, face = g // faces.shape[0], g % faces.shape[0]
    vid = faces[face] + batch.unsqueeze(1) * verts.shape[1]
    p = torch.stack([covered % width, (covered // width) % height], dim=-1).to(uv.dtype)
    w, _ = _barycentric(uv.reshape(-1, 2)[vid], p)
    q = w / z.reshape(-1)[vid]
    inv_z = q.sum(-1, keepdim=True)
    depth = torch.full_like(face_g, far, dtype=verts.dtype).index_put((covered,), (1.0 / inv_z).squeeze(1))
    bary = verts.new_zeros(face_g.shape[0], 3).index_put((covered,), q / inv_z)
    shape = (verts.shape[0], height, width)
    face_index = torch.where(face_g >= 0, face_g % faces.shape[0], -1)
    return Fragments(face_index.view(shape), depth.view(shape), bary.view(*shape, 3))


def interpolate_attributes(frags: Fragments, faces: Tensor, attributes: Tensor, background: float = 0.0) -> Tensor:
    """Interpolate per-vertex attributes with the (perspective-correct) barycentrics of :class:`Fragments`.

    Args:
        frags: output of :func:`rasterize` for the same ``faces``.
        faces: ``(F, 3)``.
        attributes: ``(B, N, C)`` per-vertex values.
        background: value written where no face is visible.
    Returns:
        ``(B, H, W, C)`` interpolated attributes.

    >>> from methods.renderer.camera import depth_to_points, intrinsics
    >>> verts = depth_to_points(torch.ones(1, 3, 3), intrinsics(3)).view(1, -1, 3)
    >>> frags = rasterize(verts, grid_faces(3, 3), intrinsics(3), 3, 3)
    >>> interpolate_attributes(frags, grid_faces(3, 3), torch.ones(1, 9, 2)).shape
    torch.Size([1, 3, 3, 2])
    """
    check_shape(faces, "F,3", "faces")
    check_shape(attributes, "B,N,C", "attributes")
    b, n, c = attributes.shape
    faces = faces.to(attributes.device)
    offset = torch.arange(b, device=attributes.device).view(b, 1, 1, 1) * n
    vid = faces[frags.face_index.clamp_min(0)] + offset  # (B, H, W, 3)
    values = (attributes.reshape(-1, c)[vid] * frags.bary.unsqueeze(-1)).sum(-2)
    return torch.where(frags.mask.unsqueeze(-1), values, torch.full_like(values, background))
