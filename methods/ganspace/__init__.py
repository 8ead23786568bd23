"""GANSpace (Harkonen et al., NeurIPS 2020) on our StyleGAN2: principal components of W as edit directions.

``n_samples`` z are mapped to W and their principal components (eigenvectors of the sample covariance, largest
variance first) are the candidates; the top ``n_components`` are scored by the shared yaw regressor and the
chosen one, applied to the W+ ``layers`` range (GANSpace's layer-wise edits; ``[0, 4)`` = the 4x4 and 8x8 styles
of our 32 px generator), is calibrated in degrees (:mod:`methods.common.w_directions`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from core.registry import METHODS
from methods.common.w_directions import LatentEditor, WDirectionRotation

__all__ = ["pca_directions", "GANSpace"]


def pca_directions(w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Principal components of samples ``w`` (N, D): components (D, D) as rows, largest variance first, their
    standard deviations (D,) and the mean (D,). Computed in float64 from the sample covariance (``N - 1``).

    >>> x = torch.tensor([[1., 0.], [-1., 0.], [0., .1], [0., -.1]])
    >>> comp, std, _ = pca_directions(x)
    >>> comp[0].abs().tolist(), round(float(std[0]), 4)
    ([1.0, 0.0], 0.8165)
    """
    x = w.double()
    mean = x.mean(0)
    x = x - mean
    cov = x.T @ x / (len(x) - 1)
    values, vectors = torch.linalg.eigh(cov)
    order = values.argsort(descending=True)
    return vectors[:, order].T.float(), values[order].clamp_min(0).sqrt().float(), mean.float()


@METHODS.register("ganspace")
class GANSpace(WDirectionRotation):
    """Yaw by the GANSpace principal component of W that best turns the head (``configs/method/ganspace.yaml``)."""

    name = "ganspace"

    def __init__(self, gan: str, n_samples: int = 20000, **kwargs: Any):
        super().__init__(gan, **kwargs)
        self.n_samples = int(n_samples)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "n_samples": self.n_samples}

    def candidate_basis(self, editor: LatentEditor) -> tuple[Tensor, dict[str, Any]]:
        comp, std, _ = pca_directions(editor.sample_w(self.n_samples, self.seed + 3).cpu())
        k = self.n_components
        explained = (std[:k] ** 2 / (std ** 2).sum()).tolist()
        return comp[:k], {"pca_std": std[:k].tolist(), "explained_variance_ratio": explained,
                          "n_samples": self.n_samples}
