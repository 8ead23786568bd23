"""The trivial rows of the BFM table: constant depth, average ground-truth depth, and the ellipsoid prior alone."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from core.errors import BenchError
from core.registry import MASKS, METHODS
from methods.base import PrepareContext, Reconstruction, ShapeMethod
from methods.common.shape_prior import check_shape_prior, shape_prior_depth


def _all_valid(depth: Tensor) -> Tensor:
    return torch.ones_like(depth)


@METHODS.register("const_depth")
class ConstantDepth(ShapeMethod):
    """Constant null depth: every pixel at ``depth`` (a fronto-parallel plane)."""

    def __init__(self, depth: float = 1.0):
        self.check_settings(depth=depth)
        self.depth = float(depth)

    @staticmethod
    def check_settings(depth: float = 1.0, **_: Any) -> None:
        if isinstance(depth, bool) or not isinstance(depth, (int, float)) or not 0 < depth < float("inf"):
            raise BenchError(f"method.depth must be a positive finite number, got {depth!r}")

    def reconstruct(self, batch: dict) -> Reconstruction:
        image = batch["image"]
        d = torch.full((image.shape[0], *image.shape[2:]), self.depth, dtype=torch.float32, device=image.device)
        return Reconstruction(depth=d, valid=_all_valid(d), canon_depth=d)


@METHODS.register("avg_depth")
class AverageDepth(ShapeMethod):
    """Per-pixel mean of the ground-truth depth over a training split, predicted for every test image."""

    def __init__(self, split: str = "train", batch_size: int = 512):
        self.split, self.batch_size = split, batch_size
        self.mean_depth: Tensor | None = None

    def prepare(self, ctx: PrepareContext) -> None:
        data = ctx.load_split(self.split)
        if not getattr(data, "has_depth", False):
            raise BenchError(f"avg_depth needs ground-truth depth in the '{self.split}' split of {ctx.dataset_name}")
        total, count = None, 0
        for batch in DataLoader(data, batch_size=self.batch_size, shuffle=False):
            depth = batch["depth"].double()
            total = depth.sum(0) if total is None else total + depth.sum(0)
            count += depth.shape[0]
        if count == 0:
            raise BenchError(f"the '{self.split}' split of {ctx.dataset_name} is empty; regenerate it with bench data")
        self.mean_depth = (total / count).float().to(ctx.device)

    def reconstruct(self, batch: dict) -> Reconstruction:
        if self.mean_depth is None:
            raise RuntimeError("avg_depth.reconstruct called before prepare")
        image = batch["image"]
        if self.mean_depth.shape != image.shape[2:]:
            raise BenchError(f"avg_depth was fitted at {tuple(self.mean_depth.shape)} but images are "
                             f"{tuple(image.shape[2:])}; use the same image_size for both splits")
        d = self.mean_depth.to(image.device).expand(image.shape[0], -1, -1).clone()
        return Reconstruction(depth=d, valid=_all_valid(d), canon_depth=d)


@METHODS.register("ellipsoid")
class EllipsoidPrior(ShapeMethod):
    """GAN2Shape's initial shape, placed from a mask provider, with no learning (the shape-init ablation's floor)."""

    def __init__(self, mask: str = "gt", mask_args: dict | None = None, shape_prior: dict | None = None):
        self.mask_provider = MASKS.create(mask, **(mask_args or {}))
        self.shape_prior = check_shape_prior(shape_prior or {})

    @staticmethod
    def check_settings(shape_prior: dict | None = None, **_: Any) -> None:
        check_shape_prior(shape_prior or {})

    def reconstruct(self, batch: dict) -> Reconstruction:
        mask = self.mask_provider(batch)
        d = shape_prior_depth(mask, **self.shape_prior)
        return Reconstruction(depth=d, valid=_all_valid(d), canon_depth=d, extras={"mask": mask})
