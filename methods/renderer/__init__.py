"""Differentiable height-field renderer, camera geometry and mesh export shared by every method.

Modules: ``camera`` (intrinsics, view transforms, projection, normals), ``shading`` (depth range, border clamp,
Lambertian shading), ``raster`` (vectorised z-buffer rasteriser), ``reference`` (naive oracle rasteriser, tests
only), ``warp`` (canonical <-> view warps, ``Renderer`` settings, visualisation sweeps) and ``mesh`` (OBJ/PLY/GLB
export through trimesh, imported lazily).
"""

from .camera import (
    canon_to_view,
    check_shape,
    depth_to_normals,
    depth_to_points,
    euler_to_rotation,
    intrinsics,
    pixel_grid,
    pixels_to_grid,
    points_to_grid,
    points_to_pixels,
    rotation_to_euler,
    transform_to_view,
    view_to_canon,
    view_to_transform,
)
from .mesh import depth_to_mesh, export_mesh
from .raster import Fragments, grid_faces, interpolate_attributes, rasterize
from .shading import albedo_to_texture, clamp_border_depth, light_to_shading, raw_to_depth
from .warp import (
    Renderer,
    RenderOutput,
    ViewSweep,
    canon_to_view_grid,
    rasterize_canon,
    render_given_view,
    render_mesh,
    render_view,
    sample_texture,
    sweep_views,
    view_to_canon_grid,
    view_valid_mask,
    warp_canon_depth,
)

__all__ = [
    "check_shape", "intrinsics", "pixel_grid", "depth_to_points", "depth_to_normals", "euler_to_rotation",
    "rotation_to_euler", "view_to_transform", "transform_to_view", "canon_to_view", "view_to_canon",
    "points_to_pixels", "pixels_to_grid", "points_to_grid",
    "raw_to_depth", "clamp_border_depth", "light_to_shading", "albedo_to_texture",
    "Fragments", "grid_faces", "rasterize", "interpolate_attributes",
    "Renderer", "RenderOutput", "ViewSweep", "rasterize_canon", "warp_canon_depth", "view_valid_mask",
    "view_to_canon_grid", "canon_to_view_grid", "sample_texture", "render_given_view", "render_mesh",
    "sweep_views", "render_view",
    "depth_to_mesh", "export_mesh",
]
