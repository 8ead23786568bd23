"""SeFa (Shen and Zhou, CVPR 2021), closed-form factorisation of our StyleGAN2's style modulations.

The modulation layers of the chosen W+ ``layers`` map W (D,) to per-channel styles; their weights stacked as
``A`` (sum of channels, D), each row normalised to unit length as in the paper's code, give the candidate
directions as the eigenvectors of ``A^T A`` with the largest eigenvalues (the W directions the styles change most
along). The top ``n_components`` are scored by the shared yaw regressor; the chosen one is applied to the same
layers and calibrated in degrees (:mod:`methods.common.w_directions`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from core.registry import METHODS
from methods.common.w_directions import LatentEditor, WDirectionRotation, layer_modulations

__all__ = ["sefa_directions", "SeFa"]


def sefa_directions(weights: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Eigenvectors (D, D) as rows, largest eigenvalue first, and eigenvalues (D,) of ``A^T A``, where ``A`` stacks
    the modulation weights ``weights`` (each (O_i, D)) with every row scaled to unit norm.

    >>> vec, val = sefa_directions([torch.tensor([[2., 0.], [0., 1.], [3., 0.]])])
    >>> vec[0].abs().tolist(), val.tolist()
    ([1.0, 0.0], [2.0, 1.0])
    """
    a = torch.cat([w.detach().double().reshape(w.shape[0], -1) for w in weights])
    a = a / a.norm(dim=1, keepdim=True)
    values, vectors = torch.linalg.eigh(a.T @ a)
    order = values.argsort(descending=True)
    return vectors[:, order].T.float(), values[order].float()


@METHODS.register("sefa")
class SeFa(WDirectionRotation):
    """Yaw by the SeFa eigenvector of the ``layers`` modulations that best turns the head
    (``configs/method/sefa.yaml``)."""

    name = "sefa"

    def candidate_basis(self, editor: LatentEditor) -> tuple[Tensor, dict[str, Any]]:
        start, stop = editor.layers
        mods = [m for layer in layer_modulations(editor.g)[start:stop] for m in layer]
        vectors, values = sefa_directions([m.weight.cpu() for m in mods])
        k = self.n_components
        rows = sum(m.weight.shape[0] for m in mods)
        return vectors[:k], {"eigenvalues": values[:k].tolist(), "modulation_rows": rows}
