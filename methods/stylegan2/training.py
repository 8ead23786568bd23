"""StyleGAN2 training (Karras et al. 2020, config-e/f recipe as in rosinality's ``train.py``), device-agnostic.

Per iteration: a D step on the logistic loss ``softplus(D(G(z))) + softplus(-D(x))``; every ``d_reg_every`` steps a
lazy R1 step ``gamma/2 * |grad_x D(x)|² * d_reg_every``; a G step on the non-saturating loss
``softplus(-D(G(z)))``; optionally every ``g_reg_every`` steps a lazy path-length step; then the EMA generator
update ``p_ema = decay * p_ema + (1 - decay) * p`` with ``decay = 0.5 ** (batch / (ema_half_life_kimg * 1000))``
(0.5^(32/10000) for batch 32 and 10 kimg, as rosinality). Adam uses lr 0.002, betas (0, 0.99), both corrected by
the lazy-regularisation ratio ``c = every / (every + 1)`` (lr * c, betas ** c) for a network whose regulariser is on.
Style mixing (two z, random crossover) with probability ``mixing``; per-sample random noise maps during training.
Mixed precision (fp16 autocast + GradScaler) is used only on CUDA and only for the main losses; the
regularisers run in fp32.

Every random number of training (z, noise, crossover, batch indices, flips) comes from the CPU generator
``TrainState.rng``, saved in checkpoints, so resuming continues exactly the run that was interrupted.
Real images are (N, 3, S, S): uint8 in [0, 255] (memory-friendly) or floats in [-1, 1].
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model import Discriminator, Generator

__all__ = ["TrainConfig", "TrainState", "create_state", "d_logistic_loss", "g_nonsaturating_loss", "r1_penalty",
           "sample_batch", "sample_latents", "d_step", "d_reg_step", "g_step", "g_reg_step", "accumulate",
           "train_step", "save_checkpoint", "load_checkpoint", "ema_decay", "grown_state_dicts", "grow_state"]

CHECKPOINT_VERSION = 1


@dataclass
class TrainConfig:
    """Hyperparameters of the recipe (see the module docstring)."""

    batch_size: int = 32
    lr: float = 0.002
    beta1: float = 0.0
    beta2: float = 0.99
    r1_gamma: float = 10.0
    d_reg_every: int = 16
    path_regularize: float = 0.0  # rosinality: 2.0; 0 switches the path-length regulariser off
    g_reg_every: int = 4
    path_batch_shrink: int = 2
    mixing: float = 0.9
    ema_half_life_kimg: float = 10.0
    flip: bool = True
    amp: bool = True  # only has an effect on CUDA

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class TrainState:
    """Everything a run needs to continue: networks, optimisers, iteration count and random state."""

    g: Generator
    d: Discriminator
    g_ema: Generator
    g_optim: torch.optim.Optimizer
    d_optim: torch.optim.Optimizer
    cfg: TrainConfig
    rng: torch.Generator
    step: int = 0
    mean_path_length: float = 0.0
    scaler: Any = None  # torch.amp.GradScaler on CUDA with amp, else None
    extra: dict[str, Any] = field(default_factory=dict)  # caller metadata saved with the checkpoint (JSON-like)

    @property
    def device(self) -> torch.device:
        return self.g.input.input.device

    @property
    def use_amp(self) -> bool:
        return self.scaler is not None


def ema_decay(cfg: TrainConfig) -> float:
    """EMA decay per iteration: ``0.5 ** (batch / (half_life_kimg * 1000))``."""
    return 0.5 ** (cfg.batch_size / max(cfg.ema_half_life_kimg * 1000.0, 1e-8))


def _optimizers(g: nn.Module, d: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    g_ratio = cfg.g_reg_every / (cfg.g_reg_every + 1) if cfg.path_regularize > 0 else 1.0
    d_ratio = cfg.d_reg_every / (cfg.d_reg_every + 1) if cfg.r1_gamma > 0 else 1.0
    g_optim = torch.optim.Adam(g.parameters(), lr=cfg.lr * g_ratio, betas=(cfg.beta1**g_ratio, cfg.beta2**g_ratio))
    d_optim = torch.optim.Adam(d.parameters(), lr=cfg.lr * d_ratio, betas=(cfg.beta1**d_ratio, cfg.beta2**d_ratio))
    return g_optim, d_optim


def _scaler(cfg: TrainConfig, device: torch.device):
    return torch.amp.GradScaler("cuda") if cfg.amp and device.type == "cuda" else None


def create_state(g_config: dict, d_config: dict, cfg: TrainConfig, device: torch.device | str = "cpu",
                 seed: int = 0) -> TrainState:
    """Fresh networks (initialised from ``seed`` without touching the global RNG), optimisers and RNG."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = Generator(**g_config)
        d = Discriminator(**d_config)
    g, d = g.to(device).train(), d.to(device).train()
    g_ema = copy.deepcopy(g).eval()
    g_ema.requires_grad_(False)
    g_optim, d_optim = _optimizers(g, d, cfg)
    rng = torch.Generator().manual_seed(seed + 1)
    return TrainState(g, d, g_ema, g_optim, d_optim, cfg, rng, scaler=_scaler(cfg, device))


# ---------------------------------------------------------------------------------------------------- losses
def d_logistic_loss(real_pred: Tensor, fake_pred: Tensor) -> Tensor:
    """``mean softplus(-D(x)) + mean softplus(D(G(z)))`` for logits (B, 1) -> scalar."""
    return F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()


def g_nonsaturating_loss(fake_pred: Tensor) -> Tensor:
    """``mean softplus(-D(G(z)))`` for logits (B, 1) -> scalar."""
    return F.softplus(-fake_pred).mean()


def r1_penalty(real_pred: Tensor, real_img: Tensor) -> Tensor:
    """``mean_b |grad_x D(x_b)|²`` for logits (B, 1) of ``real_img`` (B, 3, S, S) (requires grad) -> scalar."""
    (grad,) = torch.autograd.grad(real_pred.sum(), real_img, create_graph=True)
    return grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()


# ------------------------------------------------------------------------------------------------- sampling
def _randn(state: TrainState, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=state.rng).to(state.device)


def sample_latents(state: TrainState, batch: int) -> tuple[list[Tensor], int | None]:
    """z list ([z] or [z1, z2] with probability ``mixing``), each (B, D), and the crossover index (or None)."""
    dim = state.g.style_dim
    if state.cfg.mixing > 0 and float(torch.rand((), generator=state.rng)) < state.cfg.mixing:
        inject = int(torch.randint(1, state.g.n_latent, (), generator=state.rng))
        return [_randn(state, batch, dim), _randn(state, batch, dim)], inject
    return [_randn(state, batch, dim)], None


def sample_noise(state: TrainState, batch: int) -> list[Tensor]:
    """Per-sample noise maps, one (B, 1, r, r) per generator layer."""
    return [_randn(state, batch, 1, n.shape[-2], n.shape[-1]) for n in state.g.stored_noise()]


def generate(state: TrainState, batch: int, return_latents: bool = False) -> tuple[Tensor, Tensor | None]:
    """Training-mode fakes (B, 3, S, S) from ``state.g`` with mixing and random noise."""
    styles, inject = sample_latents(state, batch)
    return state.g(styles, noise=sample_noise(state, batch), inject_index=inject, return_latents=return_latents)


def as_float_images(images: Tensor) -> Tensor:
    """uint8 [0, 255] or float images (B, 3, S, S) -> float32 in [-1, 1]."""
    return images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images.float()


def sample_batch(state: TrainState, data: Tensor) -> Tensor:
    """A random batch (with replacement) of ``data`` (N, 3, S, S) as float [-1, 1] on the device, random h-flips."""
    idx = torch.randint(0, data.shape[0], (state.cfg.batch_size,), generator=state.rng)
    batch = as_float_images(data[idx].to(state.device))
    if state.cfg.flip:
        flip = (torch.rand(state.cfg.batch_size, generator=state.rng) < 0.5).to(state.device)
        batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    return batch


# -------------------------------------------------------------------------------------------------- steps
def _autocast(state: TrainState):
    return torch.autocast(device_type=state.device.type, dtype=torch.float16, enabled=state.use_amp)


def _backward_step(state: TrainState, loss: Tensor, optim: torch.optim.Optimizer, model: nn.Module) -> None:
    model.zero_grad(set_to_none=True)
    if state.scaler is not None:
        state.scaler.scale(loss).backward()
        state.scaler.step(optim)
        state.scaler.update()
    else:
        loss.backward()
        optim.step()


def d_step(state: TrainState, real: Tensor) -> dict[str, float]:
    """One D update on the logistic loss; real (B, 3, S, S) in [-1, 1]."""
    state.g.requires_grad_(False)
    state.d.requires_grad_(True)
    with _autocast(state):
        with torch.no_grad():
            fake, _ = generate(state, real.shape[0])
        fake_pred = state.d(fake)
        real_pred = state.d(real)
        loss = d_logistic_loss(real_pred.float(), fake_pred.float())
    _backward_step(state, loss, state.d_optim, state.d)
    return {"loss_d": float(loss.detach()), "real_score": float(real_pred.detach().float().mean()),
            "fake_score": float(fake_pred.detach().float().mean())}


def d_reg_step(state: TrainState, real: Tensor) -> dict[str, float]:
    """Lazy R1 update (fp32): ``gamma/2 * R1 * d_reg_every`` on real (B, 3, S, S)."""
    state.d.requires_grad_(True)
    real = real.detach().requires_grad_(True)
    real_pred = state.d(real)
    r1 = r1_penalty(real_pred, real)
    loss = state.cfg.r1_gamma / 2 * r1 * state.cfg.d_reg_every + 0 * real_pred[0, 0]
    state.d.zero_grad(set_to_none=True)
    loss.backward()
    state.d_optim.step()
    return {"r1": float(r1.detach())}


def g_step(state: TrainState) -> dict[str, float]:
    """One G update on the non-saturating loss."""
    state.g.requires_grad_(True)
    state.d.requires_grad_(False)
    with _autocast(state):
        fake, _ = generate(state, state.cfg.batch_size)
        loss = g_nonsaturating_loss(state.d(fake).float())
    _backward_step(state, loss, state.g_optim, state.g)
    return {"loss_g": float(loss.detach())}


def g_reg_step(state: TrainState) -> dict[str, float]:
    """Lazy path-length update (fp32) on a batch shrunk by ``path_batch_shrink``."""
    cfg = state.cfg
    state.g.requires_grad_(True)
    state.d.requires_grad_(False)
    batch = max(1, cfg.batch_size // cfg.path_batch_shrink)
    fake, latents = generate(state, batch, return_latents=True)
    noise = torch.randn(fake.shape, generator=state.rng).to(state.device) / math.sqrt(fake.shape[2] * fake.shape[3])
    (grad,) = torch.autograd.grad((fake * noise).sum(), latents, create_graph=True)
    lengths = torch.sqrt(grad.pow(2).sum(2).mean(1))
    mean = state.mean_path_length + 0.01 * (float(lengths.detach().mean()) - state.mean_path_length)
    penalty = (lengths - mean).pow(2).mean()
    loss = cfg.path_regularize * cfg.g_reg_every * penalty + 0 * fake[0, 0, 0, 0]
    state.g.zero_grad(set_to_none=True)
    loss.backward()
    state.g_optim.step()
    state.mean_path_length = mean
    return {"path_loss": float(penalty.detach()), "path_length": float(lengths.detach().mean())}


@torch.no_grad()
def accumulate(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``p_ema = decay * p_ema + (1 - decay) * p`` for every parameter; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.mul_(decay).add_(p.detach(), alpha=1 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def train_step(state: TrainState, data: Tensor) -> dict[str, float]:
    """One iteration (D, lazy R1, G, lazy path length, EMA) on a batch from ``data``; increments ``state.step``."""
    cfg, i = state.cfg, state.step
    real = sample_batch(state, data)
    logs = d_step(state, real)
    if cfg.r1_gamma > 0 and i % cfg.d_reg_every == 0:
        logs.update(d_reg_step(state, real))
    logs.update(g_step(state))
    if cfg.path_regularize > 0 and i % cfg.g_reg_every == 0:
        logs.update(g_reg_step(state))
    accumulate(state.g_ema, state.g, ema_decay(cfg))
    state.step += 1
    return logs


# ----------------------------------------------------------------------------------------- growing a GAN
def grown_state_dicts(src_g: dict[str, Tensor], src_d: dict[str, Tensor] | None, g: Generator,
                      d: Discriminator, src_size: int) -> tuple[dict[str, Tensor], dict[str, Tensor], list[str]]:
    """State dicts for ``g`` / ``d`` (size ``S``) that start from a trained GAN of size ``src_size`` (``S / 2^k``).

    The generator keeps every source tensor whose name and shape it shares (mapping, 4 px ... ``src_size`` layers,
    their ToRGBs); the layers above are fresh, except that each new ToRGB's weight is zero, so the grown generator
    starts as the source's image upsampled by the skip path's blur-upsampling (progressive growing's fade-in, done by
    the skip architecture). In the discriminator, the residual block reading resolution ``r`` is ``convs.j`` with
    ``S / 2^(j-1) = r``, so the source's ``convs.j`` (j >= 1) goes to ``convs.(j + k)``; ``final_conv`` and
    ``final_linear`` carry over; the RGB input layer and the blocks above ``src_size`` are fresh. Returns the two
    state dicts and the names of the tensors that stayed fresh (a source tensor that fits no slot is an error).
    """
    if src_size >= g.size or g.size % src_size or (g.size // src_size) & (g.size // src_size - 1):
        raise ValueError(f"can only grow to a larger power-of-two multiple: {src_size} px -> {g.size} px")
    shift = int(math.log2(g.size // src_size))
    g_sd, fresh = g.state_dict(), []
    for key, value in g_sd.items():
        if key in src_g and src_g[key].shape == value.shape:
            g_sd[key] = src_g[key].to(value)
        else:
            fresh.append(f"g.{key}")
            if key.startswith("to_rgbs.") and key.endswith(".conv.weight"):
                g_sd[key] = torch.zeros_like(value)
    unused = sorted(k for k in src_g if k not in g_sd or src_g[k].shape != g_sd[k].shape)
    if any(not k.startswith("noises.") for k in unused):
        raise ValueError(f"source generator tensors fit no layer of the {g.size} px generator: {unused[:4]}")
    d_sd = d.state_dict()
    for key, value in d_sd.items():
        src_key = key
        if key.startswith("convs."):
            idx, rest = key.split(".", 2)[1:]
            src_key = f"convs.{int(idx) - shift}.{rest}" if int(idx) > shift else None
        if src_d is not None and src_key in src_d and src_d[src_key].shape == value.shape:
            d_sd[key] = src_d[src_key].to(value)
        else:
            fresh.append(f"d.{key}")
    return g_sd, d_sd, fresh


def grow_state(state: TrainState, src_g: dict[str, Tensor], src_d: dict[str, Tensor] | None,
               src_size: int) -> list[str]:
    """Load :func:`grown_state_dicts` into a fresh ``state`` (G, its EMA copy and D); returns the fresh tensors."""
    if state.step:
        raise ValueError("a GAN can only be grown before its first step")
    g_sd, d_sd, fresh = grown_state_dicts(src_g, src_d, state.g, state.d, src_size)
    state.g.load_state_dict(g_sd)
    state.g_ema.load_state_dict(g_sd)
    state.d.load_state_dict(d_sd)
    return fresh


# --------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | Path, state: TrainState) -> Path:
    """Write ``state`` atomically (tmp file + ``os.replace``) as plain state_dicts, loadable with weights_only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "version": CHECKPOINT_VERSION,
        "g": state.g.state_dict(), "d": state.d.state_dict(), "g_ema": state.g_ema.state_dict(),
        "g_optim": state.g_optim.state_dict(), "d_optim": state.d_optim.state_dict(),
        "scaler": state.scaler.state_dict() if state.scaler is not None else None,
        "step": state.step, "mean_path_length": state.mean_path_length, "rng": state.rng.get_state(),
        "g_config": state.g.config(), "d_config": state.d.config(), "train_config": asdict(state.cfg),
        "extra": state.extra,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu",
                    cfg: TrainConfig | None = None) -> TrainState:
    """Rebuild a :class:`TrainState` from :func:`save_checkpoint` output (``weights_only=True``).

    ``cfg`` overrides the saved hyperparameters (the optimisers' lr/betas follow it); None keeps the saved ones.
    """
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: unknown training checkpoint version {payload.get('version')}")
    cfg = cfg or TrainConfig.from_dict(payload["train_config"])
    device = torch.device(device)
    with torch.device("meta"):
        g, d = Generator(**payload["g_config"]), Discriminator(**payload["d_config"])
    g_ema = copy.deepcopy(g)
    for model, key in ((g, "g"), (d, "d"), (g_ema, "g_ema")):
        model.load_state_dict(payload[key], strict=True, assign=True)
    g, d, g_ema = g.to(device).train(), d.to(device).train(), g_ema.to(device).eval()
    g_ema.requires_grad_(False)
    g_optim, d_optim = _optimizers(g, d, cfg)
    g_optim.load_state_dict(payload["g_optim"])
    d_optim.load_state_dict(payload["d_optim"])
    for optim, ref in zip((g_optim, d_optim), _optimizers(g, d, cfg)):
        for group, fresh in zip(optim.param_groups, ref.param_groups):  # hyperparameters follow cfg
            group["lr"], group["betas"] = fresh["lr"], fresh["betas"]
    rng = torch.Generator()
    rng.set_state(payload["rng"])
    scaler = _scaler(cfg, device)
    if scaler is not None and payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    return TrainState(g, d, g_ema, g_optim, d_optim, cfg, rng, step=int(payload["step"]),
                      mean_path_length=float(payload["mean_path_length"]), scaler=scaler,
                      extra=dict(payload.get("extra") or {}))
