"""``bench train model=hologan dataset=synface_proc``: train HoloGAN (:mod:`methods.hologan`) and export it.

Loads the training split area-downsampled to 32 px (uint8 in memory), trains with :mod:`methods.hologan.training`,
logs the losses to MLflow every ``train.log_every`` iterations and, every ``train.eval_every`` iterations and at the
end, a pose sweep grid (one row per fixed z, columns at ``model.grid_azimuths`` degrees, also written beside the
export as ``*_samples.png``), the SWD of fakes at random training poses against real images (with the real-vs-real
floor) and an export of the EMA generator and the discriminator with the model card to ``train.export``. ``train.out_dir/checkpoint.pt`` is written every
``train.checkpoint_every`` iterations; rerunning the same command resumes from it (bit-exactly on CPU).
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from benchmark import tracking
from benchmark.runner import device_name, plain, resolve_device, seed_everything
from benchmark.train_stylegan2 import image_grid, load_images, swd_reference
from core.errors import BenchError

__all__ = ["train_hologan", "pose_grid", "generate_eval"]

_TRAIN_KEYS = ("batch_size", "lr_g", "lr_d", "beta1", "beta2", "lambda_id", "lambda_style", "r1_gamma",
               "d_reg_every", "azimuth_range", "elevation_range", "ema_half_life_kimg", "flip")


def model_configs(model: DictConfig) -> tuple[dict, dict]:
    """Generator and Discriminator constructor arguments from the ``model`` config group."""
    g = {"z_dim": int(model.z_dim), "c0": int(model.c0), "c3d": list(plain(model.c3d)), "c_rot": int(model.c_rot),
         "c_proj": int(model.c_proj), "c2d": list(plain(model.c2d))}
    return g, {"z_dim": int(model.z_dim), "channels": list(plain(model.d_channels))}


@torch.no_grad()
def pose_grid(g, z: torch.Tensor, azimuths: list[float]) -> np.ndarray:
    """One row per latent of ``z`` (R, Z), one column per azimuth (elevation 0) -> (H, W, 3) uint8 grid."""
    rows = []
    for zi in z:
        zr = zi[None].expand(len(azimuths), -1)
        rows.append(g(zr, torch.tensor(azimuths, device=z.device, dtype=torch.float32)).cpu())
    return image_grid(torch.cat(rows), nrow=len(azimuths))


@torch.no_grad()
def generate_eval(g, n: int, seed: int, azimuth_range: float, elevation_range: float, device: torch.device,
                  batch: int = 256) -> torch.Tensor:
    """``n`` fakes (n, 3, 32, 32) on CPU at uniform random poses in the training ranges, from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        z = torch.randn(b, g.z_dim, generator=gen)
        pose = torch.rand(2, b, generator=gen) * 2 - 1
        out.append(g(z.to(device), (pose[0] * azimuth_range).to(device),
                     (pose[1] * elevation_range).to(device)).float().cpu())
    return torch.cat(out)


def train_hologan(cfg: DictConfig, overrides: list[str]) -> int:
    """Train (or resume) HoloGAN, track it, export it. Returns the exit status (0)."""
    from methods.hologan import training
    from metrics.swd import swd, swd_real_floor

    device = resolve_device(cfg.device.type)
    if cfg.train.num_threads:
        torch.set_num_threads(int(cfg.train.num_threads))
    seed_everything(cfg.seed)
    g_config, d_config = model_configs(cfg.model)
    tcfg = training.HoloTrainConfig.from_dict({k: plain(cfg.model[k]) for k in _TRAIN_KEYS})
    iterations = int(cfg.train.iterations)
    out_dir = Path(cfg.train.out_dir)
    ckpt_path = out_dir / "checkpoint.pt"
    command = " ".join(["bench train", *map(shlex.quote, overrides)])

    data, data_info = load_images(cfg, 32)
    n_eval, real_eval, swd_kw = swd_reference(cfg, data, 32)

    want = {"model": plain(cfg.model), "dataset": cfg.dataset.name, "seed": int(cfg.seed)}
    if ckpt_path.is_file():
        try:
            state = training.load_checkpoint(ckpt_path, device, tcfg)
        except (RuntimeError, ValueError, KeyError, OSError) as err:
            raise BenchError(f"cannot resume from {ckpt_path} ({type(err).__name__}: {str(err)[:200]}); delete it "
                             f"or choose another train.out_dir") from None
        have = {k: state.extra.get(k) for k in want}
        if have != want:
            raise BenchError(f"{ckpt_path} was trained with another model/dataset/seed ({have}); delete "
                             f"{out_dir} or set train.out_dir=<new folder>")
        resumed_from = state.step
    else:
        state = training.create_state(g_config, d_config, tcfg, device, seed=int(cfg.seed))
        state.extra = {**want, "wall_time_s": 0.0}
        resumed_from = 0
    grid_z = torch.randn(int(cfg.model.grid_rows), g_config["z_dim"],
                         generator=torch.Generator().manual_seed(int(cfg.seed) + 12345)).to(device)
    azimuths = [float(a) for a in plain(cfg.model.grid_azimuths)]

    tags = {"model": cfg.model.name, "dataset": cfg.dataset.name, "seed": cfg.seed, "device": str(device),
            "device_name": device_name(device), "command": command, "resumed_from": resumed_from}
    started, commit = time.time(), tracking.git_commit()
    wall_before = float(state.extra.get("wall_time_s", 0.0))
    last: dict[str, float] = {}
    summary: dict[str, Any] = {}

    with tracking.start_run(cfg.tracking.uri, cfg.tracking.experiment, f"{cfg.model.name}-{cfg.dataset.name}",
                            tracking.flatten(plain(cfg)), tags) as tracker:
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        floor = swd_real_floor(real_eval, **swd_kw)
        tracker.log_metrics({f"floor_{k}": v for k, v in floor.items()}, step=state.step)

        def checkpoint() -> None:
            state.extra["wall_time_s"] = wall_before + time.time() - started
            training.save_checkpoint(ckpt_path, state)

        def evaluate() -> None:
            grid = pose_grid(state.g_ema, grid_z, azimuths)
            tracker.log_image(grid, f"samples/step_{state.step:07d}.png")
            fakes = generate_eval(state.g_ema, n_eval, int(cfg.eval.swd_seed) + 1, tcfg.azimuth_range,
                                  tcfg.elevation_range, device)
            scores = swd(real_eval[:n_eval], fakes, **swd_kw)
            tracker.log_metrics(scores, step=state.step)
            summary.update(scores)
            card = {"command": command, "dataset": data_info, "commit": commit, "device": device_name(device),
                    "wall_time_s": wall_before + time.time() - started, "iterations": state.step,
                    "batch_size": tcfg.batch_size, "seed": int(cfg.seed), "train_config": plain(cfg.model),
                    "swd": scores, "swd_real_floor": floor, "swd_settings": {**swd_kw, "images": n_eval},
                    "losses": dict(last), "grid_azimuths": azimuths}
            training.export_weights(cfg.train.export, state.g_ema, state.d, card)
            from PIL import Image

            Image.fromarray(grid).save(Path(cfg.train.export).with_name(Path(cfg.train.export).stem + "_samples.png"))

        from tqdm import tqdm

        bar = tqdm(total=iterations, initial=min(state.step, iterations), disable=not cfg.train.progress,
                   desc=f"train {cfg.model.name}", dynamic_ncols=True)

        def on_step(st: training.HoloTrainState, logs: dict[str, float]) -> None:
            last.update(logs)
            bar.update(1)
            if st.step % int(cfg.train.log_every) == 0:
                tracker.log_metrics(logs, step=st.step)
                bar.set_postfix(d=f"{logs['loss_d']:.3f}", g=f"{logs['loss_g']:.3f}", id=f"{logs['id_g']:.3f}")
            if st.step % int(cfg.train.checkpoint_every) == 0:
                checkpoint()
            if st.step % int(cfg.train.eval_every) == 0 and st.step < iterations:
                evaluate()

        training.train_loop(state, data, iterations, on_step)
        bar.close()
        checkpoint()
        evaluate()
        tracker.log_metrics({"iterations": state.step,
                             "seconds_per_iteration": (time.time() - started) / max(state.step - resumed_from, 1)},
                            step=state.step)
    print(f"trained {cfg.model.name} to {state.step} iterations; SWD x1e3 {summary.get('swd_mean', float('nan')):.2f} "
          f"(real floor {floor['swd_mean']:.2f}); wrote {cfg.train.export}")
    return 0
