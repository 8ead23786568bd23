"""HoloGAN training, device-agnostic and resumable bit-exactly on CPU.

Per iteration, with ``z ~ N(0, I)``, azimuth ``~ U(-azimuth_range, azimuth_range)`` and elevation
``~ U(-elevation_range, elevation_range)`` degrees (one pose per sample) and fakes ``G(z, pose)``:

* D step: ``softplus(-D(x)) + softplus(D(G))`` on the image logit and on each style logit (weighted by
  ``lambda_style``), plus ``lambda_id * |E(G) - z|²`` (HoloGAN's identity loss; ``E`` is D's z head); every
  ``d_reg_every`` steps a lazy R1 penalty on the image logit (``r1_gamma / 2 * R1 * d_reg_every``; not in the
  paper, it steadies short runs).
* G step: ``softplus(-D(G))`` on the same logits plus the same identity loss, on the same fakes (generated once per
  iteration, detached for the D step).
* EMA generator ``p_ema = decay * p_ema + (1 - decay) * p`` with StyleGAN2's half-life rule.

Adam with betas (0.5, 0.999) as published. Every random number comes from ``TrainState.rng`` (a CPU generator saved
in checkpoints), so a resumed run continues exactly the interrupted one. Real images are (N, 3, 32, 32) uint8 or
floats in [-1, 1]; random horizontal flips (the pose prior is symmetric).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from core.errors import BenchError
from methods.stylegan2.training import (accumulate, as_float_images, d_logistic_loss, ema_decay,
                                        g_nonsaturating_loss, r1_penalty)

from .model import Discriminator, Generator

__all__ = ["HoloTrainConfig", "HoloTrainState", "create_state", "sample_poses", "train_step",
           "save_checkpoint", "load_checkpoint", "export_weights", "load_weights", "FORMAT"]

CHECKPOINT_VERSION = 1
FORMAT = "gan2shape-bench-hologan"
TRAIN_HINT = "bench train model=hologan dataset=synface_proc"


@dataclass
class HoloTrainConfig:
    """Hyperparameters (see the module docstring)."""

    batch_size: int = 32
    lr_g: float = 0.0002
    lr_d: float = 0.0002
    beta1: float = 0.5
    beta2: float = 0.999
    lambda_id: float = 1.0
    lambda_style: float = 1.0
    r1_gamma: float = 0.1
    d_reg_every: int = 16
    azimuth_range: float = 45.0
    elevation_range: float = 15.0
    ema_half_life_kimg: float = 10.0
    flip: bool = True

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "HoloTrainConfig":
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


@dataclass
class HoloTrainState:
    """Networks, optimisers, iteration count and random state of a run."""

    g: Generator
    d: Discriminator
    g_ema: Generator
    g_optim: torch.optim.Optimizer
    d_optim: torch.optim.Optimizer
    cfg: HoloTrainConfig
    rng: torch.Generator
    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # caller metadata saved with the checkpoint

    @property
    def device(self) -> torch.device:
        return self.g.const.device


def _optimizers(g: nn.Module, d: nn.Module, cfg: HoloTrainConfig):
    betas = (cfg.beta1, cfg.beta2)
    return torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=betas), torch.optim.Adam(d.parameters(), lr=cfg.lr_d,
                                                                                          betas=betas)


def create_state(g_config: dict, d_config: dict, cfg: HoloTrainConfig, device: torch.device | str = "cpu",
                 seed: int = 0) -> HoloTrainState:
    """Fresh networks initialised from ``seed`` (the global RNG is left alone), optimisers and the run's RNG."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g, d = Generator(**g_config), Discriminator(**d_config)
    g, d = g.to(device).train(), d.to(device).train()
    g_ema = copy.deepcopy(g).eval().requires_grad_(False)
    g_optim, d_optim = _optimizers(g, d, cfg)
    return HoloTrainState(g, d, g_ema, g_optim, d_optim, cfg, torch.Generator().manual_seed(seed + 1))


def sample_poses(rng: torch.Generator, batch: int, cfg: HoloTrainConfig) -> tuple[Tensor, Tensor]:
    """Azimuths and elevations (B,) in degrees, uniform in the configured symmetric ranges."""
    u = torch.rand(2, batch, generator=rng) * 2 - 1
    return u[0] * cfg.azimuth_range, u[1] * cfg.elevation_range


def _sample_real(state: HoloTrainState, data: Tensor) -> Tensor:
    idx = torch.randint(0, data.shape[0], (state.cfg.batch_size,), generator=state.rng)
    real = as_float_images(data[idx]).to(state.device)
    if state.cfg.flip:
        flip = (torch.rand(state.cfg.batch_size, generator=state.rng) < 0.5).to(state.device)
        real = torch.where(flip[:, None, None, None], real.flip(-1), real)
    return real


def _adv(outputs: tuple[Tensor, list[Tensor], Tensor], loss_fn: Callable[..., Tensor], w_style: float,
         *others: tuple[Tensor, list[Tensor], Tensor]) -> Tensor:
    """``loss_fn`` on the image logit plus ``w_style`` times it on each style logit (paired with ``others``)."""
    logit, styles, _ = outputs
    total = loss_fn(*[o[0] for o in others], logit)
    for i, s in enumerate(styles):
        total = total + w_style * loss_fn(*[o[1][i] for o in others], s)
    return total


def train_step(state: HoloTrainState, data: Tensor) -> dict[str, float]:
    """One iteration (D, lazy R1, G, EMA); increments ``state.step``. Returns the losses as floats."""
    cfg = state.cfg
    real = _sample_real(state, data)
    z = torch.randn(cfg.batch_size, state.g.z_dim, generator=state.rng).to(state.device)
    azimuth, elevation = sample_poses(state.rng, cfg.batch_size, cfg)
    state.g.requires_grad_(True)
    fake = state.g(z, azimuth.to(state.device), elevation.to(state.device))

    state.d.requires_grad_(True)
    out_real, out_fake = state.d(real), state.d(fake.detach())
    loss_d_adv = _adv(out_fake, d_logistic_loss, cfg.lambda_style, out_real)
    id_d = (out_fake[2] - z).pow(2).mean()
    loss_d = loss_d_adv + cfg.lambda_id * id_d
    state.d_optim.zero_grad(set_to_none=True)
    loss_d.backward()
    state.d_optim.step()
    logs = {"loss_d": float(loss_d_adv.detach()), "id_d": float(id_d.detach()),
            "real_score": float(out_real[0].detach().mean()), "fake_score": float(out_fake[0].detach().mean())}
    if cfg.r1_gamma > 0 and state.step % cfg.d_reg_every == 0:
        real_r = real.detach().requires_grad_(True)
        r1 = r1_penalty(state.d(real_r)[0], real_r)
        state.d_optim.zero_grad(set_to_none=True)
        (cfg.r1_gamma / 2 * r1 * cfg.d_reg_every).backward()
        state.d_optim.step()
        logs["r1"] = float(r1.detach())

    state.d.requires_grad_(False)
    out = state.d(fake)
    loss_g_adv = _adv(out, g_nonsaturating_loss, cfg.lambda_style)
    id_g = (out[2] - z).pow(2).mean()
    state.g_optim.zero_grad(set_to_none=True)
    (loss_g_adv + cfg.lambda_id * id_g).backward()
    state.g_optim.step()
    accumulate(state.g_ema, state.g, ema_decay(cfg))  # type: ignore[arg-type]  (batch_size, ema_half_life_kimg)
    state.step += 1
    logs.update(loss_g=float(loss_g_adv.detach()), id_g=float(id_g.detach()))
    return logs


# --------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | Path, state: HoloTrainState) -> Path:
    """Write ``state`` atomically as plain state dicts (loadable with ``weights_only=True``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"version": CHECKPOINT_VERSION, "g": state.g.state_dict(), "d": state.d.state_dict(),
               "g_ema": state.g_ema.state_dict(), "g_optim": state.g_optim.state_dict(),
               "d_optim": state.d_optim.state_dict(), "step": state.step, "rng": state.rng.get_state(),
               "g_config": state.g.config(), "d_config": state.d.config(), "train_config": asdict(state.cfg),
               "extra": state.extra}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu",
                    cfg: HoloTrainConfig | None = None) -> HoloTrainState:
    """Rebuild the :class:`HoloTrainState` written by :func:`save_checkpoint` (``weights_only=True``)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: unknown HoloGAN checkpoint version {payload.get('version')}")
    cfg = cfg or HoloTrainConfig.from_dict(payload["train_config"])
    device = torch.device(device)
    g, d = Generator(**payload["g_config"]), Discriminator(**payload["d_config"])
    g_ema = Generator(**payload["g_config"])
    for model, key in ((g, "g"), (d, "d"), (g_ema, "g_ema")):
        model.load_state_dict(payload[key], strict=True)
    g, d = g.to(device).train(), d.to(device).train()
    g_ema = g_ema.to(device).eval().requires_grad_(False)
    g_optim, d_optim = _optimizers(g, d, cfg)
    g_optim.load_state_dict(payload["g_optim"])
    d_optim.load_state_dict(payload["d_optim"])
    rng = torch.Generator()
    rng.set_state(payload["rng"])
    return HoloTrainState(g, d, g_ema, g_optim, d_optim, cfg, rng, step=int(payload["step"]),
                          extra=dict(payload.get("extra") or {}))


# ------------------------------------------------------------------------------------------------- weights
def export_weights(dst: str | Path, g_ema: Generator, d: Discriminator, card: dict) -> Path:
    """``dst`` (.safetensors: ``g_ema.*``, ``d.*``) plus a JSON sidecar with both configs and the model card."""
    from safetensors.torch import save_file

    dst = Path(dst)
    if dst.suffix != ".safetensors":
        raise BenchError(f"HoloGAN export {dst} must end in .safetensors")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"g_ema.{k}": v for k, v in g_ema.state_dict().items()}
    tensors.update({f"d.{k}": v for k, v in d.state_dict().items()})
    tensors = {k: v.detach().float().cpu().contiguous().clone() for k, v in tensors.items()}
    tmp = dst.with_name(dst.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT})
    os.replace(tmp, dst)
    meta = {"format": FORMAT, "format_version": 1, "generator": g_ema.config(), "discriminator": d.config(),
            "training": card}
    side = dst.with_suffix(".json")
    side_tmp = side.with_name(side.name + ".tmp")
    side_tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(side_tmp, side)
    return dst


def load_weights(path: str | Path, device: torch.device | str = "cpu") -> tuple[Generator, dict]:
    """The EMA generator (eval mode, on ``device``) and the sidecar of an :func:`export_weights` file."""
    from safetensors.torch import load_file

    path = Path(path)
    side = path.with_suffix(".json")
    if not path.is_file() or not side.is_file():
        missing = path if not path.is_file() else side
        raise BenchError(f"HoloGAN weights not found: {missing}. Fix: train them with `{TRAIN_HINT}` (writes "
                         f"{path.name} and {side.name}), or set method.weights to an exported file.")
    meta = json.loads(side.read_text())
    if meta.get("format") != FORMAT:
        raise BenchError(f"{side} is not a HoloGAN sidecar (format {meta.get('format')!r}). Fix: re-export with "
                         f"`{TRAIN_HINT}`.")
    tensors = load_file(str(path))
    g = Generator(**meta["generator"])
    g.load_state_dict({k[len("g_ema."):]: v for k, v in tensors.items() if k.startswith("g_ema.")}, strict=True)
    return g.to(device).eval().requires_grad_(False), meta
