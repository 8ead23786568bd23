"""GAN2Shape's networks and its photo-geometric forward pass (``method.md`` sections 2 and 3).

:class:`Networks` holds the five trained networks (depth D, albedo A, view V, light L, latent-offset encoder E);
:class:`Geometry` the fixed camera/renderer settings and the dataset mean view and light; :func:`photo_forward`
turns an image into canonical depth/albedo, a view and a light, and renders it back (:class:`PhotoForward`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.common.networks import EDDeconv, Encoder, ResEncoder
from methods.renderer.camera import check_shape, depth_to_normals
from methods.renderer.shading import (albedo_to_texture, clamp_border_depth, diffuse_shading, light_to_shading,
                                      raw_to_depth)
from methods.renderer.warp import (Renderer, canon_to_view_grid, sample_texture, view_normals, view_to_canon_grid,
                                   view_valid_mask, warp_canon_depth)

__all__ = ["NET_NAMES", "STEP_NETS", "LIGHT_FRAMES", "Networks", "Geometry", "Render", "PhotoForward", "canonical",
           "predict_view", "lit_normals", "render", "photo_forward", "image_albedo", "geometry_to_dict",
           "geometry_from_dict"]

#: Names of the trained networks, in checkpoint order.
NET_NAMES = ("netD", "netA", "netV", "netL", "netEnc")
#: What each step optimises (``method.md`` section 1): Step 1 only A, Step 2 only E, Step 3 everything but E.
STEP_NETS = {1: ("netA",), 2: ("netEnc",), 3: ("netD", "netA", "netV", "netL")}
#: Where the light lives: ``canonical`` (the paper: the canonical normals are shaded, the light turns with the object)
#: or ``camera`` (the view-rotated normals are shaded, as ``synface_proc`` lights its heads; Unsup3d's CPU recipe).
LIGHT_FRAMES = ("canonical", "camera")


class Networks(nn.Module):
    """D (``EDDeconv`` 3->1), A (``EDDeconv`` 3->3, tanh), V (``Encoder`` 3->6), L (``Encoder`` 3->4) and E
    (``ResEncoder`` 3->``latent_dim``), PyTorch default initialisation. ``latent_dim`` is the GAN's ``style_dim``
    (512 for the published checkpoints).

    Widths default to the published size rules (``nf = max(4096 // S, 16)`` for D, A, V, L; GroupNorm groups
    ``default_gn_base``); ``nf_depth_albedo``, ``nf_view_light``, ``zdim``, ``gn_base`` and ``nf_enc`` override them
    (the CPU recipe uses Unsup3d's CPU widths, so its weights can start GAN2Shape). :attr:`arch` lists the
    overrides, for model cards.

    >>> nets = Networks(64, latent_dim=32)
    >>> [n for n, _ in nets.named_children()]
    ['netD', 'netA', 'netV', 'netL', 'netEnc']
    """

    def __init__(self, image_size: int = 64, latent_dim: int = 512, inplace_relu_quirk: bool = True,
                 nf_depth_albedo: int | None = None, nf_view_light: int | None = None, zdim: int = 256,
                 gn_base: int | None = None, nf_enc: int = 32):
        super().__init__()
        self.image_size, self.latent_dim, self.inplace_relu_quirk = image_size, latent_dim, inplace_relu_quirk
        self.arch = {"nf_depth_albedo": nf_depth_albedo, "nf_view_light": nf_view_light, "zdim": zdim,
                     "gn_base": gn_base, "nf_enc": nf_enc}
        da = {"nf": nf_depth_albedo, "zdim": zdim, "gn_base": gn_base}
        self.netD = EDDeconv(3, 1, image_size, **da)
        self.netA = EDDeconv(3, 3, image_size, activation=nn.Tanh, **da)
        self.netV = Encoder(3, 6, image_size, nf=nf_view_light)
        self.netL = Encoder(3, 4, image_size, nf=nf_view_light)
        self.netEnc = ResEncoder(3, latent_dim, image_size, nf=nf_enc, inplace_relu_quirk=inplace_relu_quirk)

    def parameters_of(self, names) -> list[nn.Parameter]:
        """The parameters of the named sub-networks, e.g. ``STEP_NETS[3]``."""
        return [p for n in names for p in getattr(self, n).parameters()]

    def train_only(self, names) -> None:
        """Let gradients reach only the named sub-networks (the others are frozen, not just left out of Adam)."""
        for name in NET_NAMES:
            getattr(self, name).requires_grad_(name in names)


@dataclass(frozen=True)
class Geometry:
    """Fixed settings of the photo-geometric model: renderer, border clamp and the prior means added to V and L.

    Attributes:
        renderer: camera/rasteriser settings (depth range 0.9-1.1, fov 10, rotations x60 deg, ...).
        border_factor: the side-border clamp blend (GAN2Shape 1.02, Unsup3d 1.0); see ``clamp_border_depth``.
        view_mean: ``(6,)`` mean view added to V's output (``add_mean_V``), zeros to disable.
        light_mean: ``(4,)`` mean light added to L's output (``add_mean_L``).
        depth_pool: band limit of the canonical depth: D's raw output is average-pooled over ``depth_pool`` x
            ``depth_pool`` cells and bilinearly upsampled back (1: per-pixel, the original). Not in the paper; a
            coarse depth is what lets a multi-view photometric fit on our images converge instead of copying
            texture into the depth (``tests/unsup3d/test_image_model.py``, ``weights/README.md`` point 11).
        border_width: clamped columns on each side (2).
        light_frame: one of :data:`LIGHT_FRAMES` (``canonical``, the paper).
        hard_symmetry: make the canonical depth and albedo exactly symmetric (D's raw output and A's output
            averaged with their mirror images), as Unsup3d's CPU recipe; the mirrored renders then equal the plain
            ones and the flip terms are skipped.
        view_spread: ``(3,)`` ``(mean, std, degrees)``: V's raw yaw is standardised with this fixed mean and std
            and scaled to ``degrees`` (Unsup3d's view-spread prior, frozen at its running statistics); None: off.
    """

    renderer: Renderer = Renderer()
    border_factor: float = 1.02
    depth_pool: int = 1
    view_mean: Tensor = field(default_factory=lambda: torch.zeros(6))
    light_mean: Tensor = field(default_factory=lambda: torch.zeros(4))
    border_width: int = 2
    light_frame: str = "canonical"
    hard_symmetry: bool = False
    view_spread: Tensor | None = None

    def __post_init__(self):
        if self.light_frame not in LIGHT_FRAMES:
            raise ValueError(f"light_frame must be one of {LIGHT_FRAMES}, got {self.light_frame!r}")

    def to(self, device) -> "Geometry":
        """A copy with its tensors on ``device``."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, view_mean=move(self.view_mean), light_mean=move(self.light_mean),
                       view_spread=move(self.view_spread))


@dataclass(frozen=True)
class Render:
    """A canonical model seen under a view and light: ``image`` ``(B, 3, S, S)`` reconstruction, ``view_depth``
    ``(B, S, S)`` depth in the view, ``valid`` ``(B, 1, S, S)`` render-validity mask, ``normal`` ``(B, S, S, 3)``
    canonical normals, ``diffuse`` ``(B, 1, S, S)`` ``max(0, n . l)``, ``texture`` ``(B, 3, S, S)`` shaded albedo."""

    image: Tensor
    view_depth: Tensor
    valid: Tensor
    normal: Tensor
    diffuse: Tensor
    texture: Tensor

    def map(self, fn) -> "Render":
        """A copy with ``fn`` applied to every tensor (e.g. ``Tensor.detach``, or a move to a device)."""
        return Render(*(fn(getattr(self, f.name)) for f in fields(self)))


@dataclass(frozen=True)
class PhotoForward:
    """:func:`photo_forward` of ``B`` images: canonical ``depth`` ``(B, S, S)`` and ``albedo`` ``(B, 3, S, S)``,
    ``view`` ``(B, 6)``, ``light`` ``(B, 4)``, the ``render`` and, with ``flip``, ``render_flip`` of the mirrored
    canonical depth and albedo under the same view and light."""

    depth: Tensor
    albedo: Tensor
    view: Tensor
    light: Tensor
    render: Render
    render_flip: Render | None = None

    def map(self, fn) -> "PhotoForward":
        """A copy with ``fn`` applied to every tensor, renders included."""
        return PhotoForward(fn(self.depth), fn(self.albedo), fn(self.view), fn(self.light), self.render.map(fn),
                            None if self.render_flip is None else self.render_flip.map(fn))

    def detach(self) -> "PhotoForward":
        """A copy cut from the graph (what Step 2 reads)."""
        return self.map(Tensor.detach)

    @property
    def k_ambient(self) -> Tensor:
        """``(B,)`` ambient coefficient ``(l0 + 1) / 2``."""
        return (self.light[:, 0] + 1) / 2

    @property
    def k_diffuse(self) -> Tensor:
        """``(B,)`` diffuse coefficient ``(l1 + 1) / 2``."""
        return (self.light[:, 1] + 1) / 2


def canonical(nets: Networks, image: Tensor, geom: Geometry, border: bool = True) -> tuple[Tensor, Tensor]:
    """Canonical depth ``(B, S, S)`` (``1 + 0.1 tanh(r - mean r)`` of D's raw output ``r``, band-limited by
    ``geom.depth_pool``, then the side-border clamp) and albedo.

    ``border=False`` skips the clamp (the ellipsoid pre-fit compares the unclamped depth).
    """
    r = geom.renderer
    raw = nets.netD(image)
    if geom.depth_pool > 1:
        raw = F.interpolate(F.avg_pool2d(raw, geom.depth_pool), size=raw.shape[-2:], mode="bilinear",
                            align_corners=False)
    albedo = nets.netA(image)
    if geom.hard_symmetry:
        raw, albedo = 0.5 * (raw + raw.flip(-1)), 0.5 * (albedo + albedo.flip(-1))
    depth = raw_to_depth(raw[:, 0], r.min_depth, r.max_depth)
    if border:
        depth = clamp_border_depth(depth, r.min_depth, r.max_depth, factor=geom.border_factor,
                                   width=geom.border_width)
    return depth, albedo


def predict_view(nets: Networks, image: Tensor, geom: Geometry) -> Tensor:
    """V's view ``(B, 6)`` of ``image``: its yaw standardised by ``geom.view_spread`` (when set), plus
    ``geom.view_mean``."""
    view = nets.netV(image)
    if geom.view_spread is not None:
        mean, std, degrees = geom.view_spread.to(view).unbind()
        view = torch.cat([view[:, :1], (view[:, 1:2] - mean) / std * (degrees / geom.renderer.rot_range_deg),
                          view[:, 2:]], 1)
    return view + geom.view_mean.to(view)


def lit_normals(normal: Tensor, view: Tensor, geom: Geometry) -> Tensor:
    """The canonical normals ``(B, S, S, 3)`` in the light's frame: unchanged for a canonical light, rotated by
    ``view`` ``(B, 6)`` for a camera light."""
    return normal if geom.light_frame == "canonical" else view_normals(normal, view, geom.renderer)


def render(depth: Tensor, albedo: Tensor, view: Tensor, light: Tensor, geom: Geometry) -> Render:
    """Shade canonical ``albedo`` with ``light`` on ``depth``'s normals and warp it into ``view``.

    Args:
        depth: ``(B, S, S)`` canonical depth.
        albedo: ``(B, 3, S, S)`` in [-1, 1].
        view: ``(B, 6)``; light: ``(B, 4)``.
    Returns:
        :class:`Render` (image clamped to [-1, 1] by the bilinear sampler).
    """
    check_shape(depth, "B,S,S", "depth")
    r = geom.renderer
    normal = depth_to_normals(depth, r.intrinsics(depth.shape[-1], depth))
    lit = lit_normals(normal, view, geom)
    diffuse = diffuse_shading(lit, light)
    texture = albedo_to_texture(albedo, light_to_shading(lit, light))
    view_depth = warp_canon_depth(depth, view, r)
    image = sample_texture(texture, view_to_canon_grid(view_depth, view, r))
    return Render(image, view_depth, view_valid_mask(view_depth, r), normal, diffuse, texture)


def photo_forward(nets: Networks, image: Tensor, geom: Geometry, flip: bool = False,
                  depth_albedo: tuple[Tensor, Tensor] | None = None, view: Tensor | None = None) -> PhotoForward:
    """Predict and render ``image`` ``(B, 3, S, S)``: D, A on the image (or ``depth_albedo`` if given), V (or the
    given ``view`` ``(B, 6)``, see :func:`predict_view`) and L plus the prior means, then :func:`render`; ``flip``
    also renders the mirrored canonical depth and albedo (skipped with ``geom.hard_symmetry``: the canonical model
    is its own mirror, so ``render_flip`` stays None)."""
    depth, albedo = canonical(nets, image, geom) if depth_albedo is None else depth_albedo
    flip = flip and not geom.hard_symmetry
    if view is None:
        view = predict_view(nets, image, geom)
    light = nets.netL(image) + geom.light_mean.to(image)
    if depth.shape[0] != view.shape[0]:
        depth, albedo = depth.expand(view.shape[0], -1, -1), albedo.expand(view.shape[0], -1, -1, -1)
    out = render(depth, albedo, view, light, geom)
    out_flip = render(depth.flip(-1), albedo.flip(-1), view, light, geom) if flip else None
    return PhotoForward(depth, albedo, view, light, out, out_flip)


def image_albedo(fwd: "PhotoForward", image: Tensor, geom: Geometry) -> Tensor:
    """The canonical albedo ``(B, 3, S, S)`` that re-renders ``image`` ``(B, 3, S, S)`` under ``fwd``'s depth, view
    and light: the image pulled back into the canonical frame (:func:`canon_to_view_grid`) and divided by the
    shading, ``fwd.albedo`` where a canonical pixel falls outside the image. What Step 1 (A fitted to one image)
    tends to, in closed form; occlusion is ignored (views within the prior's range hide little of a face)."""
    grid = canon_to_view_grid(fwd.depth, fwd.view, geom.renderer)
    pulled = sample_texture(image, grid)
    inside = (grid.abs() <= 1).all(-1)[:, None].to(image)
    lit = lit_normals(fwd.render.normal, fwd.view, geom)
    shading = light_to_shading(lit, fwd.light).clamp_min(1e-3)
    albedo = (2 * ((pulled + 1) / 2 / shading) - 1).clamp(-1, 1)
    return inside * albedo + (1 - inside) * fwd.albedo


def geometry_to_dict(geom: Geometry) -> dict:
    """The settings of ``geom`` as plain JSON values (model cards); the renderer is the default one."""
    spread = None if geom.view_spread is None else [float(v) for v in geom.view_spread]
    return {"border_factor": geom.border_factor, "border_width": geom.border_width, "depth_pool": geom.depth_pool,
            "light_frame": geom.light_frame, "hard_symmetry": geom.hard_symmetry, "view_spread": spread,
            "view_mean": [float(v) for v in geom.view_mean], "light_mean": [float(v) for v in geom.light_mean]}


def geometry_from_dict(values: dict, **changes) -> Geometry:
    """The inverse of :func:`geometry_to_dict`, with ``changes`` applied (e.g. ``hard_symmetry=False``)."""
    values = {**values, **changes}
    spread = values.get("view_spread")
    return Geometry(border_factor=float(values["border_factor"]), border_width=int(values.get("border_width", 2)),
                    depth_pool=int(values.get("depth_pool", 1)), light_frame=values.get("light_frame", "canonical"),
                    hard_symmetry=bool(values.get("hard_symmetry", False)),
                    view_spread=None if spread is None else torch.tensor(spread, dtype=torch.float32),
                    view_mean=torch.tensor(values.get("view_mean", [0.0] * 6), dtype=torch.float32),
                    light_mean=torch.tensor(values.get("light_mean", [0.0] * 4), dtype=torch.float32))
