"""GAN2Shape's latent offset (``method.md`` section 4, "Partial mapping and latent offset").

The encoder output ``e`` is turned into a W-space offset by the *last* entries of the generator's mapping network
``G.style`` (entry 0 PixelNorm, entries 1..n_mlp EqualLinear), anchored so that ``e = 0`` gives ``Δw = 0``:

* ``c_w = F(0)``, the full mapping of ``z = 0`` (PixelNorm of 0 is 0);
* ``c_h`` = entries ``[0, n_mlp - F1_d)`` applied to 0;
* ``Δw`` = entries ``[n_mlp - F1_d, n_mlp + 1)`` applied to ``e + c_h``, minus ``c_w``; ``w' = w + Δw``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from methods.renderer.camera import check_shape
from methods.stylegan2.model import Generator

__all__ = ["ProjectedLatent", "latent_offset", "project_latent"]


@dataclass(frozen=True)
class ProjectedLatent:
    """Result of :func:`project_latent`: ``w`` ``(B, D)`` the shifted latent ``w + Δw`` and ``delta_w`` ``(B, D)``.
    Unpacks as ``w, delta_w = project_latent(...)``."""

    w: Tensor
    delta_w: Tensor

    def __iter__(self):
        return iter((self.w, self.delta_w))


def latent_offset(G: Generator, e: Tensor, F1_d: int) -> Tensor:
    """W-space offset ``Δw = F_[k, n+1)(e + F_[0, k)(0)) - F(0)`` with ``k = n_mlp - F1_d``, ``n = n_mlp``.

    Off-by-one, reproduced on purpose: because entry 0 is PixelNorm, ``F1_d`` linear layers is *not* what the
    offset passes through. With ``n_mlp = 8``, ``F1_d = 2`` applies entries 6, 7, 8, i.e. the **last 3** linear
    layers; ``F1_d = 8`` (synface) applies PixelNorm plus all 8 layers, so ``e`` acts as a z-space offset whose
    magnitude is normalised away; ``F1_d = 0`` applies the last linear layer only. ``e = 0`` gives ``Δw = 0``.

    Args:
        G: generator; its mapping ``G.style`` is used through ``G.style_forward``.
        e: ``(B, D)`` encoder output (or relative encoding), ``D = G.style_dim``.
        F1_d: ``0 <= F1_d <= G.n_mlp``.
    Returns:
        ``(B, D)`` offset in W space.

    >>> import torch
    >>> g = Generator(16, style_dim=8, n_mlp=2, max_channels=8)
    >>> latent_offset(g, torch.zeros(3, 8), F1_d=1).abs().max().item()
    0.0
    """
    check_shape(e, f"B,{G.style_dim}", "e")
    n_entries = len(G.style)
    if not 0 <= F1_d <= n_entries - 1:
        raise ValueError(f"F1_d must be in [0, {n_entries - 1}] for a mapping with {n_entries - 1} layers, got {F1_d}")
    split = n_entries - 1 - F1_d
    zero = e.new_zeros(1, G.style_dim)
    c_w = G.style_forward(zero, 0, n_entries)
    c_h = G.style_forward(zero, 0, split)
    return G.style_forward(e + c_h, split, n_entries) - c_w


def project_latent(G: Generator, w: Tensor, e: Tensor, e_ref: Tensor | None = None, F1_d: int = 2) -> ProjectedLatent:
    """Shift a latent by the encoder's offset: ``w' = w + latent_offset(G, e - e_ref, F1_d)``.

    ``e_ref`` implements ``relative_enc``: the encoding ``E(G(w))`` of the image's own GAN render (resized to the
    working resolution), so an input equal to ``G(w)`` maps back to ``w``. See :func:`latent_offset` for the
    ``F1_d`` off-by-one (``F1_d = 2`` goes through the last 3 linear layers; ``F1_d = 8`` includes PixelNorm).

    Args:
        G: generator.
        w: ``(B, D)`` or ``(1, D)`` latent (broadcast over ``e``'s batch).
        e: ``(B, D)`` encoder output ``E(x)``.
        e_ref: optional ``(B, D)`` or ``(1, D)`` reference encoding.
        F1_d: number of mapping entries after the split, minus one (2 in most configs, 8 for synface).
    Returns:
        :class:`ProjectedLatent` ``(w + Δw, Δw)``, each ``(B, D)``.

    >>> import torch
    >>> g = Generator(16, style_dim=8, n_mlp=2, max_channels=8)
    >>> w, dw = project_latent(g, torch.ones(1, 8), torch.randn(2, 8), F1_d=1)
    >>> w.shape, dw.shape
    (torch.Size([2, 8]), torch.Size([2, 8]))
    """
    check_shape(w, f"B,{G.style_dim}", "w")
    relative = e if e_ref is None else e - e_ref
    delta_w = latent_offset(G, relative, F1_d)
    return ProjectedLatent(w + delta_w, delta_w)
