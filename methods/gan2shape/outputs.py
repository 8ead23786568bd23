"""What a GAN2Shape reconstruction leaves behind for a person to look at (``method.md`` section 11).

Per image, in one folder: the input, reconstruction, canonical depth, depth in the input view, normals, albedo,
shading; rotation sweeps rendered from the 3D model (Rotation-3D: textured mesh) and re-projected through the GAN
(Rotation-GAN: the warp render -> E -> G); relighting sweeps (3D and GAN) with the 20 published lights; the mesh as
GLB and OBJ; and ``index.html`` showing them together with the GLB in an interactive viewer that works offline.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from core import images as vis
from methods.renderer.mesh import export_mesh
from methods.renderer.warp import render_given_view, render_mesh, sweep_views

from .model import Geometry, Networks, PhotoForward, lit_normals
from .pseudo import PseudoLights
from .steps import Hyper, project

__all__ = ["relight_lights", "rotation_sweep", "relight_sweep", "write_outputs"]


def relight_lights(k_ambient: float, k_diffuse: float, device=None) -> PseudoLights:
    """The 20 relighting lights of the original: direction ``(dx, dy, 1)`` with ``dx`` in ``{-1.5, -0.7, 0, 0.7,
    1.5}``, ``dy`` in ``{0, 0.6}``, strength ``δ`` in ``{0.3, 0.6}``; shading ``(k_a - 0.6 δ) + (k_d + δ) n.l``.

    >>> len(relight_lights(0.5, 0.5))
    20
    """
    combos = list(itertools.product((-1.5, -0.7, 0.0, 0.7, 1.5), (0.0, 0.6), (0.3, 0.6)))
    direction = torch.tensor([[dx, dy, 1.0] for dx, dy, _ in combos], device=device)
    direction = direction / direction.norm(dim=1, keepdim=True)
    delta = torch.tensor([d for *_, d in combos], device=device)
    n = len(combos)
    return PseudoLights(torch.full((n,), k_ambient, device=device), torch.full((n,), k_diffuse, device=device),
                        direction, delta, -0.6)


@torch.no_grad()
def rotation_sweep(fwd: PhotoForward, geom: Geometry, yaw_max_deg: float = 70.0) -> tuple[Tensor, Tensor, Tensor]:
    """Views ``(T, 6)`` (yaw then pitch sweep), mesh renders and warp renders ``(T, 3, S, S)`` of one image."""
    r = geom.renderer
    views = sweep_views(yaw_max_deg, 20.0, 9, 5, r, dtype=fwd.depth.dtype, device=fwd.depth.device)
    texture = fwd.render.texture.expand(len(views), -1, -1, -1)
    depth = fwd.depth.expand(len(views), -1, -1)
    mesh = render_mesh(texture, depth, views, r)
    warp = render_given_view(texture, depth, views, r).image
    return views, mesh, warp


@torch.no_grad()
def relight_sweep(fwd: PhotoForward, geom: Geometry) -> Tensor:
    """The input view under the 20 relighting lights, ``(20, 3, S, S)``."""
    lights = relight_lights(float(fwd.k_ambient[0]), float(fwd.k_diffuse[0]), fwd.depth.device)
    n = len(lights)
    shading = lights.shading(lit_normals(fwd.render.normal, fwd.view.expand(n, -1), geom))
    texture = 2 * ((fwd.albedo + 1) / 2 * shading) - 1
    return render_given_view(texture, fwd.depth.expand(n, -1, -1), fwd.view.expand(n, -1), geom.renderer).image


def _save(path: Path, array: np.ndarray, min_size: int = 128) -> str:
    image = Image.fromarray(array)
    if image.width < min_size:
        factor = -(-min_size // image.width)
        image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    image.save(path)
    return path.name


def _strip(images: Tensor) -> np.ndarray:
    return np.concatenate([vis.image_to_uint8(x) for x in images], axis=1)


def _gif(path: Path, images: Tensor, fps: float = 6.0) -> str:
    import imageio.v2 as imageio

    frames = [np.kron(vis.image_to_uint8(x), np.ones((2, 2, 1), np.uint8)) for x in images]
    imageio.mimsave(path, frames, duration=1.0 / fps, loop=0)
    return path.name


@torch.no_grad()
def write_outputs(folder: str | Path, image: Tensor, fwd: PhotoForward, nets: Networks, G, w: Tensor,
                  gan_image: Tensor, geom: Geometry, hp: Hyper, *, yaw_max_deg: float = 70.0, gan: bool = True,
                  mesh_formats: tuple[str, ...] | list[str] = ("glb", "obj"), html: bool = True,
                  title: str | None = None) -> Path:
    """Write every output of one reconstructed image (batch 1) into ``folder``; returns the folder.

    ``gan=False`` skips the GAN re-projections (Rotation-GAN, Relight-GAN), which cost 34 generator passes.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    r = fwd.render
    files: dict[str, str] = {
        "input": _save(folder / "input.png", vis.image_to_uint8(image[0])),
        "reconstruction": _save(folder / "reconstruction.png", vis.image_to_uint8(r.image[0])),
        "canonical depth": _save(folder / "canonical_depth.png", vis.depth_to_uint8(fwd.depth[0])),
        "depth (input view)": _save(folder / "view_depth.png", vis.depth_to_uint8(r.view_depth[0])),
        "normals": _save(folder / "normal.png", ((r.normal[0].clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()),
        "albedo": _save(folder / "albedo.png", vis.image_to_uint8(fwd.albedo[0])),
        "shading": _save(folder / "shading.png", vis.mask_to_uint8(((fwd.render.texture[0] + 1) / (fwd.albedo[0] + 1)
                                                                    .clamp_min(1e-3)).mean(0).clamp(0, 2) / 2)),
        "GAN render G(w)": _save(folder / "gan_image.png", vis.image_to_uint8(gan_image[0])),
    }
    views, mesh, warp = rotation_sweep(fwd, geom, yaw_max_deg)
    strips = {"rotation 3D": _save(folder / "rotate_3d.png", _strip(mesh)),
              "rotation 3D (warp)": _save(folder / "rotate_warp.png", _strip(warp))}
    animations = {"rotation 3D": _gif(folder / "rotate_3d.gif", mesh[:9])}
    relit = relight_sweep(fwd, geom)
    strips["relighting 3D"] = _save(folder / "relight_3d.png", _strip(relit))
    if gan:
        rot_gan, _ = project(nets, G, w, warp, gan_image, hp)
        relit_gan, _ = project(nets, G, w, relit, gan_image, hp)
        strips["rotation GAN"] = _save(folder / "rotate_gan.png", _strip(rot_gan))
        strips["relighting GAN"] = _save(folder / "relight_gan.png", _strip(relit_gan))
        animations["rotation GAN"] = _gif(folder / "rotate_gan.gif", rot_gan[:9])
    K = geom.renderer.intrinsics(fwd.depth.shape[-1], fwd.depth)
    meshes = {}
    for fmt in mesh_formats:
        export_mesh(folder / f"mesh.{fmt}", fwd.depth[0], r.texture[0].clamp(-1, 1), K)
        meshes[fmt] = f"mesh.{fmt}"
    if html:
        from core.result_page import Image, Model, PageSection, Table, write_result_page

        view = fwd.view[0].tolist()
        sections = [
            PageSection("3D model", [Model(meshes["glb"], "canonical shape with its shaded texture")] if "glb" in meshes
                        else []),
            PageSection("Decomposition", [Image(f, caption) for caption, f in files.items()]),
            PageSection("Sweeps", [Image(f, caption, wide=True) for caption, f in strips.items()]
                        + [Image(f, f"{caption} (animated)") for caption, f in animations.items()]),
            PageSection("Prediction", [Table({
                "yaw (deg)": round(view[1] * geom.renderer.rot_range_deg, 2),
                "pitch (deg)": round(view[0] * geom.renderer.rot_range_deg, 2),
                "roll (deg)": round(view[2] * geom.renderer.rot_range_deg, 2),
                "light (k_a, k_d, x, y)": ", ".join(f"{v:.3f}" for v in fwd.light[0].tolist()),
                "meshes": ", ".join(meshes.values())})]),
        ]
        write_result_page(folder, title or "GAN2Shape reconstruction", sections)
    return folder
