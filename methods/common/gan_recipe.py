"""What the GAN trainers (StyleGAN2, HoloGAN) share on the single training driver.

Data: the training split as uint8 in memory, area-downsampled to the model size. Validation: the sliced Wasserstein
distance (:mod:`metrics.swd`) of ``eval.swd_images`` fakes against as many real images, with the real-vs-real floor
(``real[:n]`` against ``real[n:2n]``) logged once at the start; a sample grid. The model card adds the batch size,
the SWD, its floor and settings to the driver's card.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import BenchError
from methods.base import TrainContext, TrainRecipe
from methods.common.data import resize_uint8, split_images

__all__ = ["GANRecipe", "downsampled_images", "image_grid"]


def downsampled_images(ds, size: int) -> torch.Tensor:
    """A dataset split as ``(N, 3, size, size)`` uint8, area-downsampled when its images are larger."""
    return resize_uint8(split_images(ds, channels_last=True), size)


def image_grid(images: torch.Tensor, nrow: int | None = None) -> np.ndarray:
    """Images ``(B, 3, S, S)`` in [-1, 1] -> one ``(H, W, 3)`` uint8 grid with 2-pixel gaps, ``nrow`` per row."""
    b, _, s, _ = images.shape
    nrow = nrow or int(np.ceil(np.sqrt(b)))
    ncol = int(np.ceil(b / nrow))
    grid = torch.ones(3, ncol * (s + 2) + 2, nrow * (s + 2) + 2)
    for i, img in enumerate(images.detach().float().cpu().clamp(-1, 1)):
        r, c = divmod(i, nrow)
        grid[:, 2 + r * (s + 2): 2 + r * (s + 2) + s, 2 + c * (s + 2): 2 + c * (s + 2) + s] = img
    return ((grid.permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8).numpy()


class GANRecipe(TrainRecipe):
    """A GAN on the driver. A subclass sets :attr:`size` before calling ``super().__init__``, then
    :attr:`training` (its module of ``create_state``, ``train_step``, ``save_checkpoint`` and ``load_checkpoint``,
    which the GANs share by name), :attr:`g_config`, :attr:`d_config` and :attr:`tcfg`; it supplies :meth:`samples`
    (the grid's picture), :meth:`fakes` (images for the SWD) and ``export``."""

    size: int
    training: Any
    g_config: dict[str, Any]
    d_config: dict[str, Any]
    tcfg: Any

    def __init__(self, ctx: TrainContext):
        super().__init__(ctx)
        self.data = downsampled_images(ctx.load_split(ctx.train_split, ctx.train_limit), self.size)
        ev = ctx.evaluation
        self.n_eval = min(int(ev["swd_images"]), len(self.data) // 2)
        if self.n_eval < 1:
            raise BenchError("need at least 2 training images for the SWD evaluation")
        self.real_eval = self.data[: 2 * self.n_eval].float() / 127.5 - 1.0
        self.swd_seed = int(ev["swd_seed"])
        self.swd_kw = {"seed": self.swd_seed, "patches_per_image": int(ev["swd_patches"]),
                       "min_size": min(16, self.size)}
        self.floor: dict[str, float] = {}
        self.grid: np.ndarray | None = None

    def create(self):
        return self.training.create_state(self.g_config, self.d_config, self.tcfg, self.ctx.device, seed=self.ctx.seed)

    def step(self, state) -> dict[str, float]:
        return self.training.train_step(state, self.data)

    def save(self, path: Path, state) -> None:
        self.training.save_checkpoint(path, state)

    def load(self, path: Path):
        return self.training.load_checkpoint(path, self.ctx.device, self.tcfg)

    @abstractmethod
    def samples(self, state) -> np.ndarray:
        """The sample grid of the current generator, ``(H, W, 3)`` uint8."""

    @abstractmethod
    def fakes(self, state, n: int, seed: int) -> torch.Tensor:
        """``n`` generated images ``(n, 3, S, S)`` on the CPU, repeatable for a given ``seed``."""

    def reference_metrics(self, state) -> dict[str, float]:
        from metrics.swd import swd_real_floor

        self.floor = swd_real_floor(self.real_eval, **self.swd_kw)
        return {f"floor_{k}": v for k, v in self.floor.items()}

    def evaluate(self, state) -> dict[str, float]:
        from metrics.swd import swd

        self.grid = self.samples(state)
        return swd(self.real_eval[: self.n_eval], self.fakes(state, self.n_eval, self.swd_seed + 1), **self.swd_kw)

    def sample_grid(self, state) -> np.ndarray | None:
        return self.grid

    def card(self, state, card: dict[str, Any]) -> dict[str, Any]:
        """The model card of the GAN trainers, from the driver's."""
        return {"command": card["command"], "dataset": card["dataset"][self.ctx.train_split],
                "commit": card["commit"], "device": card["device"], "wall_time_s": card["wall_time_s"],
                "iterations": state.step, "batch_size": self.batch_size, "seed": card["seed"],
                "train_config": card["train_config"], "swd": card["validation"], "swd_real_floor": self.floor,
                "swd_settings": {**self.swd_kw, "images": self.n_eval}, "losses": card["losses"]}

    @property
    def batch_size(self) -> int:
        return int(self.ctx.settings["batch_size"])

    def summary(self, state, scores: dict[str, float]) -> str:
        return (f"{state.step} iterations; SWD x1e3 {scores.get('swd_mean', float('nan')):.2f} (real floor "
                f"{self.floor.get('swd_mean', float('nan')):.2f})")
