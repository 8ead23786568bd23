"""Training recipe of the supervised depth network (``bench train model=supervised``).

Loss: mean absolute log-depth error over every pixel (head and background), ``|log d_pred - log d_gt|``. Data:
the training split in memory (uint8 images, float32 depth); batch ``b`` of step ``t`` is a pure function of
``(seed, t)`` (shuffled epochs, :func:`methods.unsup3d.training.batch_indices`), and each batch is mirrored
left-right with probability 1/2 (image and depth together, drawn from ``(seed, t)`` too), so a resumed run continues
bit-exactly. Adam, no weight decay. Validation: SIDE/MAD of the first ``val_images`` images of ``val_split``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from core.errors import BenchError
from core.registry import TRAINERS
from core.weights import atomic_torch_save, load_weights, save_weights
from methods.base import TrainContext, TrainRecipe, TrainState
from methods.common.data import split_images_depths
from methods.unsup3d.training import as_float_images, batch_indices
from metrics.shape import shape_summary

from .model import SupervisedConfig, SupervisedDepthNet

__all__ = ["FORMAT", "SupervisedTrainConfig", "SupervisedState", "SupervisedRecipe", "load_supervised",
           "supervised_loss"]

FORMAT = "gan2shape-bench.supervised"
FORMAT_VERSION = 1
_META_KEYS = ("name", "arch", "export", "val_split", "val_images")


@dataclass(frozen=True)
class SupervisedTrainConfig:
    """Optimisation settings."""

    batch_size: int = 32
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    flip: bool = True


def split_settings(values: dict[str, Any]) -> tuple[SupervisedConfig, SupervisedTrainConfig]:
    """Architecture and optimisation settings of a flat ``configs/model/supervised.yaml`` mapping.

    >>> model, train = split_settings({"nf": 8, "batch_size": 4, "name": "x"})
    >>> model.nf, train.batch_size
    (8, 4)
    """
    model_keys = {f.name for f in fields(SupervisedConfig)}
    train_keys = {f.name for f in fields(SupervisedTrainConfig)}
    unknown = sorted(set(values) - model_keys - train_keys - set(_META_KEYS))
    if unknown:
        raise BenchError(f"unknown supervised settings {unknown}; valid: "
                         f"{sorted(model_keys | train_keys | set(_META_KEYS))}")
    return (SupervisedConfig(**{k: v for k, v in values.items() if k in model_keys}),
            SupervisedTrainConfig(**{k: v for k, v in values.items() if k in train_keys}))


def supervised_loss(pred: Tensor, gt: Tensor) -> Tensor:
    """Mean absolute log-depth error of ``(B, H, W)`` maps.

    >>> float(supervised_loss(torch.ones(1, 2, 2), torch.ones(1, 2, 2)))
    0.0
    """
    return (pred.log() - gt.log()).abs().mean()


@dataclass
class SupervisedState(TrainState):
    net: SupervisedDepthNet
    optim: torch.optim.Optimizer
    step: int = 0
    extra: dict[str, Any] | None = None


@TRAINERS.register("supervised")
class SupervisedRecipe(TrainRecipe):
    """The supervised depth network on the single training driver."""

    def __init__(self, ctx: TrainContext):
        super().__init__(ctx)
        self.model_cfg, self.cfg = split_settings(ctx.settings)
        self.images, self.depths = split_images_depths(ctx.load_split(ctx.train_split, ctx.train_limit),
                                                       f"training split {ctx.train_split} of {ctx.dataset_name}")
        val_split = ctx.settings.get("val_split", "val")
        self.val_images, self.val_depths = split_images_depths(
            ctx.load_split(val_split, int(ctx.settings.get("val_images", 256))),
            f"validation split {val_split} of {ctx.dataset_name}")
        if self.images.shape[-1] != self.model_cfg.image_size:
            raise BenchError(f"dataset images are {self.images.shape[-1]}px but model.image_size is "
                             f"{self.model_cfg.image_size}")

    def _adam(self, net: SupervisedDepthNet) -> torch.optim.Optimizer:
        return torch.optim.Adam(net.parameters(), lr=self.cfg.lr, betas=(self.cfg.beta1, self.cfg.beta2))

    def create(self) -> SupervisedState:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.ctx.seed)
            net = SupervisedDepthNet(self.model_cfg)
        net = net.to(self.ctx.device).train()
        return SupervisedState(net, self._adam(net), 0, {})

    def step(self, state: SupervisedState) -> dict[str, float]:
        idx = batch_indices(self.images.shape[0], self.cfg.batch_size, state.step, self.ctx.seed)
        image = as_float_images(self.images[idx]).to(self.ctx.device)
        depth = self.depths[idx].to(self.ctx.device)
        if self.cfg.flip:
            gen = torch.Generator().manual_seed(self.ctx.seed * 1_000_003 + state.step + 7)
            if bool(torch.rand((), generator=gen) < 0.5):
                image, depth = image.flip(-1), depth.flip(-1)
        state.net.train()
        loss = supervised_loss(state.net(image), depth)
        state.optim.zero_grad(set_to_none=True)
        loss.backward()
        state.optim.step()
        state.step += 1
        return {"loss": float(loss.detach())}

    def save(self, path: Path, state: SupervisedState) -> None:
        atomic_torch_save(path, {"version": 1, "net": state.net.state_dict(), "optim": state.optim.state_dict(),
                                 "step": state.step, "extra": state.extra})

    def load(self, path: Path) -> SupervisedState:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        net = SupervisedDepthNet(self.model_cfg)
        net.load_state_dict(payload["net"], strict=True)
        net = net.to(self.ctx.device).train()
        optim = self._adam(net)
        optim.load_state_dict(payload["optim"])
        return SupervisedState(net, optim, int(payload["step"]), dict(payload.get("extra") or {}))

    @torch.no_grad()
    def evaluate(self, state: SupervisedState) -> dict[str, float]:
        return evaluate_depth(state.net, self.val_images, self.val_depths)

    def sample_grid(self, state: SupervisedState):
        from core import images as vis
        from methods.renderer.mesh import normals_to_uint8

        state.net.eval()
        with torch.no_grad():
            pred = state.net(as_float_images(self.val_images[:8]).to(self.ctx.device)).cpu()
        state.net.train()
        fov = 10.0
        rows = [[vis.image_to_uint8(as_float_images(self.val_images[i:i + 1])[0]), vis.depth_to_uint8(pred[i]),
                 normals_to_uint8(pred[i], fov), vis.depth_to_uint8(self.val_depths[i]),
                 normals_to_uint8(self.val_depths[i], fov)] for i in range(pred.shape[0])]
        return vis.grid(rows)

    def export(self, state: SupervisedState, path: Path, card: dict[str, Any]) -> None:
        save_weights(path, state.net.state_dict(), FORMAT, FORMAT_VERSION, state.net.cfg.to_dict(),
                     {**card, "batch_size": self.cfg.batch_size, "optimisation": asdict(self.cfg)})


@torch.no_grad()
def evaluate_depth(net: SupervisedDepthNet, images: Tensor, depths: Tensor, batch_size: int = 64) -> dict[str, float]:
    """SIDE (x1e-2), MAD and exact MAD (means and stds) of the predicted input-view depth."""
    was = net.training
    net.eval()
    device = next(net.parameters()).device
    batches = ((net(as_float_images(images[i:i + batch_size]).to(device)), depths[i:i + batch_size])
               for i in range(0, images.shape[0], batch_size))
    summary = shape_summary((pred, gt, torch.ones_like(pred)) for pred, gt in batches)
    net.train(was)
    return summary


def load_supervised(path: str | Path, device: torch.device | str = "cpu") -> tuple[SupervisedDepthNet, dict]:
    """Shipped weights and card -> the network (eval mode) and the card."""
    tensors, meta = load_weights(path, FORMAT, "train them with `bench train model=supervised` or set "
                                              "method.weights=<file>")
    try:
        net = SupervisedDepthNet(SupervisedConfig.from_dict(meta["model"]))
        net.load_state_dict(tensors, strict=True)
    except (ValueError, RuntimeError, TypeError) as err:
        raise BenchError(f"supervised weights {path} do not match their model card: {str(err)[:300]}") from None
    return net.to(device).eval(), meta
