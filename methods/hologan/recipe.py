"""HoloGAN on the single training driver: ``bench train model=hologan dataset=synface_proc``.

The steps, checkpoints and weights are those of :mod:`methods.hologan.training` at 32 px; validation is the GAN
trainers' SWD (:mod:`methods.common.gan_recipe`) of fakes at random training poses; the sample grid is a pose sweep
(one row per fixed z, one column per ``model.grid_azimuths`` degree, elevation 0), also written beside the export
as ``*_samples.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.registry import TRAINERS
from methods.base import TrainContext
from methods.common.gan_recipe import GANRecipe, image_grid

from . import training

__all__ = ["HoloGANRecipe", "model_configs", "pose_grid", "generate_eval"]

_TRAIN_KEYS = ("batch_size", "lr_g", "lr_d", "beta1", "beta2", "lambda_id", "lambda_style", "r1_gamma",
               "d_reg_every", "azimuth_range", "elevation_range", "ema_half_life_kimg", "flip")


def model_configs(settings: dict[str, Any]) -> tuple[dict, dict]:
    """Generator and Discriminator constructor arguments from the ``model`` settings."""
    g = {"z_dim": int(settings["z_dim"]), "c0": int(settings["c0"]), "c3d": list(settings["c3d"]),
         "c_rot": int(settings["c_rot"]), "c_proj": int(settings["c_proj"]), "c2d": list(settings["c2d"])}
    return g, {"z_dim": int(settings["z_dim"]), "channels": list(settings["d_channels"])}


@torch.no_grad()
def pose_grid(g, z: torch.Tensor, azimuths: list[float]) -> np.ndarray:
    """One row per latent of ``z`` (R, Z), one column per azimuth (elevation 0) -> (H, W, 3) uint8 grid."""
    rows = []
    for zi in z:
        zr = zi[None].expand(len(azimuths), -1)
        rows.append(g(zr, torch.tensor(azimuths, device=z.device, dtype=torch.float32)).cpu())
    return image_grid(torch.cat(rows), nrow=len(azimuths))


@torch.no_grad()
def generate_eval(g, n: int, seed: int, azimuth_range: float, elevation_range: float, device: torch.device,
                  batch: int = 256) -> torch.Tensor:
    """``n`` fakes (n, 3, 32, 32) on CPU at uniform random poses in the training ranges, from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        z = torch.randn(b, g.z_dim, generator=gen)
        pose = torch.rand(2, b, generator=gen) * 2 - 1
        out.append(g(z.to(device), (pose[0] * azimuth_range).to(device),
                     (pose[1] * elevation_range).to(device)).float().cpu())
    return torch.cat(out)


@TRAINERS.register("hologan")
class HoloGANRecipe(GANRecipe):
    """HoloGAN (Nguyen-Phuoc et al. 2019) at 32 px."""

    size = 32

    def __init__(self, ctx: TrainContext):
        super().__init__(ctx)
        self.g_config, self.d_config = model_configs(ctx.settings)
        self.training = training
        self.tcfg = training.HoloTrainConfig.from_dict({k: ctx.settings[k] for k in _TRAIN_KEYS})
        self.grid_z = torch.randn(int(ctx.settings["grid_rows"]), self.g_config["z_dim"],
                                  generator=torch.Generator().manual_seed(ctx.seed + 12345)).to(ctx.device)
        self.azimuths = [float(a) for a in ctx.settings["grid_azimuths"]]

    def samples(self, state: training.HoloTrainState) -> np.ndarray:
        return pose_grid(state.g_ema, self.grid_z, self.azimuths)

    def fakes(self, state: training.HoloTrainState, n: int, seed: int) -> torch.Tensor:
        return generate_eval(state.g_ema, n, seed, self.tcfg.azimuth_range, self.tcfg.elevation_range,
                             self.ctx.device)

    def export(self, state: training.HoloTrainState, path: Path, card: dict[str, Any]) -> None:
        from PIL import Image

        training.export_weights(path, state.g_ema, state.d, {**self.card(state, card),
                                                             "grid_azimuths": self.azimuths})
        Image.fromarray(self.grid).save(Path(path).with_name(Path(path).stem + "_samples.png"))
