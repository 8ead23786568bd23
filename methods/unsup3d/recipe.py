"""Unsup3d on the single training driver: ``bench train model=unsup3d`` / ``model=unsup3d_cpu``.

The loop, checkpoints and weights are those of :mod:`methods.unsup3d.training`; this recipe only wires them to the
driver. Data: the training split in memory (uint8); validation: SIDE/MAD of the first ``val_images`` images of
``val_split`` every evaluation, with a grid of sample reconstructions. The model card adds the epochs, the batch
size and the perceptual network (with its SHA-256) to the driver's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import BenchError
from core.registry import TRAINERS
from core.weights import file_sha256
from methods.base import TrainContext, TrainRecipe
from methods.common.data import split_images, split_images_depths

from . import training
from .perceptual import build_features

__all__ = ["Unsup3dRecipe", "sample_grid"]


def sample_grid(net, images: torch.Tensor, renderer_fov: float = 10.0) -> np.ndarray:
    """Rows of input / reconstruction / mirrored reconstruction / canonical albedo / canonical image / canonical
    depth / input-view depth / its normals / photometric confidence ``1 / (1 + sigma)``, as one uint8 grid."""
    from core import images as vis
    from methods.renderer.mesh import normals_to_uint8

    out = training.predict(net, images)[0]
    b, rows = out.batch, []
    for i in range(b):
        row = [vis.image_to_uint8(out.image[i]), vis.image_to_uint8(out.recon_image[i])]
        if out.flipped:
            row.append(vis.image_to_uint8(out.recon_image[b + i]))
        row += [vis.image_to_uint8(out.canon_albedo[i]), vis.image_to_uint8(out.canon_image[i]),
                vis.depth_to_uint8(out.canon_depth[i]), vis.depth_to_uint8(out.recon_depth[i]),
                normals_to_uint8(out.recon_depth[i], renderer_fov)]
        if out.conf_l1 is not None:
            row.append(vis.mask_to_uint8(1 / (1 + out.conf_l1[i, 0])))
        rows.append(row)
    return vis.grid(rows)


@TRAINERS.register("unsup3d")
class Unsup3dRecipe(TrainRecipe):
    """Unsup3d's photo-geometric autoencoder (published recipe or the CPU one, by config)."""

    def __init__(self, ctx: TrainContext):
        super().__init__(ctx)
        self.model_cfg, self.train_cfg, perc = training.split_settings(ctx.settings)
        size = self.model_cfg.image_size
        # channels-last view: how this model has always been trained (the bits of every result depend on it)
        self.data = split_images(ctx.load_split(ctx.train_split, ctx.train_limit), channels_last=True)
        if self.data.shape[-1] != size:
            raise BenchError(f"dataset images are {self.data.shape[-1]}px but the model is {size}px")
        self.val_split = ctx.settings.get("val_split", "val")
        self.val_images, self.val_depths = split_images_depths(
            ctx.load_split(self.val_split, int(ctx.settings.get("val_images", 256))),
            f"validation split {self.val_split} of {ctx.dataset_name}")
        if self.val_images.shape[-1] != size:
            raise BenchError(f"validation images are {self.val_images.shape[-1]}px but the model is {size}px")
        self.features = build_features(perc["perceptual"], perc["perceptual_weights"], size, ctx.device)
        self.perc_info = {**perc, "sha256": file_sha256(perc["perceptual_weights"]) if self.features else None}

    def total_iterations(self) -> int:
        """``model.iterations`` when the config fixes its schedule (its lr and spread schedules are laid out on
        it), capped by ``train.iterations`` (a shorter run stops early); else ``train.iterations``."""
        fixed = self.ctx.settings.get("iterations")
        return self.ctx.iterations if fixed is None else min(int(fixed), self.ctx.iterations)

    def resume_settings(self) -> dict[str, Any]:
        """Every setting but the run's length, where it exports and what it validates on."""
        return {k: v for k, v in self.ctx.settings.items() if k not in ("iterations", "export", "val_split",
                                                                           "val_images")}

    def create(self) -> training.TrainState:
        return training.create_state(self.model_cfg, self.train_cfg, self.ctx.device, seed=self.ctx.seed)

    def step(self, state: training.TrainState) -> dict[str, float]:
        return training.train_step(state, self.data, self.features)

    def save(self, path: Path, state: training.TrainState) -> None:
        training.save_checkpoint(path, state)

    def load(self, path: Path) -> training.TrainState:
        return training.load_checkpoint(path, self.ctx.device, self.train_cfg)

    def evaluate(self, state: training.TrainState) -> dict[str, float]:
        return training.evaluate_shape(state.net, self.val_images, self.val_depths)

    def sample_grid(self, state: training.TrainState) -> np.ndarray:
        return sample_grid(state.net, self.val_images[:8], self.model_cfg.fov_deg)

    def export(self, state: training.TrainState, path: Path, card: dict[str, Any]) -> None:
        per_epoch = len(self.data) // self.train_cfg.batch_size
        card = {**card, "dataset": card["dataset"][self.ctx.train_split], "epochs": state.step / per_epoch,
                "batch_size": self.train_cfg.batch_size, "perceptual": self.perc_info,
                "validation": {"split": self.val_split, "images": len(self.val_images), **card["validation"]}}
        training.save_weights(path, state.net, card)

    def summary(self, state: training.TrainState, scores: dict[str, float]) -> str:
        return (f"{state.step} iterations; validation SIDE {scores['side_mean']:.3f} MAD {scores['mad_mean']:.2f} on "
                f"{len(self.val_images)} {self.val_split} images")
