"""``gan2shape_pretrained``: GAN2Shape's jointly pre-trained networks as a one-pass predictor, with no instance fitting.

The row that shows what GAN2Shape's per-image fitting adds to its pre-training (``bench train
model=gan2shape_pretrain``): D and A give the canonical depth and albedo of the image, V and L its view and light
(plus the prior means the pre-training used), and the score is the canonical depth warped into that view, as for
``gan2shape``. The geometry (border clamp, depth band limit, view and light priors) is read from the weights' model
card, so the predictor sees the image exactly as the pre-training did; no GAN is needed.
"""

from __future__ import annotations

import torch

from core.errors import BenchError
from core.paths import asset_path
from core.registry import METHODS
from methods.base import PrepareContext, Reconstruction, ShapeMethod

from .method import load_networks, read_card
from .model import Geometry, Networks, geometry_from_dict, photo_forward
from .pseudo import load_priors

__all__ = ["GAN2ShapePretrained"]


@METHODS.register("gan2shape_pretrained")
class GAN2ShapePretrained(ShapeMethod):
    """Pre-trained GAN2Shape networks, one forward pass per image (no GAN, no per-image optimisation)."""

    def __init__(self, weights: str, batch_size: int = 64):
        self.weights, self.batch_size = weights, int(batch_size)
        self.nets: Networks | None = None
        self.geom = Geometry()

    def prepare(self, ctx: PrepareContext) -> None:
        path = asset_path(self.weights)
        if not path.is_file():
            raise BenchError(f"GAN2Shape pre-trained weights {path} not found; make them with `bench train "
                             f"model=gan2shape_pretrain train.export={self.weights}`")
        meta = read_card(path)
        if not meta:
            raise BenchError(f"{path} has no model card {path.with_suffix('.json').name}; export the weights with "
                             "`bench train model=gan2shape_pretrain`, which writes both")
        if meta.get("geometry"):
            self.geom = geometry_from_dict(meta["geometry"])
        else:  # cards written before the geometry was recorded: the method settings the pre-training ran with
            settings = ((meta.get("card") or {}).get("config") or {}).get("method") or {}
            view_path, light_path = settings.get("view_prior"), settings.get("light_prior")
            view_prior, light_mean = load_priors(view_path and asset_path(view_path),
                                                 light_path and asset_path(light_path))
            self.geom = Geometry(border_factor=float(settings.get("border_factor", 1.02)),
                                 depth_pool=int(settings.get("depth_pool", 1)), view_mean=view_prior.mean,
                                 light_mean=light_mean)
        self.geom = self.geom.to(ctx.device)
        nets = Networks(int(meta["image_size"]), int(meta["latent_dim"]), bool(meta.get("inplace_relu_quirk", True)),
                        **(meta.get("arch") or {}))
        load_networks(nets, path)
        self.nets = nets.to(ctx.device).eval()

    @torch.no_grad()
    def reconstruct(self, batch: dict) -> Reconstruction:
        if self.nets is None:
            raise RuntimeError("gan2shape_pretrained.reconstruct called before prepare")
        images = batch["image"]
        size = self.nets.image_size
        if tuple(images.shape[-2:]) != (size, size):
            raise BenchError(f"{self.weights} is for {size}x{size} images, got {tuple(images.shape[-2:])}")
        device = next(self.nets.parameters()).device
        parts = [photo_forward(self.nets, chunk.to(device).float(), self.geom)
                 for chunk in images.split(self.batch_size)]
        cat = lambda get: torch.cat([get(p) for p in parts])  # noqa: E731
        return Reconstruction(depth=cat(lambda p: p.render.view_depth), valid=cat(lambda p: p.render.valid[:, 0]),
                              canon_depth=cat(lambda p: p.depth), albedo=cat(lambda p: p.albedo),
                              view=cat(lambda p: p.view), light=cat(lambda p: p.light))
