"""Unsup3d's photo-geometric autoencoder (Wu, Rupprecht, Vedaldi, CVPR 2020) on the shared renderer and networks.

One image goes through five networks (:mod:`methods.common.networks`): depth D and albedo A (``EDDeconv``, width
64), view V and light L (``Encoder``, width 32 as in Unsup3d, not GAN2Shape's 64) and confidence C (``ConfNet``).
The canonical depth is ``raw_to_depth`` (range 0.9-1.1) with Unsup3d's border clamp (factor 1: the two outer
columns on each side are replaced by ``0.7 max + 0.3 min = 1.04``). With symmetry on, the depth and albedo are also
mirrored horizontally; both versions are shaded with the same light, warped to the same view and rendered, so the
output batch holds ``2B`` renders: the plain ones first, then the mirrored ones. Rendering uses the shared camera
(fov 10 degrees, rotation centre at depth 1, rotations ``60 deg * v[0:3]``, translations ``0.1 * v[3:5]``, no z
translation), :func:`~methods.renderer.warp.warp_canon_depth` and :func:`~methods.renderer.warp.view_to_canon_grid`.

Differences from the original code, on purpose: the reconstruction is a plain bilinear ``grid_sample`` of the
canonical image (zero padding, ``align_corners=True``) and is *not* clamped to [-1, 1], as in Unsup3d (GAN2Shape's
``sample_texture`` clamps); the rasteriser is the shared one (pixel-centre sampling, no 2x supersampling, see
:mod:`methods.renderer.warp`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.common.networks import ConfNet, EDDeconv, Encoder
from methods.common.settings import strict_from_dict
from methods.renderer.camera import check_shape, depth_to_normals
from methods.renderer.shading import albedo_to_texture, clamp_border_depth, light_to_shading, raw_to_depth
from methods.renderer.warp import Renderer, view_normals, view_to_canon_grid, view_valid_mask, warp_canon_depth

__all__ = ["Unsup3dConfig", "Unsup3dOutput", "Unsup3dNet", "mirror"]


@dataclass(frozen=True)
class Unsup3dConfig:
    """Architecture and geometry of the model; defaults are the published synface settings.

    Attributes:
        image_size: input side S (64 in Unsup3d; the confidence network is fixed to 64).
        nf_depth_albedo: base width of D and A (64).
        nf_view_light: base width of V and L (32 in Unsup3d).
        zdim: bottleneck width of D and A (256).
        gn_base: GroupNorm groups of the ``nf``-wide layers of D, A and C (16; doubled with the width).
        conf_nf, conf_zdim: base width and bottleneck of C (64, 128).
        min_depth, max_depth: canonical depth range (0.9, 1.1).
        border_factor: border clamp blend factor (1 in Unsup3d; GAN2Shape uses 1.02).
        border_width: clamped columns on each side (2).
        fov_deg, rot_center_depth, rot_range_deg, xy_range, z_range: camera and view scales (10, 1, 60, 0.1, 0).
        symmetry: render the mirrored canonical depth and albedo too (the flip terms of the loss).
        hard_symmetry: with ``symmetry``, make the canonical depth and albedo exactly symmetric instead (D's and A's
            output maps averaged with their mirror images). The mirrored render then equals the plain one, so it
            is skipped and the flip terms are 0. Not in the paper and off in both shipped configurations; a
            diagnostic option (``weights/README.md``, Unsup3d diagnosis, point 9).
        light_frame: ``canonical`` (published: the light moves with the object, the canonical normals are shaded)
            or ``camera`` (the light is fixed to the camera, as in ``synface_proc``: the canonical normals are
            rotated by the predicted view before shading, so the light network need not know the view).
        use_conf: predict confidence maps; without them the losses are plain masked L1 / L2.
        supersample, pixel_offset: rasteriser sampling (1, 0: pixel centres; 2, 0.5: the original's 2x
            supersampling with its half-pixel offset), see :class:`methods.renderer.warp.Renderer`.
        depth_init_gain: factor on the initial weights of D's output convolution (1: PyTorch's default
            initialisation, as published; 0: every image starts from the flat canonical depth). With the default,
            GroupNorm lifts the untrained D's output to per-pixel noise of about 0.03 depth units (neighbour
            slopes of ~10:1), so the first warps are degenerate; see ``weights/README.md``.
        view_spread: a prior on the spread of the views, not on any one image's view (off, as published). V's yaw
            is standardised over the training batch and scaled to a standard deviation in degrees that the
            trainer's ``view_spread_schedule`` sets; at evaluation the running mean and deviation (momentum 0.1, as
            BatchNorm) are used. Buffer ``view_spread`` = (mean, std of the raw yaw, spread in degrees; 0: off),
            followed by the pitch's mean and std when ``view_spread_pitch`` is set.
        view_spread_pitch: with ``view_spread``, V's pitch standardised too, to this fraction of the yaw's spread
            (0: the pitch is left free). A head data set's pitch spread relative to its yaw spread.
        equivariant_views: make V and L mirror-equivariant (not in the paper): each predicts from the image and
            from its mirror, and the two are averaged after mirroring the second (:data:`VIEW_MIRROR`,
            :data:`LIGHT_MIRROR`), so a mirrored face gets exactly the mirrored view and light and a symmetric,
            frontal face a yaw of 0. The symmetry assumption applied to the view and light networks.
    """

    image_size: int = 64
    nf_depth_albedo: int = 64
    nf_view_light: int = 32
    zdim: int = 256
    gn_base: int = 16
    conf_nf: int = 64
    conf_zdim: int = 128
    min_depth: float = 0.9
    max_depth: float = 1.1
    border_factor: float = 1.0
    border_width: int = 2
    fov_deg: float = 10.0
    rot_center_depth: float = 1.0
    rot_range_deg: float = 60.0
    xy_range: float = 0.1
    z_range: float = 0.0
    symmetry: bool = True
    hard_symmetry: bool = False
    light_frame: str = "canonical"
    use_conf: bool = True
    supersample: int = 1
    pixel_offset: float = 0.0
    depth_init_gain: float = 1.0
    view_spread: bool = False
    view_spread_pitch: float = 0.0
    equivariant_views: bool = False

    @classmethod
    def from_dict(cls, values: dict) -> "Unsup3dConfig":
        """Build from a mapping; unknown keys are an error (a misspelt key must not fall back to a default)."""
        cfg = strict_from_dict(cls, values, "Unsup3d model settings")
        if cfg.light_frame not in ("canonical", "camera"):
            raise ValueError(f"Unsup3d model settings: light_frame must be 'canonical' or 'camera', got "
                             f"{cfg.light_frame!r}")
        if cfg.view_spread_pitch < 0 or (cfg.view_spread_pitch > 0 and not cfg.view_spread):
            raise ValueError(f"Unsup3d model settings: view_spread_pitch (got {cfg.view_spread_pitch}) is a fraction "
                             f">= 0 of the yaw's spread and needs view_spread: true")
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def renderer(self) -> Renderer:
        """The shared renderer's settings for this model."""
        return Renderer(fov_deg=self.fov_deg, min_depth=self.min_depth, max_depth=self.max_depth,
                        rot_center_depth=self.rot_center_depth, rot_range_deg=self.rot_range_deg,
                        xy_range=self.xy_range, z_range=self.z_range, supersample=self.supersample,
                        pixel_offset=self.pixel_offset)


@dataclass(frozen=True)
class Unsup3dOutput:
    """One forward pass on ``B`` images; ``N = 2B`` with symmetry (plain renders first, then mirrored), else ``B``.

    Attributes:
        image: ``(B, 3, S, S)`` the input in [-1, 1].
        canon_depth_free: ``(B, S, S)`` canonical depth before the border clamp (for the depth smoothness term).
        canon_depth: ``(N, S, S)`` clamped canonical depth (and its mirror).
        canon_albedo: ``(N, 3, S, S)`` canonical albedo in [-1, 1] (and its mirror).
        canon_normal: ``(N, S, S, 3)`` canonical normals.
        canon_shading: ``(N, 1, S, S)`` shading ``k_a + k_d max(0, n . l)`` (n rotated by the view with
            ``light_frame: camera``).
        canon_image: ``(N, 3, S, S)`` shaded canonical image.
        view: ``(B, 6)`` predicted view (normalised units).
        light: ``(B, 4)`` predicted light ``(2 k_a - 1, 2 k_d - 1, l_x, l_y)``.
        recon_depth: ``(N, S, S)`` canonical depth warped to the input view (clamped to [0.8, 1.2]).
        valid: ``(N, 1, S, S)`` render-validity mask of each render.
        mask: ``(N, 1, S, S)`` detached loss mask (with symmetry the product of the plain and mirrored masks).
        recon_image: ``(N, 3, S, S)`` reconstruction of the input, multiplied by ``mask``.
        conf_l1: ``(B, 2, S, S)`` photometric sigmas (plain, flip), or None.
        conf_perc: ``(B, 2, S/4, S/4)`` perceptual sigmas (plain, flip), or None.
    """

    image: Tensor
    canon_depth_free: Tensor
    canon_depth: Tensor
    canon_albedo: Tensor
    canon_normal: Tensor
    canon_shading: Tensor
    canon_image: Tensor
    view: Tensor
    light: Tensor
    recon_depth: Tensor
    valid: Tensor
    mask: Tensor
    recon_image: Tensor
    conf_l1: Tensor | None
    conf_perc: Tensor | None

    @property
    def batch(self) -> int:
        return self.image.shape[0]

    @property
    def flipped(self) -> bool:
        """Whether the mirrored renders are present."""
        return self.recon_image.shape[0] == 2 * self.image.shape[0]


# How a view (pitch, yaw, roll, tx, ty, tz) and a light (2 k_a - 1, 2 k_d - 1, l_x, l_y) change when the image is
# mirrored left-right (tests/unsup3d/test_unsup3d_model.py renders both).
VIEW_MIRROR = (1.0, -1.0, -1.0, -1.0, 1.0, 1.0)
LIGHT_MIRROR = (1.0, 1.0, -1.0, 1.0)


def mirror(x: Tensor) -> Tensor:
    """Horizontal mirror (last axis) of a ``(B, H, W)`` depth or ``(B, C, H, W)`` image.

    >>> mirror(torch.tensor([[[1.0, 2.0, 3.0]]])).tolist()
    [[[3.0, 2.0, 1.0]]]
    """
    return x.flip(-1)


class Unsup3dNet(nn.Module):
    """The five networks of Unsup3d and its forward pass (:class:`Unsup3dOutput`).

    Attribute names ``netD``, ``netA``, ``netV``, ``netL``, ``netC`` follow the original checkpoints.

    >>> net = Unsup3dNet(Unsup3dConfig())
    >>> out = net(torch.zeros(1, 3, 64, 64))
    >>> out.recon_image.shape, out.recon_depth.shape
    (torch.Size([2, 3, 64, 64]), torch.Size([2, 64, 64]))
    """

    def __init__(self, cfg: Unsup3dConfig = Unsup3dConfig()):
        super().__init__()
        self.cfg = cfg
        s = cfg.image_size
        self.netD = EDDeconv(3, 1, s, nf=cfg.nf_depth_albedo, zdim=cfg.zdim, gn_base=cfg.gn_base)
        if cfg.depth_init_gain != 1.0:
            with torch.no_grad():
                self.netD.output_conv.weight.mul_(cfg.depth_init_gain)
        self.netA = EDDeconv(3, 3, s, nf=cfg.nf_depth_albedo, zdim=cfg.zdim, gn_base=cfg.gn_base,
                             activation=nn.Tanh)
        self.netV = Encoder(3, 6, s, nf=cfg.nf_view_light)
        self.netL = Encoder(3, 4, s, nf=cfg.nf_view_light)
        self.netC = ConfNet(3, 2, zdim=cfg.conf_zdim, nf=cfg.conf_nf, gn_base=cfg.gn_base) if cfg.use_conf else None
        if cfg.view_spread:  # yaw mean, std; spread (degrees); pitch mean, std
            self.register_buffer("view_spread", torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0][:5 if self._pitch else 3]))

    @property
    def _pitch(self) -> bool:
        return self.cfg.view_spread and self.cfg.view_spread_pitch > 0

    def set_view_spread(self, degrees: float) -> None:
        """Set the spread prior's standard deviation (degrees; 0: off) that :meth:`spread_views` scales the yaw to
        (a no-op without ``view_spread``)."""
        if self.cfg.view_spread:
            self.view_spread[2] = degrees

    def spread_views(self, view: Tensor) -> Tensor:
        """``view`` ``(B, 6)`` with its yaw standardised and scaled to the spread of the buffer ``view_spread``
        (see :class:`Unsup3dConfig`); unchanged when the prior is off or its spread is 0."""
        if not self.cfg.view_spread or float(self.view_spread[2]) <= 0:
            return view
        axes = [1, 0] if self._pitch else [1]  # yaw, then pitch
        slots = [0, 1, 3, 4][:2 * len(axes)]  # their (mean, std) in the buffer
        raw = view[:, axes]
        if self.training and raw.shape[0] > 1:
            mean, std = raw.mean(0), raw.std(0) + 1e-6
            with torch.no_grad():
                self.view_spread[slots] = self.view_spread[slots].lerp(torch.stack([mean, std], 1).flatten(), 0.1)
        else:
            mean, std = self.view_spread[slots].view(-1, 2).unbind(1)
        ratios = torch.tensor([1.0, self.cfg.view_spread_pitch][:len(axes)], dtype=view.dtype, device=view.device)
        view = view.clone()
        view[:, axes] = (raw - mean) / std * (ratios * (self.view_spread[2] / self.cfg.rot_range_deg))
        return view

    def view_light(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """The view ``(B, 6)`` (after the spread prior) and light ``(B, 4)`` of ``image`` ``(B, 3, S, S)``; mirror-
        equivariant with ``equivariant_views``."""
        if not self.cfg.equivariant_views:
            return self.spread_views(self.netV(image)), self.netL(image)
        b, both = image.shape[0], torch.cat([image, mirror(image)])
        view, light = self.netV(both), self.netL(both)
        view = 0.5 * (view[:b] + view[b:] * view.new_tensor(VIEW_MIRROR))
        light = 0.5 * (light[:b] + light[b:] * light.new_tensor(LIGHT_MIRROR))
        return self.spread_views(view), light

    def canonical_depth(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Canonical depth ``(B, S, S)`` before and after the border clamp."""
        cfg = self.cfg
        raw = self.netD(image)[:, 0]
        if cfg.symmetry and cfg.hard_symmetry:
            raw = 0.5 * (raw + mirror(raw))
        free = raw_to_depth(raw, cfg.min_depth, cfg.max_depth)
        clamped = clamp_border_depth(free, cfg.min_depth, cfg.max_depth, cfg.border_factor, cfg.border_width)
        return free, clamped

    def forward(self, image: Tensor) -> Unsup3dOutput:
        """Reconstruct ``image`` ``(B, 3, S, S)`` in [-1, 1]; see :class:`Unsup3dOutput`."""
        check_shape(image, f"B,3,{self.cfg.image_size},{self.cfg.image_size}", "image")
        cfg = self.cfg
        free, depth = self.canonical_depth(image)
        albedo = self.netA(image)
        if cfg.symmetry and cfg.hard_symmetry:
            albedo = 0.5 * (albedo + mirror(albedo))
        view, light = self.view_light(image)
        conf = self.netC(image) if self.netC is not None else (None, None)
        flip = cfg.symmetry and not cfg.hard_symmetry  # a hard-symmetric canonical is its own mirror
        return self.render(image, free, depth, albedo, view, light, conf, flip)

    def render(self, image: Tensor, free: Tensor, depth: Tensor, albedo: Tensor, view: Tensor, light: Tensor,
               conf: tuple = (None, None), flip: bool = False) -> Unsup3dOutput:
        """Shade the canonical ``depth`` ``(B, S, S)`` and ``albedo`` ``(B, 3, S, S)`` with ``light`` ``(B, 4)``, warp
        them to ``view`` ``(B, 6)`` and render; with ``flip`` their mirrors too (``2B`` renders, the loss mask the
        product of both). ``image``, ``free`` and ``conf`` (``conf_l1``, ``conf_perc``) pass through to the output."""
        cfg, renderer = self.cfg, self.cfg.renderer
        reps = 2 if flip else 1
        if flip:
            depth, albedo = torch.cat([depth, mirror(depth)]), torch.cat([albedo, mirror(albedo)])
        normal = depth_to_normals(depth, renderer.intrinsics(cfg.image_size, depth))
        views = view.repeat(reps, 1)
        lit = normal
        if cfg.light_frame == "camera":
            lit = view_normals(normal, views, renderer)
        shading = light_to_shading(lit, light.repeat(reps, 1))
        canon_image = albedo_to_texture(albedo, shading)
        recon_depth = warp_canon_depth(depth, views, renderer)
        grid = view_to_canon_grid(recon_depth, views, renderer)
        recon = F.grid_sample(canon_image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        valid = view_valid_mask(recon_depth, renderer)
        b = image.shape[0]
        mask = (valid[:b] * valid[b:]).repeat(2, 1, 1, 1) if flip else valid
        mask = mask.detach()
        return Unsup3dOutput(image, free, depth, albedo, normal, shading, canon_image, view, light, recon_depth,
                             valid, mask, recon * mask, *conf)
