"""GAN inversion: project images into a StyleGAN2's W space (``anchors.md`` section F).

The recipe of the published projectors (NVlabs ``stylegan2-ada-pytorch/projector.py``, rosinality
``projector.py``): start at the mean W of ``w_avg_samples`` mapped z, optimise one W per image (broadcast to all
layers) and, optionally, the per-layer noise maps with Adam; the learning rate ramps up over the first 5 % of the
steps and down with a cosine over the last 25 % (:func:`lr_schedule`); Gaussian noise of ``noise_strength`` times
the W spread is added to W and ramped quadratically to 0 by ``noise_ramp`` of the steps (:func:`w_noise_scale`);
the noise maps are kept Gaussian-looking by a multi-scale autocorrelation penalty (:func:`noise_regularization`,
weight ``noise_reg``) and renormalised to zero mean, unit variance after every step (:func:`normalize_noise`).

Differences, so that nothing has to be downloaded: the loss is pixel L1 (or MSE) plus the StyleGAN2
discriminator-feature loss of GAN2Shape (if a discriminator is given) plus an optional user-supplied perceptual
callable (e.g. LPIPS). The noise maps start from the generator's stored noise (the maps GAN2Shape renders with), so
with ``optimise_noise=False`` the returned W alone reproduces the returned images under ``randomize_noise=False``.

Images are batched: every image has its own W and noise maps and its own loss terms (summed over the batch, never
averaged across images), so the images do not influence each other's optimisation. All randomness comes from a
CPU ``torch.Generator`` seeded with ``seed``, so runs repeat on CPU and draw the same numbers on any device.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .losses import masked_feature_l1
from .model import Discriminator, Generator

__all__ = ["ProjectionResult", "lr_schedule", "w_noise_scale", "noise_regularization", "normalize_noise",
           "w_statistics", "project"]


@dataclass(frozen=True)
class ProjectionResult:
    """The result of :func:`project` for B images.

    ``w`` (B, style_dim): one W per image (use with ``input_is_w=True``; broadcast to all layers). ``noises``: one
    (B, 1, r, r) map per generator layer. ``images`` (B, 3, H, W): the final reconstructions, in [-1, 1] like the
    targets. ``l1`` / ``mse`` (B,): per-image mean absolute / squared pixel error against the target; ``loss`` (B,):
    the per-image objective (without the noise regulariser). All tensors are detached.
    """

    w: Tensor
    noises: tuple[Tensor, ...]
    images: Tensor
    l1: Tensor
    mse: Tensor
    loss: Tensor


# -------------------------------------------------------------------------------------------- pure helpers
def lr_schedule(t: float, lr: float = 0.1, rampup: float = 0.05, rampdown: float = 0.25) -> float:
    """Learning rate at progress ``t`` in [0, 1]: linear rampup over ``rampup``, cosine down over the last ``rampdown``.

    >>> [round(lr_schedule(t), 4) for t in (0.0, 0.025, 0.05, 0.5, 0.875, 1.0)]
    [0.0, 0.05, 0.1, 0.1, 0.05, 0.0]
    """
    ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp *= min(1.0, t / rampup) if rampup > 0 else 1.0
    return lr * ramp


def w_noise_scale(t: float, w_std: float, strength: float = 0.05, ramp: float = 0.75) -> float:
    """Std of the noise added to W at progress ``t``: ``w_std * strength * max(0, 1 - t / ramp)²``.

    >>> [round(w_noise_scale(t, 2.0), 4) for t in (0.0, 0.375, 0.75, 1.0)]
    [0.1, 0.025, 0.0, 0.0]
    """
    if ramp <= 0:
        return 0.0
    return w_std * strength * max(0.0, 1.0 - t / ramp) ** 2


def noise_regularization(noises: Sequence[Tensor]) -> Tensor:
    """Per-image multi-scale autocorrelation penalty of noise maps, each (B, 1, H, W) -> (B,).

    For every map and every scale (the map, then 2x average-pooled while larger than 8x8), the squared mean of the
    map times itself shifted by one pixel (circularly) along x and along y, summed. It is 0 in expectation for
    white noise and large for smooth maps, which would otherwise absorb image content.

    >>> noise_regularization([torch.ones(1, 1, 16, 16)])  # 2 shifts x 2 scales, each (mean 1)² = 1
    tensor([4.])
    >>> noise_regularization([torch.ones(2, 1, 4, 4), torch.ones(2, 1, 8, 8)])
    tensor([4., 4.])
    """
    total = noises[0].new_zeros(noises[0].shape[0])
    for noise in noises:
        while True:
            total = total + (noise * noise.roll(1, dims=3)).mean(dim=(1, 2, 3)) ** 2
            total = total + (noise * noise.roll(1, dims=2)).mean(dim=(1, 2, 3)) ** 2
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return total


@torch.no_grad()
def normalize_noise(noises: Sequence[Tensor]) -> None:
    """In place: each map (B, 1, H, W) to zero mean and unit (population) std per image.

    >>> n = [torch.arange(8.0).reshape(2, 1, 2, 2)]
    >>> normalize_noise(n); n[0].mean(dim=(1, 2, 3)).abs().max() < 1e-6, n[0].std(dim=(1, 2, 3), unbiased=False)
    (tensor(True), tensor([1.0000, 1.0000]))
    """
    for noise in noises:
        mean = noise.mean(dim=(1, 2, 3), keepdim=True)
        std = noise.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
        noise.sub_(mean).div_(std + 1e-8)


@torch.no_grad()
def w_statistics(G: Generator, n: int = 10000, generator: torch.Generator | None = None,
                 chunk: int = 2048) -> tuple[Tensor, float]:
    """Mean W (1, D) of ``n`` mapped standard-normal z and the spread ``sqrt(sum |w - w_avg|² / n)``.

    z is drawn on the CPU from ``generator`` (so the same seed gives the same samples on every device).
    """
    device = G.input.input.device
    z = torch.randn(n, G.style_dim, generator=generator)
    w = torch.cat([G.get_latent(c.to(device)) for c in z.split(chunk)])
    w_avg = w.mean(0, keepdim=True)
    w_std = float(((w - w_avg).pow(2).sum() / n).sqrt())
    return w_avg, w_std


# ------------------------------------------------------------------------------------------------ projector
@contextlib.contextmanager
def _frozen(*modules: nn.Module | None) -> Iterator[None]:
    """Turn off ``requires_grad`` of the modules' parameters for the duration, then restore it."""
    params = [p for m in modules if m is not None for p in m.parameters()]
    saved = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, saved):
            p.requires_grad_(flag)


def _for_discriminator(x: Tensor, D: Discriminator) -> Tensor:
    """Resize (B, 3, H, W) to D's resolution (area for downsampling, bilinear for upsampling)."""
    if x.shape[-1] == D.size and x.shape[-2] == D.size:
        return x
    if x.shape[-1] > D.size:
        return F.interpolate(x, size=(D.size, D.size), mode="area")
    return F.interpolate(x, size=(D.size, D.size), mode="bilinear", align_corners=False)


def project(G: Generator, images: Tensor, *, D: Discriminator | None = None, steps: int = 1000, lr: float = 0.1,
            noise_strength: float = 0.05, noise_ramp: float = 0.75, noise_reg: float = 1e5,
            w_avg_samples: int = 10000, optimise_noise: bool = True, feature_weight: float = 1.0,
            pixel_weight: float = 1.0, pixel_loss: str = "l1", ftr_num: int = 4,
            perceptual: Callable[[Tensor, Tensor], Tensor] | None = None, perceptual_weight: float = 1.0,
            lr_rampup: float = 0.05, lr_rampdown: float = 0.25, seed: int = 0,
            on_step: Callable[[int, dict[str, float]], None] | None = None) -> ProjectionResult:
    """Project ``images`` (B, 3, size, size) in [-1, 1] into W of ``G``; see the module docstring for the recipe.

    Per-image objective: ``pixel_weight * L1 (or MSE, pixel_loss="mse")`` + ``feature_weight *`` the L1 distance
    of D's first ``min(ftr_num, available)`` ResBlock features (images resized to ``D.size``; skipped without
    ``D``) + ``perceptual_weight * perceptual(fake, target)`` (a callable returning (B,) or a scalar mean, e.g.
    LPIPS; none by default). ``noise_reg`` weighs :func:`noise_regularization` (only with ``optimise_noise``).
    ``on_step(step, {"loss", "lr", "w_noise"})`` is called after every step. G and D stay frozen and unchanged.
    """
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2:] != (G.size, G.size):
        raise ValueError(f"images must be (B, 3, {G.size}, {G.size}), got {tuple(images.shape)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if pixel_loss not in ("l1", "mse"):
        raise ValueError(f"pixel_loss must be 'l1' or 'mse', got {pixel_loss!r}")
    device = G.input.input.device
    target = images.detach().to(device=device, dtype=torch.float32)
    b = target.shape[0]
    rng = torch.Generator().manual_seed(seed)

    with _frozen(G, D):
        w_avg, w_std = w_statistics(G, w_avg_samples, rng)
        w = w_avg.repeat(b, 1).clone().requires_grad_(True)
        noises = [n.detach().to(device).repeat(b, 1, 1, 1).clone() for n in G.stored_noise()]
        params = [w]
        if optimise_noise:
            normalize_noise(noises)
            for n in noises:
                n.requires_grad_(True)
            params += noises
        optimizer = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))

        real_features = None
        if D is not None and feature_weight:
            k = min(ftr_num, len(D.convs) - 1)
            with torch.no_grad():
                real_features = D(_for_discriminator(target, D), ftr_num=k)

        def objective(fake: Tensor) -> Tensor:
            diff = fake - target
            per_image = pixel_weight * (diff.abs() if pixel_loss == "l1" else diff.pow(2)).mean(dim=(1, 2, 3))
            if real_features is not None:
                fake_features = D(_for_discriminator(fake, D), ftr_num=len(real_features))
                feat = torch.stack([masked_feature_l1([f[i:i + 1] for f in fake_features],
                                                      [r[i:i + 1] for r in real_features]) for i in range(b)])
                per_image = per_image + feature_weight * feat
            if perceptual is not None and perceptual_weight:
                p = perceptual(fake, target)
                per_image = per_image + perceptual_weight * (p.reshape(-1) if p.dim() else p.expand(b))
            return per_image

        for step in range(steps):
            t = step / steps
            step_lr = lr_schedule(t, lr, lr_rampup, lr_rampdown)
            for group in optimizer.param_groups:
                group["lr"] = step_lr
            scale = w_noise_scale(t, w_std, noise_strength, noise_ramp)
            w_in = w + torch.randn(w.shape, generator=rng).to(device) * scale if scale > 0 else w
            fake, _ = G(w_in, input_is_w=True, noise=noises)
            loss = objective(fake).sum()
            if optimise_noise and noise_reg:
                loss = loss + noise_reg * noise_regularization(noises).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if optimise_noise:
                normalize_noise(noises)
            if on_step is not None:
                on_step(step, {"loss": float(loss.detach()) / b, "lr": step_lr, "w_noise": scale})

        with torch.no_grad():
            noises = [n.detach() for n in noises]
            fake, _ = G(w.detach(), input_is_w=True, noise=noises)
            per_image = objective(fake)
            diff = fake - target
            return ProjectionResult(w=w.detach(), noises=tuple(noises), images=fake.detach(),
                                    l1=diff.abs().mean(dim=(1, 2, 3)), mse=diff.pow(2).mean(dim=(1, 2, 3)),
                                    loss=per_image.detach())
