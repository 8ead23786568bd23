"""Pinhole camera geometry shared by every method, the metrics and the dataset checks.

Conventions (``method.md`` section 2): images are ``(B, C, H, W)`` in [-1, 1]; depth maps are ``(B, H, W)``;
camera axes are x right, y down (row index), z forward; pixel centres sit at integer coordinates; the principal
point is the image centre ``(S - 1) / 2``; normalised grids follow ``grid_sample(..., align_corners=True)``.
All functions are pure, batched and allocate on the device and dtype of their inputs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "check_shape",
    "intrinsics",
    "pixel_grid",
    "depth_to_points",
    "depth_to_normals",
    "euler_to_rotation",
    "rotation_to_euler",
    "view_to_transform",
    "transform_to_view",
    "canon_to_view",
    "view_to_canon",
    "points_to_pixels",
    "pixels_to_grid",
    "points_to_grid",
]


def check_shape(x: Tensor, shape: str, name: str = "tensor") -> None:
    """Raise ``ValueError`` unless ``x`` matches ``shape`` (e.g. ``"B,H,W"``; digits are exact sizes, letters free).

    One ``*`` entry matches any number of dimensions, e.g. ``"B,*,3"`` accepts ``(B, 3)``, ``(B, N, 3)`` and
    ``(B, H, W, 3)``.

    >>> check_shape(torch.zeros(2, 3), "B,3")
    >>> check_shape(torch.zeros(2, 4, 5, 3), "B,*,3")
    """
    dims = [d.strip() for d in shape.split(",")]
    if "*" in dims:  # "*" stands for any number (zero included) of leading or middle dimensions
        star = dims.index("*")
        head, tail = dims[:star], dims[star + 1 :]
        ok = x.dim() >= len(head) + len(tail)
        sizes = list(x.shape[: len(head)]) + (list(x.shape[x.dim() - len(tail) :]) if tail else [])
        dims = head + tail
    else:
        ok, sizes = x.dim() == len(dims), list(x.shape)
    if not ok or any(d.isdigit() and int(d) != s for d, s in zip(dims, sizes)):
        raise ValueError(f"{name} must have shape ({shape}), got {tuple(x.shape)}")


def intrinsics(image_size: int, fov_deg: float = 10.0, *, dtype=torch.float32, device=None) -> Tensor:
    """Intrinsic matrix ``K`` (3, 3) for a square image of side ``image_size`` and full field of view ``fov_deg``.

    ``f = ((S - 1) / 2) / tan(fov / 2)`` and ``c = (S - 1) / 2``, so ``f = 360.05`` at S = 64.

    >>> round(float(intrinsics(64)[0, 0]), 2)
    360.05
    """
    c = (image_size - 1) / 2.0
    f = c / math.tan(math.radians(fov_deg) / 2.0)
    return torch.tensor([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]], dtype=dtype, device=device)


def pixel_grid(height: int, width: int, *, dtype=torch.float32, device=None) -> Tensor:
    """Homogeneous pixel coordinates ``(H, W, 3)`` holding ``(u = column, v = row, 1)``.

    >>> pixel_grid(2, 3)[1, 2].tolist()
    [2.0, 1.0, 1.0]
    """
    v, u = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device),
        torch.arange(width, dtype=dtype, device=device),
        indexing="ij",
    )
    return torch.stack([u, v, torch.ones_like(u)], dim=-1)


def depth_to_points(depth: Tensor, K: Tensor) -> Tensor:
    """Unproject a depth map: ``P(u, v) = d(u, v) K^-1 [u, v, 1]^T``.

    Args:
        depth: ``(B, H, W)`` depth along the optical axis.
        K: ``(3, 3)`` intrinsics.
    Returns:
        ``(B, H, W, 3)`` camera-frame points.

    >>> depth_to_points(torch.ones(1, 64, 64), intrinsics(64)).shape
    torch.Size([1, 64, 64, 3])
    """
    check_shape(depth, "B,H,W", "depth")
    check_shape(K, "3,3", "K")
    _, h, w = depth.shape
    rays = pixel_grid(h, w, dtype=depth.dtype, device=depth.device) @ torch.linalg.inv(K.to(depth)).T
    return depth.unsqueeze(-1) * rays


def depth_to_normals(depth: Tensor, K: Tensor, eps: float = 1e-7) -> Tensor:
    """Surface normals from a depth map by central differences of the unprojected points.

    ``n = t_u x t_v / (|t_u x t_v| + eps)`` with ``t_u = P[y, x+1] - P[y, x-1]`` and ``t_v = P[y+1, x] - P[y-1, x]``;
    the 1-pixel border is ``(0, 0, 1)``. A fronto-parallel surface gets ``(0, 0, +1)`` (pointing away from the
    camera, the hemisphere of the light vector). ``eps = 1e-7`` reproduces the original code, whose normals are
    about 0.2-0.3 % shorter than unit length at these scales; ``eps = 0`` gives exactly unit normals.

    Args:
        depth: ``(B, H, W)``.
        K: ``(3, 3)``.
    Returns:
        ``(B, H, W, 3)`` normals.

    >>> n = depth_to_normals(torch.ones(1, 8, 8), intrinsics(8), eps=0.0)
    >>> n[0, 4, 4].tolist()
    [0.0, 0.0, 1.0]
    """
    points = depth_to_points(depth, K)
    t_u = points[:, 1:-1, 2:] - points[:, 1:-1, :-2]
    t_v = points[:, 2:, 1:-1] - points[:, :-2, 1:-1]
    n = torch.cross(t_u, t_v, dim=-1)
    norm = n.norm(dim=-1, keepdim=True)
    n = n / (norm + eps) if eps > 0 else n / norm.clamp_min(torch.finfo(n.dtype).tiny)
    z_axis = torch.tensor([0.0, 0.0, 1.0], dtype=n.dtype, device=n.device)
    return torch.nn.functional.pad(n - z_axis, (0, 0, 1, 1, 1, 1)) + z_axis


def euler_to_rotation(angles: Tensor) -> Tensor:
    """Rotation matrices ``R = Rz(a2) Ry(a1) Rx(a0)`` from angles in radians (right-handed elementary rotations).

    Args:
        angles: ``(B, 3)`` angles about x (pitch), y (yaw) and z (roll), radians.
    Returns:
        ``(B, 3, 3)`` rotation matrices.

    >>> euler_to_rotation(torch.tensor([[0.0, math.pi / 2, 0.0]])).round().abs()[0, :, 2].tolist()
    [1.0, 0.0, 0.0]
    """
    check_shape(angles, "B,3", "angles")
    cos, sin = angles.cos(), angles.sin()
    one, zero = torch.ones_like(angles[:, 0]), torch.zeros_like(angles[:, 0])

    def mat(*rows: Tensor) -> Tensor:
        return torch.stack(rows, dim=-1).view(-1, 3, 3)

    (cx, cy, cz), (sx, sy, sz) = cos.unbind(1), sin.unbind(1)
    rot_x = mat(one, zero, zero, zero, cx, -sx, zero, sx, cx)
    rot_y = mat(cy, zero, sy, zero, one, zero, -sy, zero, cy)
    rot_z = mat(cz, -sz, zero, sz, cz, zero, zero, zero, one)
    return rot_z @ rot_y @ rot_x


def rotation_to_euler(R: Tensor) -> Tensor:
    """Inverse of :func:`euler_to_rotation`: angles ``(a0, a1, a2)`` in radians with ``a1`` in ``[-pi/2, pi/2]``.

    Uses ``R[2,0] = -sin a1``, ``R[2,1] / R[2,2] = tan a0`` and ``R[1,0] / R[0,0] = tan a2``.

    Args:
        R: ``(B, 3, 3)`` rotation matrices.
    Returns:
        ``(B, 3)`` angles about x, y, z in radians.

    >>> a = torch.tensor([[0.1, -0.2, 0.3]])
    >>> torch.allclose(rotation_to_euler(euler_to_rotation(a)), a)
    True
    """
    check_shape(R, "B,3,3", "R")
    pitch = torch.atan2(R[:, 2, 1], R[:, 2, 2])
    yaw = torch.atan2(-R[:, 2, 0], torch.hypot(R[:, 2, 1], R[:, 2, 2]))
    roll = torch.atan2(R[:, 1, 0], R[:, 0, 0])
    return torch.stack([pitch, yaw, roll], dim=1)


def view_to_transform(
    view: Tensor, z_range: float = 0.0, *, rot_range_deg: float = 60.0, xy_range: float = 0.1
) -> tuple[Tensor, Tensor]:
    """Rigid transform ``(R, t)`` from the 6-d view vector of the view network.

    Angles are ``rot_range_deg * view[:, 0:3]`` (pitch about x, yaw about y, roll about z), ``R = Rz Ry Rx``, and
    ``t = (xy_range * view[:, 3], xy_range * view[:, 4], z_range * view[:, 5])``. GAN2Shape uses ``z_range = 0`` in
    every config (its code default is 0.1), so ``view[:, 5]`` is ignored unless ``z_range`` is set.

    Args:
        view: ``(B, 6)``.
        z_range: scale of the z translation.
    Returns:
        ``R`` ``(B, 3, 3)`` and ``t`` ``(B, 3)``.

    >>> R, t = view_to_transform(torch.tensor([[0.0, 0.5, 0.0, 1.0, -1.0, 1.0]]))
    >>> round(float(R[0, 0, 2]), 4), [round(x, 4) for x in t[0].tolist()]
    (0.5, [0.1, -0.1, 0.0])
    """
    check_shape(view, "B,6", "view")
    R = euler_to_rotation(view[:, :3] * math.radians(rot_range_deg))
    scale = torch.tensor([xy_range, xy_range, z_range], dtype=view.dtype, device=view.device)
    return R, view[:, 3:] * scale


def transform_to_view(
    R: Tensor, t: Tensor, z_range: float = 0.0, *, rot_range_deg: float = 60.0, xy_range: float = 0.1
) -> Tensor:
    """Inverse of :func:`view_to_transform`: the 6-d view vector of ``(R, t)``.

    With ``z_range = 0`` the z translation cannot be represented and ``view[:, 5]`` is set to 0.

    Args:
        R: ``(B, 3, 3)``.
        t: ``(B, 3)``.
    Returns:
        ``(B, 6)`` view vectors.

    >>> v = torch.tensor([[0.1, -0.3, 0.2, 0.5, -0.5, 0.0]])
    >>> torch.allclose(transform_to_view(*view_to_transform(v)), v, atol=1e-6)
    True
    """
    check_shape(R, "B,3,3", "R")
    check_shape(t, "B,3", "t")
    angles = rotation_to_euler(R) / math.radians(rot_range_deg)
    tz = t[:, 2:] / z_range if z_range != 0 else torch.zeros_like(t[:, 2:])
    return torch.cat([angles, t[:, :2] / xy_range, tz], dim=1)


def _center(points: Tensor, center_depth: float) -> Tensor:
    return torch.tensor([0.0, 0.0, center_depth], dtype=points.dtype, device=points.device)


def canon_to_view(points: Tensor, R: Tensor, t: Tensor, center_depth: float = 1.0) -> Tensor:
    """Move canonical-frame points into the view frame: ``P' = R (P - c) + c + t`` with ``c = (0, 0, center_depth)``.

    Args:
        points: ``(B, *, 3)`` canonical camera-frame points.
        R: ``(B, 3, 3)``.
        t: ``(B, 3)``.
    Returns:
        ``(B, *, 3)`` view-frame points.

    >>> R, t = view_to_transform(torch.tensor([[0.0, 1.5, 0.0, 0.0, 0.0, 0.0]]))
    >>> canon_to_view(torch.tensor([[[0.0, 0.0, 1.5]]]), R, t).round(decimals=4).tolist()
    [[[0.5, 0.0, 1.0]]]
    """
    check_shape(points, "B,*,3", "points")
    check_shape(R, "B,3,3", "R")
    check_shape(t, "B,3", "t")
    b, c = points.shape[0], _center(points, center_depth)
    flat = (points.reshape(b, -1, 3) - c) @ R.transpose(1, 2) + c + t[:, None]
    return flat.view(points.shape)


def view_to_canon(points: Tensor, R: Tensor, t: Tensor, center_depth: float = 1.0) -> Tensor:
    """Inverse of :func:`canon_to_view`: ``P = R^T (P' - t - c) + c``.

    Args:
        points: ``(B, *, 3)`` view-frame points.
        R: ``(B, 3, 3)``.
        t: ``(B, 3)``.
    Returns:
        ``(B, *, 3)`` canonical-frame points.

    >>> R, t = view_to_transform(torch.tensor([[0.2, -0.4, 0.1, 0.3, 0.2, 0.0]]))
    >>> p = torch.rand(1, 5, 3)
    >>> torch.allclose(view_to_canon(canon_to_view(p, R, t), R, t), p, atol=1e-6)
    True
    """
    check_shape(points, "B,*,3", "points")
    check_shape(R, "B,3,3", "R")
    check_shape(t, "B,3", "t")
    b, c = points.shape[0], _center(points, center_depth)
    flat = (points.reshape(b, -1, 3) - t[:, None] - c) @ R + c
    return flat.view(points.shape)


def points_to_pixels(points: Tensor, K: Tensor) -> Tensor:
    """Project camera-frame points to pixel coordinates: ``(u, v)`` = first two entries of ``K P / P_z``.

    Requires ``P_z > 0``; ``u`` is the column and ``v`` the row, pixel centres at integers.

    Args:
        points: ``(*, 3)``.
        K: ``(3, 3)``.
    Returns:
        ``(*, 2)`` pixel coordinates.

    >>> points_to_pixels(torch.tensor([[0.0, 0.0, 2.0]]), intrinsics(64)).tolist()
    [[31.5, 31.5]]
    """
    check_shape(points, "*,3", "points")
    check_shape(K, "3,3", "K")
    K = K.to(points)
    xy = points[..., :2] / points[..., 2:]
    return xy * torch.stack([K[0, 0], K[1, 1]]) + torch.stack([K[0, 2], K[1, 2]])


def pixels_to_grid(pixels: Tensor, height: int, width: int) -> Tensor:
    """Pixel coordinates to ``grid_sample`` coordinates with ``align_corners=True``: ``g = 2 (u, v) / (S - 1) - 1``.

    Args:
        pixels: ``(*, 2)`` as ``(u = column, v = row)``.
        height: image height ``H``; ``v`` is divided by ``H - 1``.
        width: image width ``W``; ``u`` is divided by ``W - 1``.
    Returns:
        ``(*, 2)`` normalised coordinates, ``-1`` and ``1`` at the outer pixel centres.

    >>> pixels_to_grid(torch.tensor([0.0, 63.0]), 64, 64).tolist()
    [-1.0, 1.0]
    """
    check_shape(pixels, "*,2", "pixels")
    size = torch.tensor([width - 1, height - 1], dtype=pixels.dtype, device=pixels.device)
    return 2.0 * pixels / size - 1.0


def points_to_grid(points: Tensor, K: Tensor, height: int, width: int) -> Tensor:
    """Project camera-frame points straight to ``grid_sample`` coordinates (``align_corners=True``).

    Args:
        points: ``(*, 3)`` with ``P_z > 0``.
        K: ``(3, 3)``.
        height: image height.
        width: image width.
    Returns:
        ``(*, 2)`` normalised ``(x, y)`` grid coordinates.

    >>> points = depth_to_points(torch.ones(1, 4, 4), intrinsics(4))
    >>> points_to_grid(points, intrinsics(4), 4, 4)[0, 0, 0].round(decimals=4).tolist()
    [-1.0, -1.0]
    """
    return pixels_to_grid(points_to_pixels(points, K), height, width)
