"""How rough is the warp's depth gradient? (weights/README.md, Unsup3d diagnosis, point 10)

For a smooth shaded ellipsoid and the same shape with a smooth bump, seen under 16 random views (pitch +-15, yaw
+-30 degrees), take the gradient of the squared photometric error with respect to the canonical depth and report
its roughness: the energy of neighbour differences along rows / columns over the energy of the gradient (0 is
smooth), averaged over view draws, for several rasteriser sampling settings.

    python tools/depth_gradient_roughness.py [draws]
"""

from __future__ import annotations

import sys

import torch

from methods.common.shape_prior import ellipsoid_depth
from methods.renderer import Renderer, albedo_to_texture, depth_to_normals, light_to_shading, render_given_view

SETTINGS = {
    "one sample at each pixel centre (default)": Renderer(xy_range=0.0),
    "one sample, quarter-pixel offset": Renderer(xy_range=0.0, pixel_offset=0.25),
    "2 x 2 sub-samples, half-pixel offset (original)": Renderer(xy_range=0.0, supersample=2, pixel_offset=0.5),
}


def depth_gradient(cfg: Renderer, seed: int, size: int = 64, batch: int = 16) -> torch.Tensor:
    """``(batch, size - 16, size - 16)`` gradient (8-pixel border dropped) for one draw of views."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    inside = ((xx / 0.7) ** 2 + (yy / 0.85) ** 2 < 1)[None].float()
    base = ellipsoid_depth(inside, near=0.92, far=1.0).expand(batch, size, size)
    bumped = base + 0.01 * torch.exp(-(xx ** 2 + (yy + 0.1) ** 2) / 0.05)
    albedo = torch.stack([torch.sin(2 * xx + c) * torch.cos(1.5 * yy - c) for c in (0.0, 1.0, 2.0)])[None] * 0.5
    view = torch.zeros(batch, 6)
    view[:, 0] = (torch.rand(batch, generator=gen) * 2 - 1) * 15 / 60
    view[:, 1] = (torch.rand(batch, generator=gen) * 2 - 1) * 30 / 60
    K, light = cfg.intrinsics(size, base), torch.tensor([[0.0, 1.0, 0.3, 0.2]]).expand(batch, 4)

    def render(depth):
        shading = light_to_shading(depth_to_normals(depth, K), light)
        return render_given_view(albedo_to_texture(albedo.expand(batch, 3, size, size), shading), depth, view, cfg)

    with torch.no_grad():
        target = render(bumped)
    depth = base.clone().requires_grad_(True)
    out = render(depth)
    both = out.valid * target.valid
    (((out.image - target.image) ** 2 * both).sum() / both.sum()).backward()
    return depth.grad[:, 8:-8, 8:-8]


def roughness(grad: torch.Tensor, dim: int) -> float:
    return float(grad.diff(dim=dim).pow(2).mean() / grad.pow(2).mean())


if __name__ == "__main__":
    draws = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    torch.set_num_threads(1)
    for name, cfg in SETTINGS.items():
        grads = [depth_gradient(cfg, seed) for seed in range(draws)]
        rows = sum(roughness(g, 1) for g in grads) / draws
        cols = sum(roughness(g, 2) for g in grads) / draws
        print(f"{name:50s} roughness rows {rows:.2f} columns {cols:.2f} ({draws} view draws)")
