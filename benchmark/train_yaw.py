"""``bench train model=yaw_regressor dataset=synface_proc``: the shared yaw regressor of the face-rotation experiment.

Loads ``train.split`` (area-downsampled to ``model.image_size``, uint8 in memory) with its ground-truth ``view``,
and regresses (yaw, pitch) in units of ``model.unit_deg`` with a smooth-L1 loss, Adam and a cosine learning rate.
Augmentation: a horizontal flip negates yaw (a mirrored head turned by ``yaw`` is the head turned by ``-yaw``:
``M Ry(yaw) M = Ry(-yaw)`` and ``M Rx(pitch) M = Rx(pitch)`` for ``M = diag(-1, 1, 1)``), a 1-pixel random shift,
and a brightness/contrast jitter (so the GAN's colour drift does not read as pose). Every ``train.eval_every``
steps (and at the end) the mean absolute error on ``model.val_split`` goes to MLflow and the weights + model card to
``train.export``. ``train.out_dir/checkpoint.pt`` (written every ``train.checkpoint_every`` steps) resumes a rerun.
``model.iterations`` fixes the schedule of the shipped weights and takes precedence over ``train.iterations``.
"""

from __future__ import annotations

import math
import shlex
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from benchmark import tracking
from benchmark.runner import create_checked, dataset_args, device_name, plain, resolve_device, seed_everything
from core.errors import BenchError
from core.registry import TRAINERS
from methods.common.yaw import YawRegressor, save_yaw_regressor

__all__ = ["train_yaw_regressor", "load_split_views", "augment", "evaluate_mae"]


def load_split_views(cfg: DictConfig, split: str, limit: int | None,
                     size: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Images (N, 3, size, size) uint8 (area-downsampled), views (N, 3) degrees and the generation seed of a split."""
    from core.registry import DATASETS

    ds = create_checked(DATASETS, cfg.dataset.name, dataset_args(cfg, split, limit), f"dataset={cfg.dataset.name}")
    if len(ds) == 0 or not hasattr(ds, "array"):
        raise BenchError(f"dataset {cfg.dataset.name} split {split} is empty or has no ground-truth view arrays")
    images = torch.from_numpy(np.ascontiguousarray(ds.array("image"))).permute(0, 3, 1, 2)
    views = torch.from_numpy(np.asarray(ds.array("view"), dtype=np.float32))
    if images.shape[-1] != size:
        if images.shape[-1] < size:
            raise BenchError(f"dataset images are {images.shape[-1]}px, smaller than model.image_size {size}")
        images = torch.cat([F.interpolate(c.float(), size=(size, size), mode="area") for c in images.split(1024)])
        images = images.round().clamp(0, 255).to(torch.uint8)
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


def _targets(views: torch.Tensor, n_out: int, unit: float) -> torch.Tensor:
    return torch.stack([views[:, 0], views[:, 1]], 1)[:, :n_out] / unit


@TRAINERS.register("yaw_regressor")  # a job: bench train runs it as is, not on the driver
def train_yaw_regressor(cfg: DictConfig, overrides: list[str]) -> int:
    """Train (or resume) the yaw regressor, track it, export it; returns 0."""
    from tqdm import tqdm

    m = cfg.model
    device = resolve_device(cfg.device.type)
    if cfg.train.num_threads:
        torch.set_num_threads(int(cfg.train.num_threads))
    seed_everything(cfg.seed)
    iterations = int(m.iterations if m.get("iterations") is not None else cfg.train.iterations)
    out_dir, command = Path(cfg.train.out_dir), " ".join(["bench train", *map(shlex.quote, overrides)])
    ckpt_path = out_dir / "checkpoint.pt"
    images, views, data_seed = load_split_views(cfg, cfg.train.split, cfg.train.limit, int(m.image_size))
    val_images, val_views, _ = load_split_views(cfg, m.val_split, m.val_images, int(m.image_size))

    net = YawRegressor(int(m.width), int(m.n_out), int(m.image_size), float(m.unit_deg)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=float(m.lr))
    gen = torch.Generator().manual_seed(int(cfg.seed))
    resume_keys = {k: v for k, v in plain(m).items() if k not in ("iterations", "val_split", "val_images", "export")}
    want = {"model": resume_keys, "dataset": cfg.dataset.name, "seed": int(cfg.seed)}
    step, wall_before = 0, 0.0
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state["extra"] != want:
            raise BenchError(f"{ckpt_path} was trained with another model/dataset/seed; delete {out_dir} or set "
                             f"train.out_dir=<new folder>")
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        step, wall_before = int(state["step"]), float(state["wall_time_s"])
    resumed_from, started, commit = step, time.time(), tracking.git_commit()
    targets = _targets(views, int(m.n_out), float(m.unit_deg))
    summary: dict[str, float] = {}

    def checkpoint() -> None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt_path.with_name("checkpoint.pt.tmp")
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "step": step,
                    "wall_time_s": wall_before + time.time() - started, "extra": want}, tmp)
        tmp.replace(ckpt_path)

    tags = {"model": m.name, "dataset": cfg.dataset.name, "seed": cfg.seed, "device": str(device),
            "device_name": device_name(device), "command": command, "resumed_from": resumed_from}
    with tracking.start_run(cfg.tracking.uri, cfg.tracking.experiment, f"{m.name}-{cfg.dataset.name}",
                            tracking.flatten(plain(cfg)), tags) as tracker:
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")

        def evaluate() -> None:
            scores = evaluate_mae(net, val_images, val_views)
            tracker.log_metrics({f"val_{k}": v for k, v in scores.items()}, step=step)
            summary.update(scores)
            card = {"command": command, "commit": commit, "device": device_name(device),
                    "wall_time_s": wall_before + time.time() - started, "iterations": step,
                    "batch_size": int(m.batch_size), "seed": int(cfg.seed), "train_config": plain(m),
                    "dataset": {"name": cfg.dataset.name, "root": str(cfg.dataset.root), "split": cfg.train.split,
                                "images": len(images), "generation_seed": data_seed},
                    "held_out": {"split": m.val_split, "images": len(val_images), **scores}}
            save_yaw_regressor(cfg.train.export, net, card)

        bar = tqdm(total=iterations, initial=min(step, iterations), disable=not cfg.train.progress,
                   desc=f"train {m.name}", dynamic_ncols=True)
        net.train()
        while step < iterations:
            idx = torch.randint(0, len(images), (int(m.batch_size),), generator=gen)
            x, y = augment(images[idx].float() / 127.5 - 1, targets[idx], gen)
            for group in opt.param_groups:
                group["lr"] = float(m.lr) * 0.5 * (1 + math.cos(math.pi * step / iterations))
            loss = F.smooth_l1_loss(net.forward_units(x.to(device)), y.to(device), beta=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            if step % int(cfg.train.log_every) == 0:
                tracker.log_metrics({"loss": float(loss.detach())}, step=step)
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            if step % int(cfg.train.checkpoint_every) == 0:
                checkpoint()
            if step % int(cfg.train.eval_every) == 0 and step < iterations:
                evaluate()
        bar.close()
        checkpoint()
        evaluate()
        tracker.log_metrics({"iterations": step, "seconds_per_iteration":
                             (time.time() - started) / max(step - resumed_from, 1)}, step=step)
    print(f"trained {m.name} to {step} iterations; held-out {m.val_split} MAE yaw {summary['mae_yaw_deg']:.2f} deg"
          + (f", pitch {summary['mae_pitch_deg']:.2f} deg" if "mae_pitch_deg" in summary else "")
          + f"; wrote {cfg.train.export}")
    return 0
