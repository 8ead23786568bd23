"""HoloGAN (Nguyen-Phuoc et al., ICCV 2019) at 32x32: a generator that renders a rotatable 3D feature volume.

Generator (sizes for the defaults, those of ``configs/model/hologan.yaml``: 151k parameters; ``z`` (64) -> AdaIN
parameters of every styled layer through one linear map each, no mapping network)::

    learned constant      (C0, 4, 4, 4)       C0 = 64
    up x2 + conv3d + AdaIN + LReLU  ->  (32, 8, 8, 8)
    up x2 + conv3d + AdaIN + LReLU  ->  (16, 16, 16, 16)
    rigid-body rotation (azimuth about the vertical axis, elevation about the horizontal one), trilinear
    conv3d + LReLU, conv3d + LReLU  ->  (8, 16, 16, 16)
    projection unit: depth into channels (8 * 16 = 128), 1x1 conv + LReLU  ->  (64, 16, 16)
    up x2 + conv2d + AdaIN + LReLU  ->  (48, 32, 32)
    conv2d + AdaIN + LReLU          ->  (32, 32, 32)
    conv2d + tanh                   ->  (3, 32, 32) in [-1, 1]

Discriminator (299k parameters): three stride-2 convs (32 -> 16 -> 8 -> 4 px, 32/64/128 channels); the last two are instance-normalised and, as the
published style discriminator, each feeds the mean and standard deviation of its pre-normalisation features to a
linear "style" logit; the final features give the image logit and, for HoloGAN's identity loss, a reconstruction
of ``z``.

Volume axes are ``(B, C, D, H, W)`` with D the depth (z, away from the camera), H the image rows (y, down) and W the
image columns (x, right), synface_proc's camera frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["rotation_matrix", "rotate_volume", "AdaIN", "Generator", "Discriminator", "count_parameters",
           "init_seed_latent"]


def rotation_matrix(azimuth_deg: Tensor, elevation_deg: Tensor) -> Tensor:
    """``R = Ry(azimuth) Rx(elevation)`` (B, 3, 3) for angles (B,) in degrees, x right, y down, z forward.

    The same matrices as synface_proc's view (``Rz(roll) Ry(yaw) Rx(pitch)`` with roll 0).

    >>> (rotation_matrix(torch.tensor([90.0]), torch.tensor([0.0])).round() + 0.0).squeeze(0).tolist()
    [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]
    """
    a, e = torch.deg2rad(azimuth_deg), torch.deg2rad(elevation_deg)
    ca, sa, ce, se = a.cos(), a.sin(), e.cos(), e.sin()
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    ry = torch.stack([ca, zero, sa, zero, one, zero, -sa, zero, ca], -1).reshape(-1, 3, 3)
    rx = torch.stack([one, zero, zero, zero, ce, -se, zero, se, ce], -1).reshape(-1, 3, 3)
    return ry @ rx


def rotate_volume(volume: Tensor, azimuth_deg: Tensor, elevation_deg: Tensor) -> Tensor:
    """Turn the content of cubic volumes (B, C, N, N, N) about their centre; angles (B,) degrees -> (B, C, N, N, N).

    A feature at camera-frame position ``p`` moves to ``R p`` with ``R`` from :func:`rotation_matrix`, so the output
    at ``q`` samples the input at ``R^T q`` (trilinear, zeros outside). ``align_corners=False``: normalised voxel
    centres ``(2 i + 1) / N - 1`` are symmetric about 0, so 0 degrees is the identity and multiples of 90 degrees
    about one axis permute voxels exactly.

    >>> v = torch.arange(8.0).reshape(1, 1, 2, 2, 2)
    >>> torch.equal(rotate_volume(v, torch.zeros(1), torch.zeros(1)), v)
    True
    """
    if volume.dim() != 5 or not (volume.shape[2] == volume.shape[3] == volume.shape[4]):
        raise ValueError(f"volume must be (B, C, N, N, N), got {tuple(volume.shape)}")
    b = volume.shape[0]
    rot = rotation_matrix(azimuth_deg.reshape(-1).double(), elevation_deg.reshape(-1).double())
    if rot.shape[0] != b:
        raise ValueError(f"need {b} azimuths and elevations, got {azimuth_deg.numel()} and {elevation_deg.numel()}")
    # Grid coordinates are (x, y, z) = (W, H, D) order, as R's rows and columns.
    theta = torch.cat([rot.transpose(1, 2), rot.new_zeros(b, 3, 1)], 2).to(volume.dtype).to(volume.device)
    grid = F.affine_grid(theta, list(volume.shape), align_corners=False)
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class AdaIN(nn.Module):
    """Instance norm of (B, C, *spatial) followed by a per-sample scale and bias from ``z`` (B, Z)."""

    def __init__(self, channels: int, z_dim: int):
        super().__init__()
        self.affine = nn.Linear(z_dim, 2 * channels)  # default init: scale 1 +- ~0.6 for z ~ N(0, I) from the start
        with torch.no_grad():
            self.affine.bias.copy_(torch.cat([torch.ones(channels), torch.zeros(channels)]))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        dims = tuple(range(2, x.dim()))
        mean, std = x.mean(dims, keepdim=True), (x.var(dims, keepdim=True, unbiased=False) + 1e-5).sqrt()
        scale, bias = self.affine(z).reshape(x.shape[0], 2, x.shape[1], *([1] * len(dims))).unbind(1)
        return (x - mean) / std * scale + bias


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2)


class Generator(nn.Module):
    """HoloGAN generator: ``forward(z (B, Z), azimuth (B,), elevation (B,)) -> (B, 3, 32, 32)`` in [-1, 1]."""

    def __init__(self, z_dim: int = 64, c0: int = 64, c3d: tuple[int, int] = (32, 16), c_rot: int = 8,
                 c_proj: int = 64, c2d: tuple[int, int] = (48, 32)):
        super().__init__()
        self.z_dim, self.size, self.depth = z_dim, 32, 16
        self._config = {"z_dim": z_dim, "c0": c0, "c3d": list(c3d), "c_rot": c_rot, "c_proj": c_proj,
                        "c2d": list(c2d)}
        self.const = nn.Parameter(torch.randn(1, c0, 4, 4, 4) * 0.5)
        self.conv3d_1, self.ada3d_1 = nn.Conv3d(c0, c3d[0], 3, padding=1), AdaIN(c3d[0], z_dim)
        self.conv3d_2, self.ada3d_2 = nn.Conv3d(c3d[0], c3d[1], 3, padding=1), AdaIN(c3d[1], z_dim)
        self.conv3d_3 = nn.Conv3d(c3d[1], c3d[1], 3, padding=1)
        self.conv3d_4 = nn.Conv3d(c3d[1], c_rot, 3, padding=1)
        self.project = nn.Conv2d(c_rot * self.depth, c_proj, 1)
        self.conv2d_1, self.ada2d_1 = nn.Conv2d(c_proj, c2d[0], 3, padding=1), AdaIN(c2d[0], z_dim)
        self.conv2d_2, self.ada2d_2 = nn.Conv2d(c2d[0], c2d[1], 3, padding=1), AdaIN(c2d[1], z_dim)
        self.to_rgb = nn.Conv2d(c2d[1], 3, 3, padding=1)

    def config(self) -> dict:
        """Constructor arguments (JSON-friendly)."""
        return dict(self._config)

    def volume(self, z: Tensor) -> Tensor:
        """The canonical feature volume (B, c3d[1], 16, 16, 16) of ``z`` (B, Z), before rotation."""
        x = self.const.expand(z.shape[0], -1, -1, -1, -1)
        x = _lrelu(self.ada3d_1(self.conv3d_1(F.interpolate(x, scale_factor=2, mode="trilinear")), z))
        return _lrelu(self.ada3d_2(self.conv3d_2(F.interpolate(x, scale_factor=2, mode="trilinear")), z))

    def render(self, volume: Tensor, z: Tensor) -> Tensor:
        """A rotated volume (B, c3d[1], 16, 16, 16) and ``z`` -> images (B, 3, 32, 32)."""
        x = _lrelu(self.conv3d_4(_lrelu(self.conv3d_3(volume))))
        x = _lrelu(self.project(x.flatten(1, 2)))  # projection unit: (B, C * D, H, W)
        x = _lrelu(self.ada2d_1(self.conv2d_1(F.interpolate(x, scale_factor=2, mode="nearest")), z))
        x = _lrelu(self.ada2d_2(self.conv2d_2(x), z))
        return torch.tanh(self.to_rgb(x))

    def forward(self, z: Tensor, azimuth_deg: Tensor, elevation_deg: Tensor | None = None) -> Tensor:
        if elevation_deg is None:
            elevation_deg = torch.zeros_like(azimuth_deg)
        return self.render(rotate_volume(self.volume(z), azimuth_deg, elevation_deg), z)


class Discriminator(nn.Module):
    """``forward(x (B, 3, 32, 32)) -> (logit (B, 1), style logits [(B, 1), (B, 1)], z_hat (B, Z))``."""

    def __init__(self, z_dim: int = 64, channels: tuple[int, int, int] = (32, 64, 128)):
        super().__init__()
        self._config = {"z_dim": z_dim, "channels": list(channels)}
        c1, c2, c3 = channels
        self.conv1 = nn.Conv2d(3, c1, 4, 2, 1)
        self.conv2 = nn.Conv2d(c1, c2, 4, 2, 1)
        self.conv3 = nn.Conv2d(c2, c3, 4, 2, 1)
        self.style2, self.style3 = nn.Linear(2 * c2, 1), nn.Linear(2 * c3, 1)
        self.logit = nn.Linear(c3 * 16, 1)
        self.z_head = nn.Linear(c3 * 16, z_dim)

    def config(self) -> dict:
        """Constructor arguments (JSON-friendly)."""
        return dict(self._config)

    @staticmethod
    def _styled(x: Tensor, head: nn.Linear) -> tuple[Tensor, Tensor]:
        """Instance-normalise (B, C, H, W) and score its per-channel mean and std with ``head``."""
        mean, std = x.mean((2, 3)), (x.var((2, 3), unbiased=False) + 1e-5).sqrt()
        normed = (x - mean[..., None, None]) / std[..., None, None]
        return normed, head(torch.cat([mean, std], 1))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
        x = _lrelu(self.conv1(x))
        x, s2 = self._styled(self.conv2(x), self.style2)
        x, s3 = self._styled(self.conv3(_lrelu(x)), self.style3)
        h = _lrelu(x).flatten(1)
        return self.logit(h), [s2, s3], self.z_head(h)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def init_seed_latent(seed: int, z_dim: int) -> Tensor:
    """The latent (1, Z) of source ``seed``: ``randn`` from ``torch.Generator().manual_seed(seed)``."""
    return torch.randn(1, z_dim, generator=torch.Generator().manual_seed(int(seed)))

