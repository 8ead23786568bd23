"""Sliced Wasserstein distance (SWD) between image sets on Laplacian-pyramid patches, as in ProGAN's evaluation.

Recipe (Karras et al. 2018, ``metrics/sliced_wasserstein.py``):

1. Laplacian pyramid of every image with the 5x5 binomial filter ([1, 4, 6, 4, 1] outer product / 256, mirror
   padding): level 0 is the finest band-pass image, each next level is half the size, and the last level is the
   Gaussian low-pass image at ``min_size`` (16x16).
2. At every level, ``patches_per_image`` random 7x7 neighbourhoods per image become descriptors of C*7*7 values
   (the same positions for image i of both sets, which lowers the variance: identical sets give exactly 0).
3. Each descriptor set is normalised per channel by its own mean and standard deviation (over all descriptors and
   positions of that level).
4. SWD = mean over ``repeats`` x ``dirs_per_repeat`` random unit directions of the 1-d Wasserstein-1 distance of the
   projected sets (mean absolute difference of the sorted projections). Reported x1e3 per level and their mean.

All randomness (patch positions, directions) comes from an explicit seed, so results repeat exactly on CPU.
Images are (N, C, H, W) floats in any range (normalisation removes scale); H = W a power of two >= ``min_size``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["binomial_kernel", "pyr_down", "pyr_up", "laplacian_pyramid", "patch_positions", "sample_descriptors",
           "normalize_descriptors", "sliced_wasserstein", "swd", "swd_real_floor"]

SCALE = 1e3  # ProGAN reports SWD x 1e3


def binomial_kernel(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """The 5x5 binomial blur kernel (5, 5), summing to 1."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device, dtype=dtype)
    k = k[:, None] * k[None, :]
    return k / k.sum()


def _blur(x: Tensor, gain: float = 1.0) -> Tensor:
    """Depthwise 5x5 binomial blur with mirror padding: (N, C, H, W) -> (N, C, H, W)."""
    c = x.shape[1]
    k = (binomial_kernel(x.device, x.dtype) * gain).expand(c, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=c)


def pyr_down(x: Tensor) -> Tensor:
    """Blur then keep every second pixel: (N, C, H, W) -> (N, C, H/2, W/2)."""
    return _blur(x)[:, :, ::2, ::2]


def pyr_up(x: Tensor) -> Tensor:
    """Zero-insert 2x upsampling then blur with gain 4: (N, C, H, W) -> (N, C, 2H, 2W)."""
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    return _blur(up, gain=4.0)


def laplacian_pyramid(images: Tensor, min_size: int = 16) -> list[Tensor]:
    """Levels [(N, C, H, W), (N, C, H/2, W/2), ..., (N, C, min_size, min_size)], finest first.

    Every level but the last is band-pass (``g_i - up(down(g_i))``); the last is the Gaussian image itself.
    """
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must be (N, C, S, S), got {tuple(images.shape)}")
    size = images.shape[-1]
    if size < min_size or size & (size - 1) or min_size & (min_size - 1):
        raise ValueError(f"image size {size} must be a power of two >= min_size {min_size}")
    levels, g = [], images.float()
    while g.shape[-1] > min_size:
        down = pyr_down(g)
        levels.append(g - pyr_up(down))
        g = down
    levels.append(g)
    return levels


def patch_positions(n: int, size: int, patches_per_image: int, patch_size: int,
                    generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Top-left corners ``(ys, xs)``, each (n, P) int64, of random ``patch_size``² patches in a size x size image."""
    if size < patch_size:
        raise ValueError(f"level {size}x{size} is smaller than the {patch_size}x{patch_size} patch")
    ys = torch.randint(0, size - patch_size + 1, (n, patches_per_image), generator=generator)
    xs = torch.randint(0, size - patch_size + 1, (n, patches_per_image), generator=generator)
    return ys, xs


def sample_descriptors(level: Tensor, positions: tuple[Tensor, Tensor], patch_size: int) -> Tensor:
    """Patches at ``positions`` (two (N, P) tensors): level (N, C, H, W) -> descriptors (N * P, C, k, k)."""
    n, c, h, w = level.shape
    k = patch_size
    ys, xs = positions
    patches_per_image = ys.shape[1]
    offs = torch.arange(k)
    rows = (ys[..., None] + offs).to(level.device)  # (N, P, k)
    cols = (xs[..., None] + offs).to(level.device)
    batch = torch.arange(n, device=level.device)[:, None, None, None]
    # level[b, :, rows, cols] -> (N, P, k, k, C)
    patches = level.permute(0, 2, 3, 1)[batch, rows[..., :, None], cols[..., None, :]]
    return patches.reshape(n * patches_per_image, k, k, c).permute(0, 3, 1, 2)


def normalize_descriptors(desc: Tensor) -> Tensor:
    """Per-channel standardisation over descriptors and positions: (M, C, k, k) -> (M, C * k * k)."""
    mean = desc.mean(dim=(0, 2, 3), keepdim=True)
    std = desc.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    return ((desc - mean) / std).reshape(desc.shape[0], -1)


def sliced_wasserstein(a: Tensor, b: Tensor, generator: torch.Generator, repeats: int = 4,
                       dirs_per_repeat: int = 128) -> float:
    """Mean 1-d Wasserstein-1 distance of ``a`` (M, D) and ``b`` (M, D) over random unit directions (D,)."""
    if a.shape != b.shape:
        raise ValueError(f"descriptor sets must have equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    total = 0.0
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], dirs_per_repeat, generator=generator).to(a.device, a.dtype)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        pa, _ = torch.sort(dirs.T @ a.T, dim=1)  # (dirs, M): sorting along the contiguous axis is faster
        pb, _ = torch.sort(dirs.T @ b.T, dim=1)
        total += float((pa - pb).abs().mean())
    return total / repeats


def swd(real: Tensor, fake: Tensor, *, seed: int = 0, patches_per_image: int = 128, patch_size: int = 7,
        repeats: int = 4, dirs_per_repeat: int = 128, min_size: int = 16) -> dict[str, float]:
    """SWD x1e3 between ``real`` and ``fake`` (N, C, S, S), equal N: ``{"swd_<res>": ..., "swd_mean": ...}``.

    Keys name each pyramid level by its resolution (e.g. ``swd_32``, ``swd_16``). Deterministic in ``seed``.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}")
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, float] = {}
    with torch.no_grad():
        for lr, lf in zip(laplacian_pyramid(real, min_size), laplacian_pyramid(fake, min_size)):
            pos = patch_positions(lr.shape[0], lr.shape[-1], patches_per_image, patch_size, gen)
            da = normalize_descriptors(sample_descriptors(lr, pos, patch_size))
            db = normalize_descriptors(sample_descriptors(lf, pos, patch_size))
            out[f"swd_{lr.shape[-1]}"] = SCALE * sliced_wasserstein(da, db, gen, repeats, dirs_per_repeat)
    out["swd_mean"] = sum(out.values()) / len(out)
    return out


def swd_real_floor(real: Tensor, **kwargs) -> dict[str, float]:
    """SWD between the two disjoint halves of ``real`` (2N, C, S, S): the value a perfect generator would reach
    with N images (the sampling floor). Keyword arguments go to :func:`swd`."""
    n = real.shape[0] // 2
    if n < 1:
        raise ValueError("need at least two real images for the real-vs-real floor")
    return swd(real[:n], real[n:2 * n], **kwargs)
