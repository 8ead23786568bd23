"""The ``unsup3d`` shape method: Unsup3d weights trained by ``bench train model=unsup3d*``, scored by the harness.

``reconstruct`` returns the canonical depth warped to the predicted view (the plain, not mirrored, render) and its
validity mask, as the BFM protocol scores Unsup3d, plus the canonical depth, albedo, view and light.

Which weights: ``weights`` when ``symmetry`` is on, ``weights_no_symmetry`` when it is off (the ``no_symmetry``
ablation); the model card's ``symmetry`` must match. Training is not this class's job: a missing file is refused in
one line that gives the ``bench train`` command making it (the one training driver, :mod:`benchmark.driver`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core.errors import BenchError
from core.registry import METHODS
from methods.base import PrepareContext, Reconstruction, ShapeMethod

from . import training
from .model import Unsup3dNet

__all__ = ["Unsup3d"]


@METHODS.register("unsup3d")
class Unsup3d(ShapeMethod):
    """Unsup3d (Wu et al. 2020): one feed-forward pass per image, no per-image optimisation."""

    def __init__(self, weights: str | None = None, weights_no_symmetry: str | None = None, symmetry: bool = True):
        self.weights = weights if symmetry else weights_no_symmetry
        self.symmetry = bool(symmetry)
        self.net: Unsup3dNet | None = None
        self.card: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------------ prepare
    def prepare(self, ctx: PrepareContext) -> None:
        path = Path(self.weights) if self.weights else None
        if path is None or not path.is_file():
            raise BenchError(f"Unsup3d weights {path} not found; make them with `bench train model=unsup3d_cpu "
                             f"model.symmetry={str(self.symmetry).lower()} train.export={path}`")
        self.net, self.card = training.load_weights(path, ctx.device)
        trained_symmetry = self.card["model"].get("symmetry")
        if trained_symmetry != self.symmetry:
            raise BenchError(f"{path} was trained with symmetry={trained_symmetry}, but method.symmetry="
                             f"{self.symmetry}; point method.weights / method.weights_no_symmetry at matching weights")

    # --------------------------------------------------------------------------------------------- reconstruct
    @torch.no_grad()
    def reconstruct(self, batch: dict) -> Reconstruction:
        if self.net is None:
            raise RuntimeError("unsup3d.reconstruct called before prepare")
        image = batch["image"]
        size = self.net.cfg.image_size
        if tuple(image.shape[-2:]) != (size, size):
            raise BenchError(f"unsup3d weights are for {size}x{size} images, got {tuple(image.shape[-2:])}")
        out = self.net(image.to(next(self.net.parameters()).device).float())
        b = out.batch
        return Reconstruction(depth=out.recon_depth[:b], valid=out.valid[:b, 0], canon_depth=out.canon_depth[:b],
                              albedo=out.canon_albedo[:b], view=out.view, light=out.light,
                              extras={"recon_image": out.recon_image[:b]})
