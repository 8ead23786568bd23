"""``bench train model=stylegan2_32``: train a StyleGAN2 on a benchmark dataset, track it in MLflow, export it.

``bench train model=stylegan2_32 dataset=synface_proc train.iterations=6000`` composes ``configs/train.yaml``,
loads the training split (area-downsampled to the model size, kept in memory as uint8), and trains with
:mod:`methods.stylegan2.training`. Every ``train.log_every`` iterations the losses go to MLflow; every
``train.eval_every`` iterations (and at the end) a sample grid of fixed latents, the SWD against real images
(:mod:`metrics.swd`; the real-vs-real floor is logged once) and an export of the EMA generator + discriminator to
``train.export`` with a model card in its JSON sidecar. ``train.out_dir/checkpoint.pt`` is written every
``train.checkpoint_every`` iterations; rerunning the same command resumes from it (bit-exactly on CPU).

The image helpers here (:func:`load_images`, :func:`swd_reference`, :func:`image_grid`) are shared with HoloGAN.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from benchmark import tracking
from benchmark.runner import device_name, plain, resolve_device, seed_everything
from core.errors import BenchError

_TRAIN_KEYS = ("batch_size", "lr", "r1_gamma", "d_reg_every", "path_regularize", "g_reg_every", "mixing",
               "ema_half_life_kimg", "flip", "amp")


def model_configs(model: DictConfig) -> tuple[dict, dict]:
    """Generator and Discriminator constructor arguments from the ``model`` config group."""
    channels = {int(k): int(v) for k, v in plain(model.channels).items()}
    g = {"size": int(model.size), "style_dim": int(model.style_dim), "n_mlp": int(model.n_mlp),
         "lr_mlp": float(model.lr_mlp), "channels": channels}
    d = {"size": int(model.size), "channels": channels}
    return g, d


def load_images(cfg: DictConfig, size: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Training images (N, 3, size, size) uint8 (area-downsampled when the dataset is larger) and dataset info."""
    from benchmark.driver import dataset_info
    from benchmark.runner import open_split
    from methods.common.data import split_images

    ds = open_split(cfg, cfg.train.split, cfg.train.limit)
    images = split_images(ds, channels_last=True)
    if images.shape[-1] != size or images.shape[-2] != size:
        if images.shape[-1] < size:
            raise BenchError(f"dataset images are {images.shape[-1]}px, smaller than the model size {size}; "
                             f"choose a smaller model or regenerate the dataset")
        chunks = [F.interpolate(c.float(), size=(size, size), mode="area") for c in images.split(1024)]
        images = torch.cat(chunks).round().clamp(0, 255).to(torch.uint8)
    return images, dataset_info(cfg, cfg.train.split, ds)


def swd_reference(cfg: DictConfig, data: torch.Tensor, size: int) -> tuple[int, torch.Tensor, dict[str, int]]:
    """The GAN trainers' SWD set-up: ``n`` (``eval.swd_images``, at most half the data), the first ``2n`` real
    images in [-1, 1] (``[:n]`` against fakes, all ``2n`` for the real-vs-real floor) and the SWD settings."""
    n_eval = min(int(cfg.eval.swd_images), len(data) // 2)
    if n_eval < 1:
        raise BenchError("need at least 2 training images for the SWD evaluation")
    real_eval = data[: 2 * n_eval].float() / 127.5 - 1.0
    return n_eval, real_eval, {"seed": int(cfg.eval.swd_seed), "patches_per_image": int(cfg.eval.swd_patches),
                               "min_size": min(16, size)}


def image_grid(images: torch.Tensor, nrow: int | None = None) -> np.ndarray:
    """Images (B, 3, S, S) in [-1, 1] -> one (H, W, 3) uint8 grid with 2-pixel gaps."""
    b, _, s, _ = images.shape
    nrow = nrow or int(np.ceil(np.sqrt(b)))
    ncol = int(np.ceil(b / nrow))
    grid = torch.ones(3, ncol * (s + 2) + 2, nrow * (s + 2) + 2)
    for i, img in enumerate(images.detach().float().cpu().clamp(-1, 1)):
        r, c = divmod(i, nrow)
        grid[:, 2 + r * (s + 2): 2 + r * (s + 2) + s, 2 + c * (s + 2): 2 + c * (s + 2) + s] = img
    return ((grid.permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8).numpy()


@torch.no_grad()
def generate_eval(g_ema, n: int, seed: int, device: torch.device, batch: int = 256) -> torch.Tensor:
    """``n`` EMA-generator images (n, 3, S, S) on CPU from seeded z and per-sample noise (repeatable)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        z = torch.randn(b, g_ema.style_dim, generator=gen).to(device)
        noise = [torch.randn(b, 1, *m.shape[-2:], generator=gen).to(device) for m in g_ema.stored_noise()]
        out.append(g_ema([z], noise=noise)[0].float().clamp(-1, 1).cpu())
    return torch.cat(out)


def train_stylegan2(cfg: DictConfig, overrides: list[str]) -> int:
    """Train (or resume) a StyleGAN2, track it, export it. Returns the exit status (0)."""
    from methods.stylegan2 import training
    from methods.stylegan2.checkpoints import save_networks
    from metrics.swd import swd, swd_real_floor

    device = resolve_device(cfg.device.type)
    if cfg.train.num_threads:
        torch.set_num_threads(int(cfg.train.num_threads))
    seed_everything(cfg.seed)
    g_config, d_config = model_configs(cfg.model)
    tcfg = training.TrainConfig.from_dict({k: plain(cfg.model[k]) for k in _TRAIN_KEYS})
    iterations = int(cfg.train.iterations)
    out_dir = Path(cfg.train.out_dir)
    ckpt_path = out_dir / "checkpoint.pt"
    command = " ".join(["bench train", *map(shlex.quote, overrides)])

    data, data_info = load_images(cfg, g_config["size"])
    n_eval, real_eval, swd_kw = swd_reference(cfg, data, g_config["size"])

    if ckpt_path.is_file():
        try:
            state = training.load_checkpoint(ckpt_path, device, tcfg)
        except (RuntimeError, ValueError, KeyError, OSError) as err:
            raise BenchError(f"cannot resume from {ckpt_path} ({type(err).__name__}: {str(err)[:200]}); delete it "
                             f"or choose another train.out_dir") from None
        want = {"model": plain(cfg.model), "dataset": cfg.dataset.name, "seed": int(cfg.seed)}
        have = {k: state.extra.get(k) for k in want}
        if have != want:
            raise BenchError(f"{ckpt_path} was trained with another model/dataset/seed ({have}); delete "
                             f"{out_dir} or set train.out_dir=<new folder>")
        resumed_from = state.step
    else:
        state = training.create_state(g_config, d_config, tcfg, device, seed=int(cfg.seed))
        state.extra = {"model": plain(cfg.model), "dataset": cfg.dataset.name, "seed": int(cfg.seed),
                       "wall_time_s": 0.0}
        resumed_from = 0
    fixed_z = torch.randn(int(cfg.tracking.samples), g_config["style_dim"],
                          generator=torch.Generator().manual_seed(int(cfg.seed) + 12345)).to(device)

    tags = {"model": cfg.model.name, "dataset": cfg.dataset.name, "seed": cfg.seed, "device": str(device),
            "device_name": device_name(device), "command": command, "resumed_from": resumed_from}
    params = tracking.flatten(plain(cfg))
    run_name = f"{cfg.model.name}-{cfg.dataset.name}"
    started = time.time()
    commit = tracking.git_commit()  # the code this invocation runs, whatever is committed while it trains
    wall_before = float(state.extra.get("wall_time_s", 0.0))
    last: dict[str, float] = {}
    summary: dict[str, Any] = {}

    with tracking.start_run(cfg.tracking.uri, cfg.tracking.experiment, run_name, params, tags) as tracker:
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        floor = swd_real_floor(real_eval, **swd_kw)
        tracker.log_metrics({f"floor_{k}": v for k, v in floor.items()}, step=state.step)

        def checkpoint() -> None:
            state.extra["wall_time_s"] = wall_before + time.time() - started
            training.save_checkpoint(ckpt_path, state)

        def evaluate() -> None:
            state.g_ema.eval()
            with torch.no_grad():
                samples = state.g_ema([fixed_z])[0]
            tracker.log_image(image_grid(samples), f"samples/step_{state.step:07d}.png")
            fakes = generate_eval(state.g_ema, n_eval, int(cfg.eval.swd_seed) + 1, device)
            scores = swd(real_eval[:n_eval], fakes, **swd_kw)
            tracker.log_metrics(scores, step=state.step)
            summary.update(scores)
            card = {"command": command, "dataset": data_info, "commit": commit,
                    "device": device_name(device), "wall_time_s": wall_before + time.time() - started,
                    "iterations": state.step, "batch_size": tcfg.batch_size, "seed": int(cfg.seed),
                    "train_config": plain(cfg.model), "swd": scores, "swd_real_floor": floor,
                    "swd_settings": {**swd_kw, "images": n_eval}, "losses": dict(last)}
            latent_avg = state.g_ema.mean_latent(4096, torch.Generator(device=device).manual_seed(0))
            save_networks(cfg.train.export, state.g_ema, state.d, card, latent_avg)

        from tqdm import tqdm

        bar = tqdm(total=iterations, initial=min(state.step, iterations), disable=not cfg.train.progress,
                   desc=f"train {cfg.model.name}", dynamic_ncols=True)

        def on_step(st: training.TrainState, logs: dict[str, float]) -> None:
            last.update(logs)
            bar.update(1)
            if st.step % int(cfg.train.log_every) == 0:
                tracker.log_metrics(logs, step=st.step)
                bar.set_postfix(d=f"{logs['loss_d']:.3f}", g=f"{logs['loss_g']:.3f}")
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
