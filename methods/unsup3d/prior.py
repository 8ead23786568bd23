"""View and light priors for GAN2Shape from a trained Unsup3d (the author's recipe, ``method.md`` section 6).

Run the view and light networks over a split, then take the mean and covariance of their outputs: 6-d views in
the normalised units of the view network (rotations x 60 degrees, translations x 0.1) and 4-d lights
``(2 k_a - 1, 2 k_d - 1, l_x, l_y)``, the units GAN2Shape adds its mean to and samples from. The covariance is the
unbiased sample covariance plus ``jitter`` on the diagonal, so components the network never varies (the z
translation, unused while ``z_range = 0``) still give a positive-definite matrix. Files are JSON
``{"mean": [D], "cov": [[D x D]], ...}`` as read by :func:`methods.gan2shape.pseudo.load_view_light_prior`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from methods.gan2shape.pseudo import GaussianPrior

from .model import Unsup3dNet
from .training import as_float_images

__all__ = ["predict_view_light", "fit_gaussian", "write_prior"]


@torch.no_grad()
def predict_view_light(net: Unsup3dNet, images: Tensor, batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """Views ``(N, 6)`` and lights ``(N, 4)`` (float64, CPU) of ``images`` ``(N, 3, S, S)`` (uint8 or [-1, 1]).

    Only the view and light networks run (no rendering); the outputs equal :attr:`Unsup3dOutput.view` / ``.light``
    in evaluation mode (:meth:`Unsup3dNet.view_light`: with ``view_spread``, the views standardised by the running
    statistics).
    """
    device = next(net.parameters()).device
    views, lights = [], []
    was_training = net.training
    net.eval()
    for i in range(0, images.shape[0], batch_size):
        x = as_float_images(images[i : i + batch_size]).to(device)
        view, light = net.view_light(x)
        views.append(view.double().cpu())
        lights.append(light.double().cpu())
    net.train(was_training)
    return torch.cat(views), torch.cat(lights)


def fit_gaussian(samples: Tensor, jitter: float = 1e-6) -> GaussianPrior:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` (+ ``jitter`` I) of ``samples`` ``(N, D)``, N >= 2.

    >>> prior = fit_gaussian(torch.tensor([[0.0, 1.0], [2.0, 1.0]]))
    >>> prior.mean.tolist(), [round(v, 6) for v in prior.cov.diagonal().tolist()]
    ([1.0, 1.0], [2.000001, 1e-06])
    """
    if samples.dim() != 2 or samples.shape[0] < 2:
        raise ValueError(f"need samples of shape (N >= 2, D), got {tuple(samples.shape)}")
    x = samples.double()
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / (x.shape[0] - 1)
    cov = (cov + cov.T) / 2 + jitter * torch.eye(x.shape[1], dtype=x.dtype)
    return GaussianPrior(mean, cov)


def write_prior(path: str | Path, prior: GaussianPrior, info: dict[str, Any] | None = None) -> Path:
    """Write ``{"mean", "cov", "dim", **info}`` as JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"mean": prior.mean.tolist(), "cov": prior.cov.tolist(), "dim": int(prior.mean.shape[0]),
               **(info or {})}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    return path
