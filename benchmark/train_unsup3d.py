"""``bench train model=view_light_prior``: GAN2Shape's view and light Gaussians from a trained Unsup3d (a job, not a
training loop; Unsup3d itself trains on the single driver, :mod:`methods.unsup3d.recipe`).

It runs the Unsup3d weights ``model.weights`` over ``train.split`` and writes the mean and covariance
of the predicted views and lights to ``model.view_out`` and ``model.light_out`` (JSON, read by GAN2Shape).
"""

from __future__ import annotations

import shlex
from typing import Any

import torch
from omegaconf import DictConfig

from benchmark import tracking
from benchmark.runner import device_name, open_split, plain, resolve_device
from core.errors import BenchError
from core.registry import TRAINERS

__all__ = ["fit_view_light_prior"]


@TRAINERS.register("view_light_prior")  # a job: bench train runs it as is, not on the driver
def fit_view_light_prior(cfg: DictConfig, overrides: list[str]) -> int:
    """Write the view and light Gaussians of a trained Unsup3d over ``train.split``; returns 0."""
    from methods.common.data import split_images
    from core.weights import file_sha256
    from methods.unsup3d.prior import fit_gaussian, predict_view_light, write_prior
    from methods.unsup3d.training import load_weights

    device = resolve_device(cfg.device.type)
    if cfg.train.num_threads:
        torch.set_num_threads(int(cfg.train.num_threads))
    net, _ = load_weights(cfg.model.weights, device)
    images = split_images(open_split(cfg, cfg.train.split, cfg.train.limit))
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
                                "jitter": float(cfg.model.jitter), "light_frame": net.cfg.light_frame}
        for name, samples, out in (("view", views, cfg.model.view_out), ("light", lights, cfg.model.light_out)):
            prior = fit_gaussian(samples, float(cfg.model.jitter))
            write_prior(out, prior, {"kind": name, **info})
            tracker.log_file(out)
            tracker.log_metrics({f"{name}_mean_{i}": float(v) for i, v in enumerate(prior.mean)})
            tracker.log_metrics({f"{name}_std_{i}": float(v) for i, v in enumerate(prior.cov.diagonal().sqrt())})
            print(f"wrote {out}: {name} mean {[round(float(v), 4) for v in prior.mean]}, std "
                  f"{[round(float(v), 4) for v in prior.cov.diagonal().sqrt()]}")
    return 0
