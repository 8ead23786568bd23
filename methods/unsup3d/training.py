"""Unsup3d training: data order, one step, the loop, resumable checkpoints, shipped weights, validation.

The published recipe: Adam (lr 1e-4, betas (0.9, 0.999), weight decay 5e-4 as L2 inside Adam) on all five
networks, batch 64, 30 epochs, shuffled epochs, no augmentation. One Adam over all parameters is identical to the
original's one Adam per network (Adam is per-parameter). Images are kept in memory as ``(N, 3, S, S)`` uint8.

Data order is a pure function of ``(seed, step)``: epoch ``e`` visits a permutation drawn from ``seed`` and ``e``
and drops the last incomplete batch, so a run resumed from a checkpoint (networks, Adam state, step) continues
exactly where it stopped, with no random state to save.

Weights format: ``<name>.safetensors`` with the state_dict of :class:`~methods.unsup3d.model.Unsup3dNet`
(``netD.*``, ``netA.*``, ``netV.*``, ``netL.*``, ``netC.*``) and ``<name>.json`` beside it:
``{"format": "gan2shape-bench.unsup3d", "format_version": 1, "model": <Unsup3dConfig>, "training": <model card>}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from core import weights as weights_io
from core.errors import BenchError
from core.weights import atomic_torch_save
from metrics.shape import shape_summary

from .losses import unsup3d_loss
from .model import Unsup3dConfig, Unsup3dNet, Unsup3dOutput

__all__ = ["TrainConfig", "TrainState", "split_settings", "create_state", "batch_indices", "depth_prior", "train_step",
           "save_checkpoint", "load_checkpoint", "save_weights", "load_weights", "read_card", "evaluate_shape",
           "predict", "iter_predict", "as_float_images", "FORMAT"]

FORMAT = "gan2shape-bench.unsup3d"
FORMAT_VERSION = 1
CHECKPOINT_VERSION = 1
Features = Callable[[Tensor], Tensor]


def _schedule(name: str, points: Any) -> tuple[tuple[int, float], ...]:
    try:
        schedule = tuple((int(step), float(value)) for step, value in points)
    except (TypeError, ValueError):
        schedule = None
    if schedule is None or any(b[0] <= a[0] for a, b in zip(schedule, schedule[1:])):
        raise BenchError(f"{name} must be [[step, value], ...] with increasing steps, got {points}")
    return schedule


def piecewise_linear(points: tuple[tuple[int, float], ...], step: int, before: float) -> float:
    """The value of a ``((step, value), ...)`` schedule at ``step``: ``before`` ahead of the first point, linear
    between points, the last value after the last point.

    >>> piecewise_linear(((10, 2.0), (20, 4.0)), 15, before=0.0), piecewise_linear(((10, 2.0),), 5, before=1.0)
    (3.0, 1.0)
    """
    if not points or step < points[0][0]:
        return before
    for (s0, v0), (s1, v1) in zip(points, points[1:]):
        if step < s1:
            return v0 + (v1 - v0) * (step - s0) / (s1 - s0)
    return points[-1][1]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; defaults are the published ones."""

    batch_size: int = 64
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 5e-4
    lam_perc: float = 1.0
    lam_flip: float = 0.5
    lam_depth_sm: float = 0.0
    lam_depth_curv: float = 0.0
    lam_coarse: float = 0.0
    coarse_kernel: int = 9
    depth_prior_steps: int = 0
    depth_prior_lr: float = 1e-3
    depth_prior_box: tuple[float, float, float, float] = (0.2, 0.8, 0.125, 0.9)
    view_spread_schedule: tuple[tuple[int, float], ...] = ()
    lr_schedule: tuple[tuple[int, float], ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "depth_prior_box", tuple(float(v) for v in self.depth_prior_box))
        if len(self.depth_prior_box) != 4:
            raise BenchError(f"depth_prior_box must be 4 fractions (x0, x1, y0, y1), got {self.depth_prior_box}")
        for name in ("view_spread_schedule", "lr_schedule"):
            object.__setattr__(self, name, _schedule(name, getattr(self, name)))

    def view_spread_at(self, step: int) -> float:
        """The spread prior's standard deviation (degrees) at ``step``: 0 before the schedule's first step, then
        piecewise linear through its points, constant after the last.

        >>> cfg = TrainConfig(view_spread_schedule=[[800, 10], [3000, 10], [5000, 20]])
        >>> [cfg.view_spread_at(s) for s in (0, 800, 2000, 4000, 9000)]
        [0.0, 10.0, 10.0, 15.0, 20.0]
        """
        return piecewise_linear(self.view_spread_schedule, step, before=0.0)

    def lr_at(self, step: int) -> float:
        """The photometric learning rate at ``step``: ``lr`` times ``lr_schedule``'s factor (1 before its first
        point, then piecewise linear, constant after the last).

        >>> cfg = TrainConfig(lr=1e-3, lr_schedule=[[4000, 1.0], [8000, 0.1]])
        >>> [round(cfg.lr_at(s), 6) for s in (0, 4000, 6000, 9000)]
        [0.001, 0.001, 0.00055, 0.0001]
        """
        return self.lr * piecewise_linear(self.lr_schedule, step, before=1.0)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a mapping, ignoring keys that are not training settings."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


PERCEPTUAL_KEYS = ("perceptual", "perceptual_weights")
_META_KEYS = ("name", "arch", "export", "iterations", "val_split", "val_images")


def split_settings(values: dict[str, Any]) -> tuple[Unsup3dConfig, TrainConfig, dict[str, Any]]:
    """Split a flat settings mapping (``configs/model/unsup3d*.yaml``, the method's ``train`` block) into the
    model architecture, the optimisation settings and the perceptual network (``perceptual``: ``discriminator`` or
    ``none``, ``perceptual_weights``). Keys ``name``, ``arch``, ``export``, ``iterations``, ``val_split`` and
    ``val_images`` are ignored here; any other unknown key is an error.

    >>> model, train, perc = split_settings({"symmetry": False, "batch_size": 8, "perceptual": "none"})
    >>> model.symmetry, train.batch_size, perc["perceptual"]
    (False, 8, 'none')
    """
    model_keys = {f.name for f in fields(Unsup3dConfig)}
    train_keys = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - model_keys - train_keys - set(PERCEPTUAL_KEYS) - set(_META_KEYS))
    if unknown:
        raise BenchError(f"unknown Unsup3d settings {unknown}; valid: "
                         f"{sorted(model_keys | train_keys | set(PERCEPTUAL_KEYS) | set(_META_KEYS))}")
    try:
        model = Unsup3dConfig.from_dict({k: v for k, v in values.items() if k in model_keys})
    except ValueError as err:
        raise BenchError(str(err)) from None
    train = TrainConfig(**{k: v for k, v in values.items() if k in train_keys})
    if model.view_spread != bool(train.view_spread_schedule):
        raise BenchError("view_spread (the model's yaw standardisation) and view_spread_schedule (its spread over "
                         "the steps) go together: set both or neither")
    perceptual = {"perceptual": values.get("perceptual", "none"), "perceptual_weights": values.get("perceptual_weights")}
    return model, train, perceptual


@dataclass
class TrainState:
    """Everything a run needs to continue: the networks, Adam, the step, the data seed and caller metadata."""

    net: Unsup3dNet
    optim: torch.optim.Optimizer
    cfg: TrainConfig
    seed: int
    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device


def _adam(net: Unsup3dNet, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)


def create_state(model_cfg: Unsup3dConfig, cfg: TrainConfig, device: torch.device | str = "cpu",
                 seed: int = 0) -> TrainState:
    """Fresh networks (initialised from ``seed`` without touching the global RNG) and optimiser."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Unsup3dNet(model_cfg)
    net = net.to(device).train()
    return TrainState(net, _adam(net, cfg), cfg, seed)


# ------------------------------------------------------------------------------------------------------ data
def as_float_images(images: Tensor) -> Tensor:
    """uint8 [0, 255] or float [-1, 1] images ``(B, 3, S, S)`` -> float32 in [-1, 1]."""
    return images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images.float()


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> Tensor:
    """Indices of the images of training step ``step``: shuffled epochs of ``n // batch_size`` batches.

    >>> a = batch_indices(10, 4, 0, seed=0); b = batch_indices(10, 4, 1, seed=0)
    >>> len(set(a.tolist()) | set(b.tolist()))
    8
    """
    if n < batch_size:
        raise ValueError(f"need at least batch_size={batch_size} training images, got {n}")
    per_epoch = n // batch_size
    epoch, pos = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return order[pos * batch_size : (pos + 1) * batch_size]


# ------------------------------------------------------------------------------------------------------ steps
def depth_prior(cfg: TrainConfig, size: int, device: torch.device | str = "cpu") -> Tensor:
    """The depth the first ``depth_prior_steps`` fit: GAN2Shape's ellipsoid (near 0.92, far 1.0) over the box
    ``depth_prior_box`` (fractions x0, x1, y0, y1 of the image), ``(1, size, size)``.

    >>> d = depth_prior(TrainConfig(), 64)
    >>> tuple(d.shape), round(float(d.min()), 2), float(d.max())
    ((1, 64, 64), 0.92, 1.0)
    """
    from methods.common.shape_prior import ellipsoid_depth

    x0, x1, y0, y1 = (round(f * size) for f in cfg.depth_prior_box)
    box = torch.zeros(1, size, size, device=device)
    box[:, y0:y1, x0:x1] = 1
    return ellipsoid_depth(box, near=0.92, far=1.0)


def _depth_prior_step(state: TrainState, images: Tensor) -> dict[str, float]:
    """One Adam step (at ``depth_prior_lr``) of the depth network alone towards :func:`depth_prior`."""
    for group in state.optim.param_groups:
        group["lr"] = state.cfg.depth_prior_lr
    target = depth_prior(state.cfg, images.shape[-1], images.device)
    loss = (state.net.canonical_depth(images)[0] - target).abs().mean()
    state.optim.zero_grad(set_to_none=True)
    loss.backward()  # only D has gradients; Adam leaves the other networks alone
    state.optim.step()
    return {"depth_prior": float(loss.detach())}


def train_step(state: TrainState, data: Tensor, features: Features | None = None) -> dict[str, float]:
    """One Adam step on the batch of ``state.step``; returns the loss terms and the epoch; increments the step.

    The first ``depth_prior_steps`` steps fit the depth network to :func:`depth_prior` instead (GAN2Shape's convex
    start: with a learned light and a flat start the depth can settle concave, with the light mirrored); the
    photometric training then starts with a fresh Adam state at ``lr`` (times ``lr_schedule``'s factor). With
    ``view_spread`` (model), the spread prior on the views follows ``view_spread_schedule``. Schedules count steps
    from 0, depth-prior steps included.
    """
    cfg = state.cfg
    idx = batch_indices(data.shape[0], cfg.batch_size, state.step, state.seed)
    images = as_float_images(data[idx]).to(state.device)
    state.net.train()
    state.net.set_view_spread(cfg.view_spread_at(state.step))
    if state.step < cfg.depth_prior_steps:
        logs = _depth_prior_step(state, images)
        state.step += 1
        return {**logs, "epoch": state.step / (data.shape[0] // cfg.batch_size)}
    if state.step == cfg.depth_prior_steps > 0:
        state.optim.state.clear()
    for group in state.optim.param_groups:
        group["lr"] = cfg.lr_at(state.step)
    out = state.net(images)
    loss = unsup3d_loss(out, features, cfg.lam_perc, cfg.lam_flip, cfg.lam_depth_sm, cfg.lam_depth_curv,
                        cfg.lam_coarse, cfg.coarse_kernel)
    state.optim.zero_grad(set_to_none=True)
    loss.total.backward()
    state.optim.step()
    state.step += 1
    logs = loss.as_floats()
    logs["epoch"] = state.step / (data.shape[0] // cfg.batch_size)
    if out.conf_l1 is not None:
        logs["conf_sigma_l1"] = float(out.conf_l1.detach().mean())
    return logs


# ------------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | Path, state: TrainState) -> Path:
    """Write ``state`` atomically as plain state_dicts (loadable with ``weights_only=True``)."""
    path = Path(path)
    atomic_torch_save(path, {"version": CHECKPOINT_VERSION, "net": state.net.state_dict(),
                        "optim": state.optim.state_dict(), "step": state.step, "seed": state.seed,
                        "model_config": state.net.cfg.to_dict(), "train_config": asdict(state.cfg),
                        "extra": state.extra})
    return path


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu",
                    cfg: TrainConfig | None = None) -> TrainState:
    """Rebuild a :class:`TrainState` from :func:`save_checkpoint` output; ``cfg`` overrides the saved settings
    (the optimiser's lr, betas and weight decay follow it)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: unknown Unsup3d checkpoint version {payload.get('version')}")
    cfg = cfg or TrainConfig(**payload["train_config"])
    net = Unsup3dNet(Unsup3dConfig.from_dict(payload["model_config"]))
    net.load_state_dict(payload["net"], strict=True)
    net = net.to(device).train()
    optim = _adam(net, cfg)
    optim.load_state_dict(payload["optim"])
    for group in optim.param_groups:
        group.update(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    return TrainState(net, optim, cfg, int(payload["seed"]), int(payload["step"]), dict(payload.get("extra") or {}))


# ------------------------------------------------------------------------------------------------ shipped weights
def save_weights(path: str | Path, net: Unsup3dNet, card: dict[str, Any]) -> Path:
    """Export ``net`` to ``path`` (.safetensors) and its JSON sidecar (architecture + model card), atomically."""
    return weights_io.save_weights(path, net.state_dict(), FORMAT, FORMAT_VERSION, net.cfg.to_dict(), card)


def read_card(path: str | Path) -> dict[str, Any]:
    """The JSON sidecar of a weights file (``model`` and ``training``); BenchError when missing or invalid."""
    return weights_io.read_card(path, FORMAT)


def load_weights(path: str | Path, device: torch.device | str = "cpu") -> tuple[Unsup3dNet, dict[str, Any]]:
    """Load shipped weights: the network (eval mode, strict) and its sidecar."""
    tensors, meta = weights_io.load_weights(path, FORMAT, "train them with `bench train model=unsup3d_cpu` or set "
                                                          "method.weights=<file>")
    try:
        net = Unsup3dNet(Unsup3dConfig.from_dict(meta["model"]))
        net.load_state_dict(tensors, strict=True)
    except (ValueError, RuntimeError, TypeError) as err:
        raise BenchError(f"Unsup3d weights {path} do not match their model card: {str(err)[:300]}") from None
    return net.to(device).eval(), meta


# ---------------------------------------------------------------------------------------------------- inference
@torch.no_grad()
def iter_predict(net: Unsup3dNet, images: Tensor, batch_size: int = 64) -> Iterator[Unsup3dOutput]:
    """Forward passes over ``images`` ``(N, 3, S, S)`` (uint8 or [-1, 1]) in batches, on the net's device, one
    batch at a time (memory stays at one batch's outputs)."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        for i in range(0, images.shape[0], batch_size):
            yield net(as_float_images(images[i : i + batch_size]).to(device))
    finally:
        net.train(was_training)


def predict(net: Unsup3dNet, images: Tensor, batch_size: int = 64) -> list[Unsup3dOutput]:
    """All outputs of :func:`iter_predict` as a list (small inputs only: every output is kept)."""
    return list(iter_predict(net, images, batch_size))


@torch.no_grad()
def evaluate_shape(net: Unsup3dNet, images: Tensor, depths: Tensor, batch_size: int = 64) -> dict[str, float]:
    """SIDE (x1e-2), MAD and exact MAD means/stds of the input-view depth against ``depths`` ``(N, S, S)``.

    Uses the plain (not mirrored) render and its validity mask, as the benchmark's ``shape_recon`` does.
    """
    starts = range(0, images.shape[0], batch_size)
    summary = shape_summary((out.recon_depth[:out.batch], depths[start : start + out.batch], out.valid[:out.batch, 0])
                            for start, out in zip(starts, iter_predict(net, images, batch_size)))
    summary["n_images"] = float(images.shape[0])
    return summary
