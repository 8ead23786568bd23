"""Renderer speed: depth warp + inverse warp (the training path), forward and forward+backward.

Run: ``python -m pytest benchmarks/test_renderer_bench.py --benchmark-only -q``. CUDA cases are skipped without a
GPU. The naive reference rasteriser runs at 16 x 16 (batch 2), next to the fast one at the same size, so their ratio
can be read off the table (group ``warp-16``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from methods.renderer.camera import canon_to_view, depth_to_points
from methods.renderer.raster import grid_faces
from methods.renderer.reference import rasterize_depth_naive
from methods.renderer.warp import Renderer, sample_texture, view_to_canon_grid, warp_canon_depth

CFG = Renderer()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def make_scene(batch: int, size: int, device: str, seed: int = 0):
    """Smooth face-like depth (a bump plus low-frequency noise), a random texture and views of GAN2Shape's spread."""
    gen = torch.Generator().manual_seed(seed)
    rows, cols = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    bump = -torch.exp(-(rows**2 + cols**2) / 0.5)
    noise = F.interpolate(torch.randn(batch, 1, 6, 6, generator=gen), size=(size, size), mode="bicubic",
                          align_corners=True)[:, 0]
    raw = 2 * bump + 0.5 * noise
    depth = 1 + 0.1 * torch.tanh(raw - raw.mean(dim=(1, 2), keepdim=True))
    view = torch.randn(batch, 6, generator=gen) * torch.tensor([0.15, 0.3, 0.1, 0.1, 0.1, 0.0])
    texture = torch.rand(batch, 3, size, size, generator=gen) * 2 - 1
    return depth.to(device), view.to(device), texture.to(device)


def warp_path(texture, depth, view, cfg=CFG):
    view_depth = warp_canon_depth(depth, view, cfg)
    return sample_texture(texture, view_to_canon_grid(view_depth, view, cfg))


def naive_warp_path(texture, depth, view, cfg=CFG):
    """The same path with the naive reference rasteriser (no supersampling)."""
    size = depth.shape[-1]
    K = cfg.intrinsics(size, depth)
    R, t = cfg.transform(view)
    verts = canon_to_view(depth_to_points(depth, K), R, t, cfg.rot_center_depth).flatten(1, 2)
    raw, _ = rasterize_depth_naive(verts, grid_faces(size, size), K, size, size, far=cfg.far)
    view_depth = raw.clamp(*cfg.depth_bounds)
    return sample_texture(texture, view_to_canon_grid(view_depth, view, cfg))


def run(path, scene, backward: bool, device: str):
    depth, view, texture = scene
    if backward:
        depth, view, texture = (x.detach().requires_grad_() for x in (depth, view, texture))
        path(texture, depth, view).square().mean().backward()
    else:
        with torch.no_grad():
            path(texture, depth, view)
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
def test_warp_batch16(benchmark, device, size, backward):
    scene = make_scene(16, size, device)
    benchmark.group = f"warp-{size}-b16-{device}"
    benchmark.extra_info.update(batch=16, size=size, device=device, backward=backward)
    rounds = 5 if device == "cpu" else 20
    benchmark.pedantic(run, args=(warp_path, scene, backward, device), rounds=rounds, warmup_rounds=1)


@pytest.mark.parametrize("impl", ["fast", "naive"])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
def test_warp_fast_vs_naive_16(benchmark, impl, backward):
    scene = make_scene(2, 16, "cpu")
    benchmark.group = f"warp-16-b2-cpu-{'fwd+bwd' if backward else 'fwd'}"
    benchmark.extra_info.update(batch=2, size=16, impl=impl)
    path = warp_path if impl == "fast" else naive_warp_path
    rounds = 20 if impl == "fast" else 2
    benchmark.pedantic(run, args=(path, scene, backward, "cpu"), rounds=rounds, warmup_rounds=1)
