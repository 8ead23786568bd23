"""HoloGAN as a face-rotation method: turn the generator's feature volume by a calibrated azimuth.

Source ``n`` is ``G(z_n, azimuth 0, elevation 0)`` with ``z_n`` drawn from ``torch.Generator().manual_seed(seed)``
(:func:`methods.hologan.model.init_seed_latent`); rotated images change only the azimuth. HoloGAN's azimuth is a
generator input in its own units (nothing forces the learned geometry to be metric, or its sign to match the data),
so :meth:`HoloGANRotation.prepare` measures, with the shared yaw regressor (:func:`methods.common.yaw.calibrate`),
how many degrees of regressor yaw one unit of azimuth produces on held-out calibration seeds, and
:meth:`HoloGANRotation.rotate` sets ``azimuth = yaw_deg / deg_per_unit`` (the slope of the requested side,
:meth:`methods.common.yaw.Calibration.strength`, as every calibrated rotation method).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import Tensor

from core.paths import asset_path
from core.registry import METHODS
from methods.base import PrepareContext, Rotation, RotationMethod
from methods.common.yaw import Calibration, calibrate, load_yaw_regressor

from .model import Generator, init_seed_latent
from .training import load_weights

__all__ = ["HoloGANRotation", "seed_latents"]


def seed_latents(seeds: Sequence[int], z_dim: int) -> Tensor:
    """Latents (N, Z), row n from ``torch.Generator().manual_seed(seeds[n])``."""
    return torch.cat([init_seed_latent(int(s), z_dim) for s in seeds]) if len(seeds) else torch.zeros(0, z_dim)


@METHODS.register("hologan")
class HoloGANRotation(RotationMethod):
    """HoloGAN face rotation (keys of ``configs/method/hologan.yaml``).

    Args:
        weights: an export of ``bench train model=hologan``.
        yaw_regressor: the shared yaw regressor's weights (None: the shipped default).
        calibration: ``seeds`` (how many calibration latents), ``first_seed`` (their first seed, away from the
            experiment's), ``azimuths`` (the azimuth strengths measured) and ``min_r2`` (below it a warning).
        batch_size: images per generator call.
    """

    def __init__(self, weights: str, yaw_regressor: str | None = None, calibration: dict | None = None,
                 batch_size: int = 256):
        self.weights = weights
        self.yaw_regressor = yaw_regressor
        self.calib = {"seeds": 64, "first_seed": 100000, "azimuths": [-45, -30, -15, 15, 30, 45], "min_r2": 0.5,
                      **(calibration or {})}
        self.batch_size = int(batch_size)
        self.g: Generator | None = None
        self.calibration: Calibration | None = None
        self.device = torch.device("cpu")
        self.meta: dict = {}

    # ------------------------------------------------------------------------------------------------ prepare
    def load(self, device: torch.device | str = "cpu") -> Generator:
        """Load the generator (raises :class:`BenchError` naming the training command when it is missing)."""
        self.device = torch.device(device)
        self.g, self.meta = load_weights(asset_path(self.weights), self.device)
        return self.g

    @torch.no_grad()
    def render(self, z: Tensor, azimuth_deg: float | Tensor) -> Tensor:
        """Images (N, 3, 32, 32) of latents ``z`` (N, Z) at one azimuth (or (N,) azimuths), elevation 0."""
        if self.g is None:
            raise RuntimeError("hologan: call prepare (or load) before rendering")
        z = z.to(self.device)
        az = torch.as_tensor(azimuth_deg, dtype=torch.float32, device=self.device).expand(z.shape[0])
        out = [self.g(zc, ac) for zc, ac in zip(z.split(self.batch_size), az.split(self.batch_size))]
        return torch.cat(out).clamp(-1, 1)

    def prepare(self, ctx: PrepareContext) -> None:
        self.load(ctx.device)
        regressor = load_yaw_regressor(self.yaw_regressor, ctx.device)
        first = int(self.calib["first_seed"])
        z = seed_latents(range(first, first + int(self.calib["seeds"])), self.g.z_dim)
        strengths = [float(a) for a in self.calib["azimuths"]]
        self.calibration = calibrate(self.render, z, strengths, regressor)
        if self.calibration.r2 < float(self.calib["min_r2"]):
            warnings.warn(f"hologan: the yaw regressor follows the azimuth poorly (R^2 {self.calibration.r2:.2f} < "
                          f"{self.calib['min_r2']}); rotations are in uncertain degrees", stacklevel=2)

    # ------------------------------------------------------------------------------------------------- rotate
    def azimuths(self, yaw_deg: Tensor) -> Tensor:
        """Generator azimuths (A,) for requested yaw changes ``yaw_deg`` (A,) degrees, through the calibration."""
        if self.calibration is None:
            raise RuntimeError("hologan: call prepare before rotate (it calibrates the azimuth)")
        return self.calibration.strength(yaw_deg.detach().cpu()).float()

    def rotate(self, seeds: Sequence[int], yaw_deg: Tensor) -> Rotation:
        if self.g is None:
            raise RuntimeError("hologan: call prepare before rotate")
        z = seed_latents(list(seeds), self.g.z_dim)
        azimuth = self.azimuths(yaw_deg)
        n, a = z.shape[0], azimuth.numel()
        source = self.render(z, 0.0)
        rotated = self.render(z.repeat_interleave(a, 0), azimuth.repeat(n)).view(n, a, *source.shape[1:])
        limit = float(self.meta.get("training", {}).get("train_config", {}).get("azimuth_range", float("inf")))
        extras = {"azimuth_deg": azimuth.tolist(), "calibration": self.calibration.to_dict(),
                  "beyond_training_range": bool((azimuth.abs() > limit).any())}
        return Rotation(source=source, rotated=rotated, extras=extras)
