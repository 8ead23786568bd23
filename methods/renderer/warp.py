"""Warps between the canonical frame and a view, shared by every method (``method.md`` section 2).

The canonical depth map is unprojected with ``K`` into an ``H x W`` vertex grid, moved into the view frame with
``P' = R (P - c) + c + t`` and rasterised (:func:`warp_canon_depth`). Textures never go through the rasteriser:
the rendered view depth is unprojected, moved back to the canonical frame and projected into the canonical image,
which gives a ``grid_sample`` grid (:func:`view_to_canon_grid`).

Choices (documented deviations from the original neural_renderer path):

* **Sampling positions.** By default the rasteriser samples pixel centres at integer coordinates, the convention of
  :func:`methods.renderer.camera.points_to_grid` and ``grid_sample(align_corners=True)``, without supersampling.
  The original rasterised at 2x and averaged 2 x 2 sub-samples placed at ``j + 0.25`` and ``j + 0.75``, half a pixel
  off the grid-sample convention. ``Renderer(supersample=2, pixel_offset=0.5)`` reproduces that for parity studies
  (the inverse warp still unprojects pixel ``j`` at ``u = j``, as the original did).
* **Background and clamp.** Uncovered pixels get ``far = 100`` (the original ``rasterize_depth`` value); the depth
  is then clamped to ``[min - m, max + m]`` with ``m = (max - min) / 2`` (``[0.8, 1.2]``) and a view pixel is valid
  where the clamped depth is below ``max + m``. With supersampling, one background sub-sample invalidates a pixel.
* **Textured mesh rendering** (:func:`render_mesh`, visualisation only) interpolates per-vertex colours
  perspective-correctly over the grid mesh with a white background, instead of neural_renderer's 2 x 2 x 2 texture
  cubes per face.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .camera import (
    canon_to_view,
    check_shape,
    depth_to_points,
    intrinsics,
    points_to_grid,
    view_to_canon,
    view_to_transform,
)
from .raster import Fragments, grid_faces, interpolate_attributes, rasterize

__all__ = [
    "Renderer",
    "RenderOutput",
    "ViewSweep",
    "rasterize_canon",
    "warp_canon_depth",
    "view_valid_mask",
    "view_normals",
    "view_to_canon_grid",
    "canon_to_view_grid",
    "sample_texture",
    "render_given_view",
    "render_mesh",
    "sweep_views",
    "render_view",
]


@dataclass(frozen=True)
class Renderer:
    """Renderer settings; defaults are GAN2Shape's.

    Attributes:
        fov_deg: full field of view of the pinhole camera.
        min_depth, max_depth: canonical depth range; the view depth is clamped to ``[min - m, max + m]``,
            ``m = (max - min) / 2``.
        rot_center_depth: depth of the rotation centre ``c = (0, 0, rot_center_depth)``.
        rot_range_deg, xy_range, z_range: scales of the 6-d view vector (angles, x/y and z translation).
        far: depth written where no surface is visible (before the clamp).
        supersample: rasterise at ``supersample`` times the resolution and average (1 = off).
        pixel_offset: rasterised pixel ``j`` samples ``u = j + pixel_offset`` (0.5 reproduces the original).
        max_pairs: memory bound of the rasteriser (candidate triangle/pixel pairs per chunk).
    """

    fov_deg: float = 10.0
    min_depth: float = 0.9
    max_depth: float = 1.1
    rot_center_depth: float = 1.0
    rot_range_deg: float = 60.0
    xy_range: float = 0.1
    z_range: float = 0.0
    far: float = 100.0
    supersample: int = 1
    pixel_offset: float = 0.0
    max_pairs: int = 1 << 22

    @property
    def depth_bounds(self) -> tuple[float, float]:
        """``(min - m, max + m)``, the clamp range of rendered depth."""
        margin = (self.max_depth - self.min_depth) / 2
        return self.min_depth - margin, self.max_depth + margin

    def intrinsics(self, size: int, like: Tensor) -> Tensor:
        """``(3, 3)`` intrinsics for a ``size x size`` image, on the device and dtype of ``like``."""
        return intrinsics(size, self.fov_deg, dtype=like.dtype, device=like.device)

    def transform(self, view: Tensor) -> tuple[Tensor, Tensor]:
        """``(R, t)`` of a ``(B, 6)`` view vector."""
        return view_to_transform(view, self.z_range, rot_range_deg=self.rot_range_deg, xy_range=self.xy_range)


@dataclass(frozen=True)
class RenderOutput:
    """Result of :func:`render_given_view`: ``image`` ``(B, C, H, W)``, ``depth`` ``(B, H, W)`` view depth (clamped),
    ``valid`` ``(B, 1, H, W)`` float mask of covered pixels, ``mask`` ``(B, 1, H, W)`` warped input mask or None."""

    image: Tensor
    depth: Tensor
    valid: Tensor
    mask: Tensor | None = None


@dataclass(frozen=True)
class ViewSweep:
    """Result of :func:`render_view`: ``views`` ``(T, 6)``; ``warp``, ``mesh`` ``(B, T, C, H, W)``; ``valid``
    ``(B, T, 1, H, W)`` coverage of the warp path."""

    views: Tensor
    warp: Tensor
    mesh: Tensor
    valid: Tensor


def _square_size(depth: Tensor) -> int:
    check_shape(depth, "B,H,W", "depth")
    if depth.shape[1] != depth.shape[2]:
        raise ValueError(f"depth must be square, got {tuple(depth.shape)}")
    return depth.shape[-1]


def _camera(depth: Tensor, view: Tensor, cfg: Renderer) -> tuple[int, Tensor, Tensor, Tensor]:
    """Checked side ``S`` of a ``(B, S, S)`` depth map, its intrinsics and the ``(R, t)`` of a ``(B, 6)`` view."""
    size = _square_size(depth)
    check_shape(view, "B,6", "view")
    R, t = cfg.transform(view.to(depth))
    return size, cfg.intrinsics(size, depth), R, t


def rasterize_canon(canon_depth: Tensor, view: Tensor, cfg: Renderer = Renderer()) -> Fragments:
    """Rasterise the canonical depth's grid mesh seen from ``view`` at ``supersample`` times the resolution.

    Args:
        canon_depth: ``(B, S, S)``.
        view: ``(B, 6)``.
        cfg: settings.
    Returns:
        :class:`Fragments` of size ``(B, sS, sS)`` with ``s = cfg.supersample``; background depth ``cfg.far``.

    >>> rasterize_canon(torch.ones(2, 8, 8), torch.zeros(2, 6)).depth.shape
    torch.Size([2, 8, 8])
    """
    size, K, R, t = _camera(canon_depth, view, cfg)
    verts = canon_to_view(depth_to_points(canon_depth, K), R, t, cfg.rot_center_depth).flatten(1, 2)
    s, off = cfg.supersample, cfg.pixel_offset
    K_raster = K.clone()
    K_raster[:2, :2] *= s
    K_raster[:2, 2] = s * (K[:2, 2] - off + 0.5) - 0.5
    faces = grid_faces(size, size, device=canon_depth.device)
    return rasterize(verts, faces, K_raster, s * size, s * size, far=cfg.far, max_pairs=cfg.max_pairs)


def warp_canon_depth(canon_depth: Tensor, view: Tensor, cfg: Renderer = Renderer()) -> Tensor:
    """Depth of the canonical surface seen from ``view`` (z-buffer, perspective-correct, clamped).

    Background pixels get ``cfg.far`` before the clamp to :attr:`Renderer.depth_bounds`, so they end at ``max + m``.
    Differentiable w.r.t. ``canon_depth`` and ``view`` (not through visibility).

    Args:
        canon_depth: ``(B, S, S)`` canonical depth.
        view: ``(B, 6)`` view vector.
        cfg: settings.
    Returns:
        ``(B, S, S)`` view depth in ``[min - m, max + m]``.

    >>> warp_canon_depth(torch.ones(1, 8, 8), torch.zeros(1, 6))[0, 4].tolist() == [1.0] * 8
    True
    """
    depth = rasterize_canon(canon_depth, view, cfg).depth
    if cfg.supersample > 1:
        depth = F.avg_pool2d(depth.unsqueeze(1), cfg.supersample).squeeze(1)
    return depth.clamp(*cfg.depth_bounds)


def view_normals(normal: Tensor, view: Tensor, cfg: Renderer = Renderer()) -> Tensor:
    """Canonical normals ``(B or 1, S, S, 3)`` rotated into the camera frame of ``view`` ``(B, 6)``: what a light
    fixed to the camera shades. Returns ``(B, S, S, 3)``.

    >>> n = torch.tensor([0.0, 0.0, 1.0]).expand(1, 2, 2, 3)
    >>> view_normals(n, torch.zeros(1, 6))[0, 0, 0].tolist()
    [0.0, 0.0, 1.0]
    """
    rotation = cfg.transform(view)[0]
    return torch.einsum("nij,nhwj->nhwi", rotation, normal.expand(view.shape[0], -1, -1, -1))


def view_valid_mask(view_depth: Tensor, cfg: Renderer = Renderer()) -> Tensor:
    """``(B, 1, H, W)`` float mask, 1 where the clamped view depth ``(B, H, W)`` is below ``max + m``.

    >>> view_valid_mask(torch.tensor([[[1.0, 1.2]]])).tolist()
    [[[[1.0, 0.0]]]]
    """
    check_shape(view_depth, "B,H,W", "view_depth")
    return (view_depth < cfg.depth_bounds[1]).to(view_depth.dtype).unsqueeze(1)


def view_to_canon_grid(view_depth: Tensor, view: Tensor, cfg: Renderer = Renderer()) -> Tensor:
    """Inverse-warp grid: where each view pixel lands in the canonical image.

    Each view pixel is unprojected with its rendered depth, moved with ``P = R^T (P' - t - c) + c`` and projected
    into the canonical image; ``grid_sample(canon_image, grid, align_corners=True)`` then renders the view.

    Args:
        view_depth: ``(B, S, S)`` rendered view depth.
        view: ``(B, 6)``.
        cfg: settings.
    Returns:
        ``(B, S, S, 2)`` normalised ``(x, y)`` coordinates in the canonical image.

    >>> g = view_to_canon_grid(torch.ones(1, 5, 5), torch.zeros(1, 6))
    >>> g[0, 0, 0].round(decimals=4).tolist(), g[0, 4, 4].round(decimals=4).tolist()
    ([-1.0, -1.0], [1.0, 1.0])
    """
    size, K, R, t = _camera(view_depth, view, cfg)
    points = view_to_canon(depth_to_points(view_depth, K), R, t, cfg.rot_center_depth)
    return points_to_grid(points, K, size, size)


def canon_to_view_grid(canon_depth: Tensor, view: Tensor, cfg: Renderer = Renderer()) -> Tensor:
    """Forward grid: where each canonical pixel lands in the view image.

    Sampling an image (e.g. an object mask) given in the view with this grid brings it into the canonical frame.

    Args:
        canon_depth: ``(B, S, S)``.
        view: ``(B, 6)``.
        cfg: settings.
    Returns:
        ``(B, S, S, 2)`` normalised ``(x, y)`` coordinates in the view image.

    >>> canon_to_view_grid(torch.ones(1, 5, 5), torch.zeros(1, 6))[0, 2, 2].abs().max().item() < 1e-6
    True
    """
    size, K, R, t = _camera(canon_depth, view, cfg)
    points = canon_to_view(depth_to_points(canon_depth, K), R, t, cfg.rot_center_depth)
    return points_to_grid(points, K, size, size)


def sample_texture(image: Tensor, grid: Tensor, mode: str = "bilinear") -> Tensor:
    """``grid_sample`` with zero padding and ``align_corners=True``; bilinear results are clamped to [-1, 1].

    Args:
        image: ``(B, C, H, W)``.
        grid: ``(B, H', W', 2)``.
        mode: ``"bilinear"`` (textures) or ``"nearest"`` (masks, not clamped).
    Returns:
        ``(B, C, H', W')``.

    >>> sample_texture(torch.ones(1, 3, 4, 4), torch.zeros(1, 2, 2, 2)).shape
    torch.Size([1, 3, 2, 2])
    """
    check_shape(image, "B,C,H,W", "image")
    check_shape(grid, "B,H,W,2", "grid")
    out = F.grid_sample(image, grid.to(image), mode=mode, padding_mode="zeros", align_corners=True)
    return out.clamp(-1, 1) if mode == "bilinear" else out


def render_mesh(
    texture: Tensor, canon_depth: Tensor, view: Tensor, cfg: Renderer = Renderer(), background: float = 1.0
) -> Tensor:
    """Render the textured grid mesh from ``view`` (per-vertex colours, perspective-correct; visualisation).

    Args:
        texture: ``(B, C, S, S)`` canonical texture in [-1, 1]; vertex ``(i, j)`` takes pixel ``(i, j)``.
        canon_depth: ``(B, S, S)``.
        view: ``(B, 6)``.
        cfg: settings.
        background: value of uncovered pixels (1 = white).
    Returns:
        ``(B, C, S, S)`` image.

    >>> render_mesh(torch.zeros(1, 3, 8, 8), torch.ones(1, 8, 8), torch.zeros(1, 6)).shape
    torch.Size([1, 3, 8, 8])
    """
    check_shape(texture, "B,C,H,W", "texture")
    size = _square_size(canon_depth)
    frags = rasterize_canon(canon_depth, view, cfg)
    colours = texture.flatten(2).transpose(1, 2)
    faces = grid_faces(size, size, device=texture.device)
    image = interpolate_attributes(frags, faces, colours, background).permute(0, 3, 1, 2)
    return F.avg_pool2d(image, cfg.supersample) if cfg.supersample > 1 else image


def render_given_view(
    texture: Tensor,
    canon_depth: Tensor,
    view: Tensor,
    cfg: Renderer = Renderer(),
    mask: Tensor | None = None,
    backend: str = "warp",
) -> RenderOutput:
    """Render a canonical texture and depth under a given view.

    ``backend="warp"`` is the training path: :func:`warp_canon_depth`, then :func:`view_to_canon_grid` and bilinear
    sampling; an optional canonical ``mask`` is warped with nearest sampling. ``backend="mesh"`` uses
    :func:`render_mesh` for the image (white background); depth and validity still come from the warp path.

    Args:
        texture: ``(B, C, S, S)`` in [-1, 1].
        canon_depth: ``(B, S, S)``.
        view: ``(B, 6)``.
        cfg: settings.
        mask: optional ``(B, 1, S, S)`` canonical-frame mask.
        backend: ``"warp"`` or ``"mesh"``.
    Returns:
        :class:`RenderOutput`.

    >>> out = render_given_view(torch.zeros(1, 3, 8, 8), torch.ones(1, 8, 8), torch.zeros(1, 6))
    >>> out.image.shape, float(out.valid.mean())
    (torch.Size([1, 3, 8, 8]), 1.0)
    """
    check_shape(texture, "B,C,H,W", "texture")
    if backend not in ("warp", "mesh"):
        raise ValueError(f"backend must be 'warp' or 'mesh', got {backend!r}")
    depth = warp_canon_depth(canon_depth, view, cfg)
    grid = view_to_canon_grid(depth, view, cfg)
    if backend == "warp":
        image = sample_texture(texture, grid)
    else:
        image = render_mesh(texture, canon_depth, view, cfg)
    warped_mask = None if mask is None else sample_texture(mask, grid, mode="nearest")
    return RenderOutput(image, depth, view_valid_mask(depth, cfg), warped_mask)


def sweep_views(
    yaw_max_deg: float = 70.0, pitch_max_deg: float = 20.0, n_yaw: int = 9, n_pitch: int = 5,
    cfg: Renderer = Renderer(), *, dtype=torch.float32, device=None,
) -> Tensor:
    """View vectors of the visualisation sweep: ``n_yaw`` yaws in ``[-yaw_max, yaw_max]`` then ``n_pitch`` pitches.

    Returns:
        ``(n_yaw + n_pitch, 6)`` views (rotations about the canonical frame, no translation).

    >>> v = sweep_views()
    >>> v.shape, [round(x * 60) for x in v[:9:2, 1].tolist()], [round(x * 60) for x in v[9:, 0].tolist()]
    (torch.Size([14, 6]), [-70, -35, 0, 35, 70], [-20, -10, 0, 10, 20])
    """
    yaw = torch.linspace(-yaw_max_deg, yaw_max_deg, n_yaw, dtype=dtype, device=device)
    pitch = torch.linspace(-pitch_max_deg, pitch_max_deg, n_pitch, dtype=dtype, device=device)
    views = torch.zeros(n_yaw + n_pitch, 6, dtype=dtype, device=device)
    views[:n_yaw, 1] = yaw / cfg.rot_range_deg
    views[n_yaw:, 0] = pitch / cfg.rot_range_deg
    return views


@torch.no_grad()
def render_view(
    texture: Tensor, canon_depth: Tensor, cfg: Renderer = Renderer(), yaw_max_deg: float = 70.0,
    pitch_max_deg: float = 20.0, n_yaw: int = 9, n_pitch: int = 5,
) -> ViewSweep:
    """Render the yaw-then-pitch sweep (14 frames by default; ``yaw_max_deg=45`` for cars, churches, horses).

    Each frame is rendered through both the warp path and the textured mesh (white background).

    Args:
        texture: ``(B, C, S, S)`` in [-1, 1].
        canon_depth: ``(B, S, S)``.
        cfg: settings.
    Returns:
        :class:`ViewSweep`.

    >>> render_view(torch.zeros(1, 3, 8, 8), torch.ones(1, 8, 8)).mesh.shape
    torch.Size([1, 14, 3, 8, 8])
    """
    check_shape(texture, "B,C,H,W", "texture")
    views = sweep_views(yaw_max_deg, pitch_max_deg, n_yaw, n_pitch, cfg, dtype=texture.dtype, device=texture.device)
    warp, mesh, valid = [], [], []
    for view in views:
        out = render_given_view(texture, canon_depth, view.expand(texture.shape[0], 6), cfg)
        warp.append(out.image)
        valid.append(out.valid)
        mesh.append(render_mesh(texture, canon_depth, view.expand(texture.shape[0], 6), cfg))
    return ViewSweep(views, torch.stack(warp, 1), torch.stack(mesh, 1), torch.stack(valid, 1))
