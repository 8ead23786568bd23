"""Pseudo samples for GAN2Shape Step 2 (``method.md`` section 6): random lights, random views, rendering.

The canonical depth, normals, albedo and the ambient/diffuse coefficients ``k_a``, ``k_d`` of one image (from its
latest Step-1 forward) are relit with random lights (:func:`sample_lights`, uniform, not from the light MVN) and
rendered under random views drawn from a Gaussian view prior (:func:`sample_views`) through the warp path of
:mod:`methods.renderer` (:func:`render_pseudo_samples`). View vectors are 6-d in the normalised units of the view
net's output (rotations ``x 60 deg``, translations ``x 0.1``; index 1 is yaw); light vectors are GAN2Shape's 4-d
``(2 k_a - 1, 2 k_d - 1, l_x / l_z, l_y / l_z)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from core.errors import BenchError
from methods.renderer.camera import check_shape, depth_to_normals
from methods.renderer.shading import albedo_to_texture
from methods.renderer.warp import Renderer, render_given_view

__all__ = [
    "RAND_LIGHT_DEFAULT", "RAND_LIGHT_SYNFACE", "GaussianPrior", "PseudoLights", "PseudoSamples",
    "pseudo_shading", "sample_lights", "sample_views", "default_view_prior", "load_view_light_prior", "load_priors",
    "render_pseudo_samples",
]

#: ``rand_light = [x_min, x_max, y_min, y_max, delta_min, delta_max, alpha]`` of every published config but synface.
RAND_LIGHT_DEFAULT: tuple[float, ...] = (-1.0, 1.0, -0.2, 0.8, -0.1, 0.6, -0.6)
#: ``rand_light`` of the synface configs.
RAND_LIGHT_SYNFACE: tuple[float, ...] = (-0.9, 0.9, -0.3, 0.8, -0.1, 0.7, -0.4)


@dataclass(frozen=True)
class GaussianPrior:
    """A Gaussian over view (6-d) or light (4-d) vectors: ``mean`` ``(D,)``, ``cov`` ``(D, D)`` symmetric PD."""

    mean: Tensor
    cov: Tensor


@dataclass(frozen=True)
class PseudoLights:
    """Random lights of :func:`sample_lights` (``N`` samples).

    Attributes:
        k_ambient, k_diffuse: ``(N,)`` the image's ``k_a``, ``k_d`` (before the random shift).
        direction: ``(N, 3)`` unit light directions ``(x, y, 1) / |(x, y, 1)|``.
        delta: ``(N,)`` random intensity shift ``δ``.
        alpha: ambient share of the shift (``rand_light[6]``).
    """

    k_ambient: Tensor
    k_diffuse: Tensor
    direction: Tensor
    delta: Tensor
    alpha: float

    def __len__(self) -> int:
        return self.delta.shape[0]

    def shading(self, normals: Tensor) -> Tensor:
        """``(N, 1, H, W)`` shading of normals ``(N or 1, H, W, 3)``; see :func:`pseudo_shading`."""
        return pseudo_shading(normals, self.k_ambient, self.k_diffuse, self.direction, self.delta, self.alpha)

    def light_vectors(self) -> Tensor:
        """``(N, 4)`` equivalent light vectors for :func:`methods.renderer.shading.light_to_shading`.

        ``(2 (k_a + α δ) - 1, 2 (k_d + δ) - 1, l_x / l_z, l_y / l_z)``, which shades exactly like these lights.
        """
        k_a = self.k_ambient + self.alpha * self.delta
        k_d = self.k_diffuse + self.delta
        xy = self.direction[:, :2] / self.direction[:, 2:]
        return torch.cat([(2 * k_a - 1)[:, None], (2 * k_d - 1)[:, None], xy], 1)


@dataclass(frozen=True)
class PseudoSamples:
    """Result of :func:`render_pseudo_samples`: ``images`` ``(N, 3, H, W)`` in [-1, 1]; ``masks`` ``(N, 1, H, W)``
    (warped canonical mask, nearest sampling: zero out of frame, not where the depth is invalid); ``views``
    ``(N, 6)``; ``lights`` the :class:`PseudoLights` used."""

    images: Tensor
    masks: Tensor
    views: Tensor
    lights: PseudoLights


def _per_sample(x: Tensor | float, n: int, like: Tensor, name: str) -> Tensor:
    """Scalar, ``(1,)`` or ``(n,)`` coefficient -> ``(n,)`` in the dtype/device of ``like``."""
    x = torch.as_tensor(x, dtype=like.dtype, device=like.device).reshape(-1)
    if x.numel() not in (1, n):
        raise ValueError(f"{name} must be a scalar or have 1 or {n} entries, got {x.numel()}")
    return x.expand(n)


def pseudo_shading(normals: Tensor, k_a: Tensor | float, k_d: Tensor | float, light_dir: Tensor, delta: Tensor,
                   alpha: float) -> Tensor:
    """Relit shading ``(k_a + α δ) + (k_d + δ) max(0, n . l)``.

    Args:
        normals: ``(N, H, W, 3)`` or ``(1, H, W, 3)`` (broadcast) canonical normals.
        k_a, k_d: scalars or ``(1,)`` / ``(N,)`` ambient and diffuse coefficients.
        light_dir: ``(N, 3)`` unit light directions.
        delta: ``(N,)`` intensity shifts.
        alpha: ambient share of the shift.
    Returns:
        ``(N, 1, H, W)`` shading.

    >>> n = torch.tensor([0.0, 0.0, 1.0]).expand(1, 2, 2, 3)
    >>> s = pseudo_shading(n, 0.5, 0.5, torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([0.2]), -0.5)
    >>> s.shape, round(float(s[0, 0, 0, 0]), 4)
    (torch.Size([1, 1, 2, 2]), 1.1)
    """
    check_shape(normals, "B,H,W,3", "normals")
    check_shape(light_dir, "N,3", "light_dir")
    n = light_dir.shape[0]
    check_shape(delta, f"{n}", "delta")
    if normals.shape[0] not in (1, n):
        raise ValueError(f"normals batch must be 1 or {n}, got {normals.shape[0]}")
    k_a, k_d = _per_sample(k_a, n, delta, "k_a"), _per_sample(k_d, n, delta, "k_d")
    cosine = (normals * light_dir.to(normals)[:, None, None]).sum(-1).clamp_min(0)
    ambient, diffuse = k_a + alpha * delta, k_d + delta
    return (ambient[:, None, None] + diffuse[:, None, None] * cosine).unsqueeze(1)


def sample_lights(n: int, rand_light=RAND_LIGHT_DEFAULT, *, k_a: Tensor | float, k_d: Tensor | float,
                  generator: torch.Generator | None = None) -> PseudoLights:
    """Draw ``n`` random lights: ``l = normalise(U(x_min, x_max), U(y_min, y_max), 1)``, ``δ ~ U(δ_min, δ_max)``.

    Args:
        n: number of lights.
        rand_light: ``[x_min, x_max, y_min, y_max, δ_min, δ_max, α]`` (:data:`RAND_LIGHT_DEFAULT`,
            :data:`RAND_LIGHT_SYNFACE`).
        k_a, k_d: the image's ambient and diffuse coefficients (scalars or ``(1,)`` / ``(n,)``); their dtype and
            device (CPU for floats) are used.
        generator: random generator (on that device) for repeatable draws.
    Returns:
        :class:`PseudoLights` with ``n`` entries.

    >>> lights = sample_lights(4, k_a=0.5, k_d=0.5, generator=torch.Generator().manual_seed(0))
    >>> lights.direction.shape, bool((lights.direction.norm(dim=1) - 1).abs().max() < 1e-6)
    (torch.Size([4, 3]), True)
    """
    if len(rand_light) != 7:
        raise ValueError(f"rand_light must have 7 entries, got {len(rand_light)}")
    like = k_a if isinstance(k_a, Tensor) else torch.zeros(())
    if not like.is_floating_point():
        like = like.float()
    x0, x1, y0, y1, d0, d1, alpha = (float(v) for v in rand_light)
    u = torch.rand(n, 3, generator=generator, device=like.device, dtype=like.dtype)
    lo = torch.tensor([x0, y0, d0], dtype=like.dtype, device=like.device)
    hi = torch.tensor([x1, y1, d1], dtype=like.dtype, device=like.device)
    u = lo + (hi - lo) * u
    direction = torch.cat([u[:, :2], torch.ones_like(u[:, :1])], 1)
    direction = direction / direction.norm(dim=1, keepdim=True)
    return PseudoLights(_per_sample(k_a, n, like, "k_a"), _per_sample(k_d, n, like, "k_d"), direction, u[:, 2],
                        alpha)


def _gaussian_problem(mean: Tensor, cov: Tensor, dim: int | None) -> str | None:
    """Why ``(mean, cov)`` is not a valid Gaussian, or None."""
    if not isinstance(mean, Tensor) or not isinstance(cov, Tensor):
        return f"'mean' and 'cov' must be tensors or lists, got {type(mean).__name__}, {type(cov).__name__}"
    d = mean.shape[0] if mean.dim() == 1 else -1
    if mean.dim() != 1 or (dim is not None and d != dim):
        return f"'mean' must have shape ({dim if dim is not None else 'D'},), got {tuple(mean.shape)}"
    if tuple(cov.shape) != (d, d):
        return f"'cov' must have shape ({d}, {d}) to match 'mean', got {tuple(cov.shape)}"
    if not (torch.isfinite(mean).all() and torch.isfinite(cov).all()):
        return "'mean' and 'cov' must be finite"
    c = cov.double()
    if not torch.allclose(c, c.T, rtol=1e-5, atol=1e-8):
        return "'cov' must be symmetric"
    if d and int(torch.linalg.cholesky_ex(c).info) != 0:
        return "'cov' must be positive definite"
    return None


def sample_views(n: int, mean: Tensor, cov: Tensor, view_scale: float = 1.0,
                 generator: torch.Generator | None = None) -> Tensor:
    """Draw ``n`` views ``v ~ N(mean, cov)`` and multiply the yaw (index 1), mean included, by ``view_scale``.

    So the yaw has mean ``view_scale * mean[1]`` and variance ``view_scale**2 * cov[1, 1]``; the other components
    follow the prior. Published ``view_scale``: 1.2 for celeba, cat and synface, 1.0 for car and church.

    Args:
        n: number of views.
        mean: ``(6,)``.
        cov: ``(6, 6)`` symmetric positive definite.
        view_scale: yaw multiplier.
        generator: random generator (on the device of ``mean``).
    Returns:
        ``(n, 6)`` view vectors (normalised units), dtype and device of ``mean``.

    >>> prior = default_view_prior()
    >>> sample_views(3, prior.mean, prior.cov, 1.2, torch.Generator().manual_seed(0)).shape
    torch.Size([3, 6])
    """
    problem = _gaussian_problem(mean, cov, 6)
    if problem:
        raise ValueError(f"invalid view prior: {problem}")
    chol = torch.linalg.cholesky(cov.double()).to(mean)
    eps = torch.randn(n, 6, generator=generator, device=mean.device, dtype=mean.dtype)
    views = mean + eps @ chol.T
    scale = torch.ones(6, dtype=mean.dtype, device=mean.device)
    scale[1] = view_scale
    return views * scale


def default_view_prior(*, dtype=torch.float32, device=None) -> GaussianPrior:
    """A documented stand-in for the released ``view_mvn.pth`` files (which this project does not ship).

    Zero mean (frontal view, no translation) and a diagonal covariance with standard deviations
    ``(0.1, 0.25, 0.05, 0.1, 0.1, 0.1)`` in normalised units: pitch 6 deg, yaw 15 deg, roll 3 deg, x/y translation
    0.01 and z 0.1 (ignored while ``z_range = 0``). The author notes the prior "does not have to be very accurate";
    use :func:`load_view_light_prior` for a fitted one.

    >>> default_view_prior().cov.diagonal()[1].item()
    0.0625
    """
    std = torch.tensor([0.1, 0.25, 0.05, 0.1, 0.1, 0.1], dtype=dtype, device=device)
    return GaussianPrior(torch.zeros(6, dtype=dtype, device=device), torch.diag(std**2))


def load_view_light_prior(path: str | Path, dim: int | None = None) -> GaussianPrior:
    """Read a view or light prior ``{'mean': (D,), 'cov': (D, D)}`` from a torch file or a ``.json``.

    Torch files (e.g. the released ``view_mvn.pth``) are read with ``weights_only=True``; JSON files hold nested
    lists. Raises :class:`core.errors.BenchError` naming the file when it is missing or unreadable, lacks the
    keys, has wrong shapes (``dim`` fixes D, e.g. 6 for views, 4 for lights) or a covariance that is not symmetric
    positive definite.

    Args:
        path: file path.
        dim: expected dimension, or None for any.
    Returns:
        :class:`GaussianPrior` in float32 on the CPU.

    >>> load_view_light_prior("/nonexistent/view_mvn.pth")
    Traceback (most recent call last):
    ...
    core.errors.BenchError: view/light prior file /nonexistent/view_mvn.pth does not exist
    """
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"view/light prior file {path} does not exist")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any parse failure is a bad user file
        raise BenchError(f"cannot read view/light prior file {path}: {err}") from err
    if not isinstance(data, dict) or not {"mean", "cov"} <= set(data):
        raise BenchError(f"view/light prior file {path} must hold a dict with keys 'mean' and 'cov'")
    try:
        mean = torch.as_tensor(data["mean"], dtype=torch.float32)
        cov = torch.as_tensor(data["cov"], dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as err:
        raise BenchError(f"view/light prior file {path}: 'mean'/'cov' are not numeric arrays ({err})") from err
    problem = _gaussian_problem(mean, cov, dim)
    if problem:
        raise BenchError(f"invalid view/light prior file {path}: {problem}")
    return GaussianPrior(mean, cov)


def load_priors(view_path: str | Path | None, light_path: str | Path | None) -> tuple[GaussianPrior, Tensor]:
    """The view prior (``view_path``, or :func:`default_view_prior`) and the light prior's mean ``(4,)``
    (``light_path``, or zeros): what GAN2Shape samples pseudo views from and adds to V's and L's outputs."""
    view = load_view_light_prior(view_path, 6) if view_path else default_view_prior()
    light_mean = load_view_light_prior(light_path, 4).mean if light_path else torch.zeros(4)
    return view, light_mean


def render_pseudo_samples(albedo: Tensor, canon_depth: Tensor, views: Tensor, lights: PseudoLights,
                          renderer_cfg: Renderer = Renderer(), *, normals: Tensor | None = None,
                          canon_mask: Tensor | None = None) -> PseudoSamples:
    """Relight the canonical albedo with ``lights`` and render it under ``views`` (warp path).

    ``texture = 2 ((a + 1) / 2 * shading) - 1`` with :func:`pseudo_shading`; the image is the bilinear warp of the
    texture, clamped to [-1, 1]; the mask is the nearest-sampled warp of ``canon_mask`` (all ones by default), so
    it only removes out-of-frame pixels (and the background when a canonical object mask is given), not the
    depth-invalid region.

    Args:
        albedo: ``(1 or N, 3, S, S)`` canonical albedo in [-1, 1].
        canon_depth: ``(1 or N, S, S)`` canonical depth.
        views: ``(N, 6)`` view vectors.
        lights: :class:`PseudoLights` with ``N`` entries.
        renderer_cfg: renderer settings.
        normals: ``(1 or N, S, S, 3)`` canonical normals; None computes them from ``canon_depth``.
        canon_mask: ``(1 or N, 1, S, S)`` canonical object mask, or None for all ones.
    Returns:
        :class:`PseudoSamples`.

    >>> lights = sample_lights(2, k_a=0.5, k_d=0.5, generator=torch.Generator().manual_seed(0))
    >>> out = render_pseudo_samples(torch.zeros(1, 3, 8, 8), torch.ones(1, 8, 8), torch.zeros(2, 6), lights)
    >>> out.images.shape, out.masks.shape
    (torch.Size([2, 3, 8, 8]), torch.Size([2, 1, 8, 8]))
    """
    check_shape(views, "N,6", "views")
    n = views.shape[0]
    if len(lights) != n:
        raise ValueError(f"need one light per view, got {len(lights)} lights and {n} views")
    check_shape(albedo, "B,3,S,S", "albedo")
    check_shape(canon_depth, "B,S,S", "canon_depth")
    if normals is None:
        normals = depth_to_normals(canon_depth, renderer_cfg.intrinsics(canon_depth.shape[-1], canon_depth))
    depth = canon_depth.expand(n, -1, -1)
    texture = albedo_to_texture(albedo.expand(n, -1, -1, -1), lights.shading(normals))
    mask = torch.ones_like(texture[:, :1]) if canon_mask is None else canon_mask.to(texture).expand(n, -1, -1, -1)
    out = render_given_view(texture, depth, views.to(texture), renderer_cfg, mask=mask)
    return PseudoSamples(out.image.clamp(-1, 1), out.mask, views, lights)
