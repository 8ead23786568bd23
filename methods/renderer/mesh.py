"""Export a reconstruction (canonical depth + texture) as a textured mesh through trimesh (OBJ+MTL+PNG, PLY, GLB),
and picture a depth map's normals.

Coordinate convention of exported vertices: the canonical depth is unprojected with ``K`` into camera-frame points
``(x, y, z)`` (x right, y down, z forward), then written as ``scale * (x, -y, center_depth - z)`` with ``scale = 100``
as in the original code. That is a proper rotation by 180 degrees about x plus a shift, so handedness and winding
are preserved: y points up, the rotation centre ``(0, 0, center_depth)`` moves to the origin and the camera sits at
``(0, 0, 100 * center_depth)`` on the +z axis, looking down -z (the OpenGL/glTF viewer convention). Faces are the
renderer's grid faces ``(TL, BL, TR)``, ``(TR, BL, BR)``, whose counter-clockwise normals face that camera.
Vertex ``(row i, column j)`` gets ``uv = (j / (W - 1), 1 - i / (H - 1))``, i.e. exactly the centre of texture
pixel ``(i, j)`` with the OBJ/trimesh bottom-left uv origin.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from core.images import image_to_uint8, normal_map_to_uint8

from .camera import check_shape, depth_to_normals, depth_to_points, intrinsics
from .raster import grid_faces

__all__ = ["depth_to_mesh", "export_mesh", "normals_to_uint8"]

_FORMATS = ("obj", "ply", "glb")


def normals_to_uint8(depth: Tensor, fov_deg: float = 10.0) -> np.ndarray:
    """``(H, W)`` depth -> ``(H, W, 3)`` uint8 picture of its normals (x, y, z mapped from [-1, 1] to [0, 255]).

    >>> normals_to_uint8(torch.ones(4, 4))[1, 1].tolist()
    [128, 128, 255]
    """
    d = depth.detach().double().cpu()[None]
    return normal_map_to_uint8(depth_to_normals(d, intrinsics(d.shape[-1], fov_deg, dtype=torch.float64), eps=0.0)[0])


def depth_to_mesh(
    depth: Tensor, texture: Tensor, K: Tensor, *, scale: float = 100.0, center_depth: float = 1.0, name: str = "mesh"
):
    """Build a textured ``trimesh.Trimesh`` of the depth-map grid mesh (see the module docstring for coordinates).

    Args:
        depth: ``(H, W)`` canonical depth.
        texture: ``(3, H, W)`` canonical texture in [-1, 1].
        K: ``(3, 3)`` intrinsics.
        scale: multiplies the exported coordinates.
        center_depth: depth mapped to ``z = 0``.
        name: material name (also the texture file stem for OBJ).
    Returns:
        ``trimesh.Trimesh`` with ``H W`` vertices, ``2 (H - 1) (W - 1)`` faces and texture visuals.

    >>> from methods.renderer.camera import intrinsics
    >>> m = depth_to_mesh(torch.ones(4, 4), torch.zeros(3, 4, 4), intrinsics(4))
    >>> m.vertices.shape, m.faces.shape, bool((m.face_normals[:, 2] > 0.99).all())
    ((16, 3), (18, 3), True)
    """
    import trimesh
    from PIL import Image

    check_shape(depth, "H,W", "depth")
    check_shape(texture, "3,H,W", "texture")
    h, w = depth.shape
    points = depth_to_points(depth.detach()[None].double(), K.double())[0].reshape(-1, 3)
    verts = scale * torch.stack([points[:, 0], -points[:, 1], center_depth - points[:, 2]], dim=1)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    uv = torch.stack([cols.flatten() / (w - 1), 1 - rows.flatten() / (h - 1)], dim=1).double()
    white = [255, 255, 255, 255]
    material = trimesh.visual.material.SimpleMaterial(
        image=Image.fromarray(image_to_uint8(texture)), name=name, ambient=white, diffuse=white
    )
    visual = trimesh.visual.TextureVisuals(uv=uv.numpy(), material=material)
    return trimesh.Trimesh(verts.cpu().numpy(), grid_faces(h, w).numpy(), visual=visual, process=False)


def export_mesh(
    path: str | Path,
    depth: Tensor,
    texture: Tensor,
    K: Tensor,
    fmt: str | None = None,
    *,
    albedo: Tensor | None = None,
    normal: Tensor | None = None,
    scale: float = 100.0,
    center_depth: float = 1.0,
):
    """Write a reconstruction as a mesh file; the format comes from ``fmt`` or the extension of ``path``.

    * ``obj``: ``<stem>.obj`` + ``<stem>.mtl`` + ``<stem>.png`` (texture, uv-mapped).
    * ``ply``: binary PLY with per-vertex colours (PLY has no texture images).
    * ``glb``: binary glTF with the texture embedded as base colour.

    Optional ``albedo`` and ``normal`` maps (``(3, H, W)`` in [-1, 1]; for normals from
    :func:`~methods.renderer.camera.depth_to_normals` use ``n[0].permute(2, 0, 1)``) are written next to it as
    ``<stem>_albedo.png`` and ``<stem>_normal.png``.

    Args:
        path: output file.
        depth: ``(H, W)`` canonical depth.
        texture: ``(3, H, W)`` in [-1, 1].
        K: ``(3, 3)`` intrinsics.
        fmt: ``"obj"``, ``"ply"`` or ``"glb"``; None infers it from the extension.
    Returns:
        The exported ``trimesh.Trimesh``.

    >>> import tempfile, os
    >>> from methods.renderer.camera import intrinsics
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = export_mesh(os.path.join(d, "face.obj"), torch.ones(4, 4), torch.zeros(3, 4, 4), intrinsics(4))
    ...     sorted(os.listdir(d))
    ['face.mtl', 'face.obj', 'face.png']
    """
    import trimesh
    from PIL import Image

    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in _FORMATS:
        raise ValueError(f"mesh format must be one of {_FORMATS}, got {fmt!r}")
    mesh = depth_to_mesh(depth, texture, K, scale=scale, center_depth=center_depth, name=path.stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "obj":
        mesh.export(path, file_type="obj", mtl_name=f"{path.stem}.mtl")
    elif fmt == "ply":
        colours = np.concatenate([image_to_uint8(texture).reshape(-1, 3), np.full((mesh.vertices.shape[0], 1), 255)], 1)
        coloured = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=colours.astype(np.uint8), process=False)
        coloured.export(path, file_type="ply")
    else:
        mesh.export(path, file_type="glb")
    for label, image in (("albedo", albedo), ("normal", normal)):
        if image is not None:
            Image.fromarray(image_to_uint8(image)).save(path.with_name(f"{path.stem}_{label}.png"))
    return mesh
