"""The yaw regressor on the single training driver: ``bench train model=yaw_regressor dataset=synface_proc``.

Loads ``train.split`` (area-downsampled to ``model.image_size``, uint8 in memory) with its ground-truth ``view``,
and regresses (yaw, pitch) in units of ``model.unit_deg`` with a smooth-L1 loss, Adam and a cosine learning rate.
Augmentation: a horizontal flip negates yaw (a mirrored head turned by ``yaw`` is the head turned by ``-yaw``:
``M Ry(yaw) M = Ry(-yaw)`` and ``M Rx(pitch) M = Rx(pitch)`` for ``M = diag(-1, 1, 1)``), a 1-pixel random shift,
and a brightness/contrast jitter (so the GAN's colour drift does not read as pose). Validation: the mean absolute
error on ``model.val_split``. ``model.iterations`` fixes the schedule of the shipped weights (the cosine's length);
``train.iterations`` only stops a run earlier (rerun with a larger value to continue). The schedule, the
validation keys and the export path may change between resumed parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import BenchError
from core.registry import TRAINERS
from core.weights import atomic_torch_save
from methods.base import TrainContext, TrainRecipe
from methods.common.data import resize_uint8, split_images
from methods.common.yaw import YawRegressor, save_yaw_regressor

__all__ = ["YawRecipe", "split_views", "augment", "evaluate_mae"]

# settings that may change between resumed parts of one training
_NOT_RESUMED = ("iterations", "val_split", "val_images", "export")


def split_views(ds, size: int) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """Images (N, 3, size, size) uint8 (area-downsampled), views (N, 3) degrees and the generation seed of a split."""
    if len(ds) == 0 or not hasattr(ds, "array"):
        raise BenchError("the yaw regressor trains on a dataset with ground-truth view arrays (synface_proc); this "
                         "split is empty or has none")
    images = resize_uint8(split_images(ds, channels_last=True), size)
    views = torch.from_numpy(np.asarray(ds.array("view"), dtype=np.float32))
    return images, views, ((getattr(ds, "meta", None) or {}).get("config") or {}).get("seed")


def augment(images: torch.Tensor, targets: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, S, S) in [-1, 1] and targets (B, 2) (yaw, pitch) -> flipped (yaw negated), shifted by up to
    1 pixel and colour-jittered copies."""
    b = images.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    targets = targets.clone()
    targets[flip, 0] = -targets[flip, 0]
    s = images.shape[-1]
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    dx, dy = torch.randint(0, 3, (2,), generator=gen).tolist()  # one shift per batch keeps it a cheap slice
    images = padded[:, :, dy:dy + s, dx:dx + s]
    gain = 1 + 0.2 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)
    bias = 0.2 * (torch.rand(b, 3, 1, 1, generator=gen) - 0.5)
    return (images * gain + bias).clamp(-1, 1), targets


@torch.no_grad()
def evaluate_mae(net: YawRegressor, images: torch.Tensor, views: torch.Tensor, batch: int = 500) -> dict[str, float]:
    """Mean absolute yaw (and pitch) error in degrees of ``net`` on uint8 images (N, 3, S, S), views (N, 3)."""
    net.eval()
    device = next(net.parameters()).device
    pred = torch.cat([net.predict(c.to(device).float() / 127.5 - 1).cpu() for c in images.split(batch)])
    net.train()
    out = {"mae_yaw_deg": float((pred[:, 0] - views[:, 0]).abs().mean())}
    if pred.shape[1] > 1:
        out["mae_pitch_deg"] = float((pred[:, 1] - views[:, 1]).abs().mean())
    return out


@dataclass
class YawState:
    """Network, optimiser, the generator of batches and augmentations, the driver's ``extra`` and the step."""

    net: YawRegressor
    opt: torch.optim.Optimizer
    gen: torch.Generator
    extra: dict[str, Any] = field(default_factory=dict)
    step: int = 0


@TRAINERS.register("yaw_regressor")
class YawRecipe(TrainRecipe):
    """The face-rotation experiment's shared yaw (and pitch) regressor."""

    def __init__(self, ctx: TrainContext):
        super().__init__(ctx)
        m = self.m = ctx.settings
        size = int(m["image_size"])
        self.images, views, self.data_seed = split_views(ctx.load_split(ctx.train_split, ctx.train_limit), size)
        self.val_images, self.val_views, _ = split_views(ctx.load_split(m["val_split"], m["val_images"]), size)
        self.targets = torch.stack([views[:, 0], views[:, 1]], 1)[:, :int(m["n_out"])] / float(m["unit_deg"])

    @property
    def schedule(self) -> int:
        """Length of the cosine learning-rate schedule."""
        return int(self.m["iterations"]) if self.m.get("iterations") is not None else self.ctx.iterations

    def total_iterations(self) -> int:
        return min(self.schedule, self.ctx.iterations)

    def resume_settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.m.items() if k not in _NOT_RESUMED}

    def _fresh(self) -> YawState:
        m = self.m
        net = YawRegressor(int(m["width"]), int(m["n_out"]), int(m["image_size"]), float(m["unit_deg"]))
        net = net.to(self.ctx.device)
        return YawState(net, torch.optim.Adam(net.parameters(), lr=float(m["lr"])),
                        torch.Generator().manual_seed(self.ctx.seed))

    def create(self) -> YawState:
        return self._fresh()

    def step(self, state: YawState) -> dict[str, float]:
        m, device = self.m, self.ctx.device
        idx = torch.randint(0, len(self.images), (int(m["batch_size"]),), generator=state.gen)
        x, y = augment(self.images[idx].float() / 127.5 - 1, self.targets[idx], state.gen)
        for group in state.opt.param_groups:
            group["lr"] = float(m["lr"]) * 0.5 * (1 + math.cos(math.pi * state.step / self.schedule))
        state.net.train()
        loss = F.smooth_l1_loss(state.net.forward_units(x.to(device)), y.to(device), beta=0.1)
        state.opt.zero_grad(set_to_none=True)
        loss.backward()
        state.opt.step()
        state.step += 1
        return {"loss": float(loss.detach())}

    def save(self, path: Path, state: YawState) -> None:
        # the layout of the job this recipe replaced: identity in "extra", wall time beside it, no losses
        identity = {k: state.extra[k] for k in ("model", "dataset", "seed")}
        atomic_torch_save(path, {"net": state.net.state_dict(), "opt": state.opt.state_dict(),
                                 "gen": state.gen.get_state(), "step": state.step,
                                 "wall_time_s": float(state.extra.get("wall_time_s", 0.0)), "extra": identity})

    def load(self, path: Path) -> YawState:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        state = self._fresh()
        state.net.load_state_dict(saved["net"])
        state.opt.load_state_dict(saved["opt"])
        state.gen.set_state(saved["gen"])
        state.step = int(saved["step"])
        state.extra = {**saved["extra"], "wall_time_s": float(saved["wall_time_s"])}
        return state

    def evaluate(self, state: YawState) -> dict[str, float]:
        return evaluate_mae(state.net, self.val_images, self.val_views)

    def export(self, state: YawState, path: Path, card: dict[str, Any]) -> None:
        data = card["dataset"][self.ctx.train_split]
        save_yaw_regressor(path, state.net, {
            "command": card["command"], "commit": card["commit"], "device": card["device"],
            "wall_time_s": card["wall_time_s"], "iterations": state.step, "batch_size": int(self.m["batch_size"]),
            "seed": card["seed"], "train_config": card["train_config"],
            "dataset": {k: data[k] for k in ("name", "root", "split", "images", "generation_seed")},
            "held_out": {"split": self.m["val_split"], "images": len(self.val_images), **card["validation"]}})

    def summary(self, state: YawState, scores: dict[str, float]) -> str:
        pitch = f", pitch {scores['mae_pitch_deg']:.2f} deg" if "mae_pitch_deg" in scores else ""
        return f"{state.step} iterations; held-out {self.m['val_split']} MAE yaw {scores['mae_yaw_deg']:.2f} deg{pitch}"
