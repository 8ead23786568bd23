"""The ``supervised`` shape method: the depth network trained on ground-truth depth (the tables' upper bound)."""

from __future__ import annotations

import torch

from core.errors import BenchError
from core.registry import METHODS
from methods.base import PrepareContext, Reconstruction, ShapeMethod

from .model import SupervisedDepthNet
from .training import load_supervised

__all__ = ["Supervised"]


@METHODS.register("supervised")
class Supervised(ShapeMethod):
    """One forward pass per image: the input-view depth, valid everywhere (the GT mask selects the face)."""

    def __init__(self, weights: str = "weights/supervised_synface_proc.safetensors"):
        self.weights = weights
        self.net: SupervisedDepthNet | None = None
        self.card: dict = {}

    def prepare(self, ctx: PrepareContext) -> None:
        from core.paths import asset_path

        self.net, self.card = load_supervised(asset_path(self.weights), ctx.device)

    @torch.no_grad()
    def reconstruct(self, batch: dict) -> Reconstruction:
        if self.net is None:
            raise RuntimeError("supervised.reconstruct called before prepare")
        image = batch["image"]
        size = self.net.cfg.image_size
        if tuple(image.shape[-2:]) != (size, size):
            raise BenchError(f"supervised weights are for {size}x{size} images, got {tuple(image.shape[-2:])}")
        depth = self.net(image.to(next(self.net.parameters()).device).float())
        return Reconstruction(depth=depth, valid=torch.ones_like(depth))
