"""StyleGAN2 on the single training driver: ``bench train model=stylegan2_32 dataset=synface_proc``.

The steps, checkpoints and weights are those of :mod:`methods.stylegan2.training`; validation is the GAN trainers'
SWD (:mod:`methods.common.gan_recipe`) on EMA-generator fakes; the sample grid shows ``tracking.samples`` fixed
latents. The export holds the EMA generator, the discriminator and the mean latent, with the model card.
``model.grow_from=<weights of a smaller trained GAN>`` starts the networks from it
(:func:`methods.stylegan2.training.grown_state_dicts`) instead of from scratch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import BenchError
from core.paths import asset_path
from core.registry import TRAINERS
from methods.base import TrainContext
from methods.common.gan_recipe import GANRecipe, image_grid

from . import training
from .checkpoints import read_checkpoint, save_networks

__all__ = ["StyleGAN2Recipe", "model_configs", "generate_eval"]

_TRAIN_KEYS = ("batch_size", "lr", "r1_gamma", "d_reg_every", "path_regularize", "g_reg_every", "mixing",
               "ema_half_life_kimg", "flip", "amp")


def model_configs(settings: dict[str, Any]) -> tuple[dict, dict]:
    """Generator and Discriminator constructor arguments from the ``model`` settings."""
    channels = {int(k): int(v) for k, v in settings["channels"].items()}
    g = {"size": int(settings["size"]), "style_dim": int(settings["style_dim"]), "n_mlp": int(settings["n_mlp"]),
         "lr_mlp": float(settings["lr_mlp"]), "channels": channels}
    return g, {"size": int(settings["size"]), "channels": channels}


@torch.no_grad()
def generate_eval(g_ema, n: int, seed: int, device: torch.device, batch: int = 256) -> torch.Tensor:
    """``n`` EMA-generator images (n, 3, S, S) on CPU from seeded z and per-sample noise (repeatable)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        z = torch.randn(b, g_ema.style_dim, generator=gen).to(device)
        noise = [torch.randn(b, 1, *m.shape[-2:], generator=gen).to(device) for m in g_ema.stored_noise()]
        out.append(g_ema([z], noise=noise)[0].float().clamp(-1, 1).cpu())
    return torch.cat(out)


@TRAINERS.register("stylegan2")
class StyleGAN2Recipe(GANRecipe):
    """StyleGAN2 (rosinality's training recipe: logistic loss, lazy R1 and path regularisation, mixing, EMA)."""

    def __init__(self, ctx: TrainContext):
        self.g_config, self.d_config = model_configs(ctx.settings)
        self.size = self.g_config["size"]
        super().__init__(ctx)
        self.training = training
        self.tcfg = training.TrainConfig.from_dict({k: ctx.settings[k] for k in _TRAIN_KEYS})
        self.fixed_z = torch.randn(int(ctx.evaluation["samples"]), self.g_config["style_dim"],
                                   generator=torch.Generator().manual_seed(ctx.seed + 12345)).to(ctx.device)

    def create(self) -> training.TrainState:
        state = super().create()
        source = self.ctx.settings.get("grow_from")
        if source:
            ckpt = read_checkpoint(asset_path(source))
            try:
                training.grow_state(state, ckpt.g_ema, ckpt.d, int(ckpt.g_config["size"]))
            except ValueError as err:
                raise BenchError(f"model.grow_from={source}: {err}. Fix: grow from a smaller StyleGAN2 with the same "
                                 f"style_dim / n_mlp and the channels of its resolutions, or set "
                                 f"model.grow_from=null") from None
        return state

    def samples(self, state: training.TrainState) -> np.ndarray:
        state.g_ema.eval()
        with torch.no_grad():
            return image_grid(state.g_ema([self.fixed_z])[0])

    def fakes(self, state: training.TrainState, n: int, seed: int) -> torch.Tensor:
        return generate_eval(state.g_ema, n, seed, self.ctx.device)

    def export(self, state: training.TrainState, path: Path, card: dict[str, Any]) -> None:
        latent_avg = state.g_ema.mean_latent(4096, torch.Generator(device=self.ctx.device).manual_seed(0))
        save_networks(path, state.g_ema, state.d, self.card(state, card), latent_avg)
