"""The ``unsup3d`` shape method: shipped (or freshly trained) Unsup3d weights scored by the benchmark harness.

``reconstruct`` returns the canonical depth warped to the predicted view (the plain, not mirrored, render) and its
validity mask, as the BFM protocol scores Unsup3d, plus the canonical depth, albedo, view and light.

Which weights: ``weights`` when ``symmetry`` is on, ``weights_no_symmetry`` when it is off (the ``no_symmetry``
ablation); the model card's ``symmetry`` must match. With ``from_scratch: true``, or when that file is missing and
``train_if_missing`` is on, ``prepare`` trains a model on the training split with the ``train`` settings (the keys of
``configs/model/unsup3d*.yaml`` plus ``iterations``) and caches it under ``<paths.work_dir>/unsup3d/<key>/``
(resumable: an interrupted run continues from its checkpoint).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from core.errors import BenchError
from core.registry import METHODS
from methods.base import PrepareContext, Reconstruction, ShapeMethod
from methods.common.data import split_images

from . import training
from .model import Unsup3dNet
from .perceptual import build_features

__all__ = ["Unsup3d"]


@METHODS.register("unsup3d")
class Unsup3d(ShapeMethod):
    """Unsup3d (Wu et al. 2020): one feed-forward pass per image, no per-image optimisation."""

    def __init__(self, weights: str | None = None, weights_no_symmetry: str | None = None, symmetry: bool = True,
                 from_scratch: bool = False, train_if_missing: bool = True, train: dict[str, Any] | None = None,
                 train_split: str = "train", seed: int = 0):
        self.weights = weights if symmetry else weights_no_symmetry
        self.symmetry = bool(symmetry)
        self.from_scratch, self.train_if_missing = bool(from_scratch), bool(train_if_missing)
        self.train_settings = {**dict(train or {}), "symmetry": self.symmetry}
        self.train_split, self.seed = train_split, int(seed)
        training.split_settings(self.train_settings)  # fail early on misspelt keys
        self.net: Unsup3dNet | None = None
        self.card: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------------ prepare
    def prepare(self, ctx: PrepareContext) -> None:
        path = Path(self.weights) if self.weights else None
        if not self.from_scratch and path is not None and path.is_file():
            self.net, self.card = training.load_weights(path, ctx.device)
            trained_symmetry = self.card["model"].get("symmetry")
            if trained_symmetry != self.symmetry:
                raise BenchError(f"{path} was trained with symmetry={trained_symmetry}, but method.symmetry="
                                 f"{self.symmetry}; point method.weights / method.weights_no_symmetry at matching "
                                 f"weights or set method.from_scratch=true")
            return
        if not (self.from_scratch or self.train_if_missing):
            raise BenchError(f"Unsup3d weights {path} not found; make them with `bench train model=unsup3d_cpu "
                             f"model.symmetry={str(self.symmetry).lower()} train.export={path}` or set "
                             f"method.train_if_missing=true")
        self.net, self.card = self._train(ctx)

    def _train(self, ctx: PrepareContext) -> tuple[Unsup3dNet, dict[str, Any]]:
        """Train (or resume, or reuse) a model with ``self.train_settings``, cached in the work folder."""
        settings = dict(self.train_settings)
        iterations = int(settings.get("iterations", 0))
        if iterations < 1:
            raise BenchError("method.train.iterations must be >= 1 to train Unsup3d from scratch")
        key_src = json.dumps({"settings": settings, "dataset": ctx.dataset_name, "split": self.train_split,
                              "seed": self.seed}, sort_keys=True)
        folder = Path(ctx.work_dir) / "unsup3d" / hashlib.sha256(key_src.encode()).hexdigest()[:12]
        export = folder / "weights.safetensors"
        if export.is_file():
            return training.load_weights(export, ctx.device)
        model_cfg, train_cfg, perc = training.split_settings(settings)
        features = build_features(perc["perceptual"], perc["perceptual_weights"], model_cfg.image_size, ctx.device)
        data = split_images(ctx.load_split(self.train_split))
        ckpt = folder / "checkpoint.pt"
        if ckpt.is_file():
            state = training.load_checkpoint(ckpt, ctx.device, train_cfg)
        else:
            state = training.create_state(model_cfg, train_cfg, ctx.device, seed=self.seed)
        print(f"unsup3d: training from scratch for {iterations} iterations ({folder})", flush=True)

        def on_step(st: training.TrainState, logs: dict[str, float]) -> None:
            if st.step % 250 == 0:
                training.save_checkpoint(ckpt, st)

        training.train_loop(state, data, iterations, features, on_step)
        training.save_checkpoint(ckpt, state)
        card = {"trained_by": "method unsup3d prepare (from_scratch)", "settings": settings,
                "dataset": ctx.dataset_name, "split": self.train_split, "seed": self.seed, "iterations": state.step}
        training.save_weights(export, state.net, card)
        return training.load_weights(export, ctx.device)

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
