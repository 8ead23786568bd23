"""``bench train model=unsup3d`` / ``model=unsup3d_cpu`` and ``bench train model=view_light_prior``.

Unsup3d: loads the training split into memory (uint8), trains with :mod:`methods.unsup3d.training`, logs the loss
terms every ``train.log_every`` steps, and every ``train.eval_every`` steps (and at the end) the validation
SIDE/MAD on the first ``model.val_images`` images of ``model.val_split``, a grid of sample reconstructions, and an
export of the weights with their model card to ``train.export``. ``train.out_dir/checkpoint.pt`` is written every
``train.checkpoint_every`` steps; rerunning the same command resumes from it (bit-exactly on CPU).

View/light prior: runs the Unsup3d weights ``model.weights`` over ``train.split`` and writes the mean and covariance
of the predicted views and lights to ``model.view_out`` and ``model.light_out`` (JSON, read by GAN2Shape).
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
from benchmark import visualize as vis
from benchmark.errors import BenchError
from benchmark.runner import create_checked, dataset_args, device_name, plain, resolve_device, seed_everything

__all__ = ["train_unsup3d", "fit_view_light_prior", "sample_grid"]


def _split(cfg: DictConfig, split: str, limit: int | None):
    from benchmark.registry import DATASETS

    ds = create_checked(DATASETS, cfg.dataset.name, dataset_args(cfg, split, limit), f"dataset={cfg.dataset.name}")
    if len(ds) == 0:
        raise BenchError(f"dataset {cfg.dataset.name} split {split} is empty")
    return ds


def _validation(cfg: DictConfig, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``model.val_images`` images ``(N, 3, S, S)`` uint8 and depths ``(N, S, S)`` of ``model.val_split``."""
    from methods.unsup3d.method import dataset_images

    ds = _split(cfg, cfg.model.val_split, int(cfg.model.val_images))
    if not getattr(ds, "has_depth", False):
        raise BenchError(f"validation split {cfg.model.val_split} of {cfg.dataset.name} has no ground-truth depth")
    images = dataset_images(ds)
    depths = (torch.from_numpy(ds.depth_array()) if hasattr(ds, "depth_array")
              else torch.stack([ds[i]["depth"] for i in range(len(ds))]))
    if images.shape[-1] != size:
        raise BenchError(f"validation images are {images.shape[-1]}px but the model is {size}px")
    return images, depths


def sample_grid(net, images: torch.Tensor, renderer_fov: float = 10.0) -> np.ndarray:
    """Rows of input / reconstruction / mirrored reconstruction / canonical albedo / canonical image / canonical
    depth / input-view depth / its normals / photometric confidence ``1 / (1 + sigma)``, as one uint8 grid."""
    from methods.unsup3d.training import predict

    out = predict(net, images)[0]
    b, rows = out.batch, []
    for i in range(b):
        row = [vis.image_to_uint8(out.image[i]), vis.image_to_uint8(out.recon_image[i])]
        if out.flipped:
            row.append(vis.image_to_uint8(out.recon_image[b + i]))
        row += [vis.image_to_uint8(out.canon_albedo[i]), vis.image_to_uint8(out.canon_image[i]),
                vis.depth_to_uint8(out.canon_depth[i]), vis.depth_to_uint8(out.recon_depth[i]),
                vis.normals_to_uint8(out.recon_depth[i], renderer_fov)]
        if out.conf_l1 is not None:
            row.append(vis.mask_to_uint8(1 / (1 + out.conf_l1[i, 0])))
        rows.append(row)
    return vis.grid(rows)


def _resume_or_create(cfg: DictConfig, ckpt_path: Path, model_cfg, train_cfg, device):
    from methods.unsup3d import training

    want = {"model": plain(cfg.model), "dataset": cfg.dataset.name, "seed": int(cfg.seed)}
    if not ckpt_path.is_file():
        state = training.create_state(model_cfg, train_cfg, device, seed=int(cfg.seed))
        state.extra = {**want, "wall_time_s": 0.0}
        return state
    try:
        state = training.load_checkpoint(ckpt_path, device, train_cfg)
    except (RuntimeError, ValueError, KeyError, OSError) as err:
        raise BenchError(f"cannot resume from {ckpt_path} ({type(err).__name__}: {str(err)[:200]}); delete it or "
                         f"choose another train.out_dir") from None
    have = {k: state.extra.get(k) for k in want}
    if have != want:
        raise BenchError(f"{ckpt_path} was trained with another model/dataset/seed; delete {ckpt_path.parent} or set "
                         f"train.out_dir=<new folder>")
    return state


def train_unsup3d(cfg: DictConfig, overrides: list[str]) -> int:
    """Train (or resume) Unsup3d as configured; returns 0."""
    from tqdm import tqdm

    from benchmark.train import load_images
    from methods.unsup3d import training
    from methods.unsup3d.perceptual import build_features, file_sha256

    device = resolve_device(cfg.device.type)
    if cfg.train.num_threads:
        torch.set_num_threads(int(cfg.train.num_threads))
    seed_everything(cfg.seed)
    model_cfg, train_cfg, perc = training.split_settings(plain(cfg.model))
    iterations, out_dir = int(cfg.train.iterations), Path(cfg.train.out_dir)
    ckpt_path = out_dir / "checkpoint.pt"
    command = " ".join(["bench train", *map(shlex.quote, overrides)])

    data, data_info = load_images(cfg, model_cfg.image_size)
    val_images, val_depths = _validation(cfg, model_cfg.image_size)
    features = build_features(perc["perceptual"], perc["perceptual_weights"], model_cfg.image_size, device)
    perc_info = {**perc, "sha256": file_sha256(perc["perceptual_weights"]) if features is not None else None}
    state = _resume_or_create(cfg, ckpt_path, model_cfg, train_cfg, device)
    resumed_from = state.step

    tags = {"model": cfg.model.name, "dataset": cfg.dataset.name, "seed": cfg.seed, "device": str(device),
            "device_name": device_name(device), "command": command, "resumed_from": resumed_from}
    started, commit = time.time(), tracking.git_commit()
    wall_before = float(state.extra.get("wall_time_s", 0.0))
    last: dict[str, float] = dict(state.extra.get("last_losses") or {})  # survives a resume with no new steps
    summary: dict[str, float] = {}
    per_epoch = len(data) // train_cfg.batch_size

    with tracking.start_run(cfg.tracking.uri, cfg.tracking.experiment, f"{cfg.model.name}-{cfg.dataset.name}",
                            tracking.flatten(plain(cfg)), tags) as tracker:
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")

        def checkpoint() -> None:
            state.extra["wall_time_s"] = wall_before + time.time() - started
            state.extra["last_losses"] = dict(last)
            training.save_checkpoint(ckpt_path, state)

        def evaluate() -> None:
            scores = training.evaluate_shape(state.net, val_images, val_depths)
            tracker.log_metrics({f"val_{k}": v for k, v in scores.items()}, step=state.step)
            tracker.log_image(sample_grid(state.net, val_images[:8], model_cfg.fov_deg),
                              f"samples/step_{state.step:07d}.png")
            summary.update(scores)
            card = {"command": command, "dataset": data_info, "commit": commit, "device": device_name(device),
                    "wall_time_s": wall_before + time.time() - started, "iterations": state.step,
                    "epochs": state.step / per_epoch, "batch_size": train_cfg.batch_size, "seed": int(cfg.seed),
                    "train_config": plain(cfg.model), "perceptual": perc_info, "losses": dict(last),
                    "validation": {"split": cfg.model.val_split, "images": len(val_images), **scores}}
            training.save_weights(cfg.train.export, state.net, card)

        bar = tqdm(total=iterations, initial=min(state.step, iterations), disable=not cfg.train.progress,
                   desc=f"train {cfg.model.name}", dynamic_ncols=True)

        def on_step(st: training.TrainState, logs: dict[str, float]) -> None:
            last.update(logs)
            bar.update(1)
            if st.step % int(cfg.train.log_every) == 0:
                tracker.log_metrics(logs, step=st.step)
                bar.set_postfix(loss=f"{logs['loss']:.3f}")
            if st.step % int(cfg.train.checkpoint_every) == 0:
                checkpoint()
            if st.step % int(cfg.train.eval_every) == 0 and st.step < iterations:
                evaluate()

        training.train_loop(state, data, iterations, features, on_step)
        bar.close()
        checkpoint()
        evaluate()
        tracker.log_metrics({"iterations": state.step, "seconds_per_iteration":
                             (time.time() - started) / max(state.step - resumed_from, 1)}, step=state.step)
    print(f"trained {cfg.model.name} to {state.step} iterations; validation SIDE {summary['side_mean']:.3f} "
          f"MAD {summary['mad_mean']:.2f} on {len(val_images)} {cfg.model.val_split} images; wrote "
          f"{cfg.train.export}")
    return 0


def fit_view_light_prior(cfg: DictConfig, overrides: list[str]) -> int:
    """Write the view and light Gaussians of a trained Unsup3d over ``train.split``; returns 0."""
    from methods.unsup3d.method import dataset_images
    from methods.unsup3d.perceptual import file_sha256
    from methods.unsup3d.prior import fit_gaussian, predict_view_light, write_prior
    from methods.unsup3d.training import load_weights

    device = resolve_device(cfg.device.type)
    if cfg.train.num_threads:
        torch.set_num_threads(int(cfg.train.num_threads))
    net, _ = load_weights(cfg.model.weights, device)
    images = dataset_images(_split(cfg, cfg.train.split, cfg.train.limit))
    if len(images) < 2:
        raise BenchError("need at least 2 images to estimate a covariance")
    command = " ".join(["bench train", *map(shlex.quote, overrides)])
    tags = {"model": cfg.model.name, "dataset": cfg.dataset.name, "device": str(device),
            "device_name": device_name(device), "command": command}
    with tracking.start_run(cfg.tracking.uri, cfg.tracking.experiment, f"{cfg.model.name}-{cfg.dataset.name}",
                            tracking.flatten(plain(cfg)), tags) as tracker:
        views, lights = predict_view_light(net, images, int(cfg.model.batch_size))
        info: dict[str, Any] = {"command": command, "weights": str(cfg.model.weights),
                                "weights_sha256": file_sha256(cfg.model.weights), "dataset": cfg.dataset.name,
                                "split": cfg.train.split, "images": len(images), "commit": tracking.git_commit(),
                                "jitter": float(cfg.model.jitter)}
        for name, samples, out in (("view", views, cfg.model.view_out), ("light", lights, cfg.model.light_out)):
            prior = fit_gaussian(samples, float(cfg.model.jitter))
            write_prior(out, prior, {"kind": name, **info})
            tracker.log_file(out)
            tracker.log_metrics({f"{name}_mean_{i}": float(v) for i, v in enumerate(prior.mean)})
            tracker.log_metrics({f"{name}_std_{i}": float(v) for i, v in enumerate(prior.cov.diagonal().sqrt())})
            print(f"wrote {out}: {name} mean {[round(float(v), 4) for v in prior.mean]}, std "
                  f"{[round(float(v), 4) for v in prior.cov.diagonal().sqrt()]}")
    return 0
