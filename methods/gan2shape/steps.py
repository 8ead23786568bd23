"""The three GAN2Shape steps as loss computations (``method.md`` sections 1, 4, 5 and 6).

* :func:`step1` fits the input image (the caller optimises only A);
* :func:`make_pseudo` renders pseudo samples of the current canonical model under random views and lights;
  :func:`step2` projects them onto the GAN's image manifold through E and the partial mapping (optimise only E);
* :func:`step3` refits D, A, V, L to the input image and a batch of projected samples.

Nothing here owns state or optimisers; :mod:`.fitting` runs the schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from .latent import project_latent
from .losses import Step1Loss, Step2Loss, photometric_l1, step1_loss, step2_loss
from .model import Geometry, Networks, PhotoForward, image_albedo, lit_normals, photo_forward
from .pseudo import GaussianPrior, PseudoSamples, render_pseudo_samples, sample_lights, sample_views

__all__ = ["STEP3_VIEWS", "PSEUDO_ALBEDO", "Hyper", "pseudo_canon", "Step3Loss", "resize", "gan_images", "step1",
           "make_pseudo", "project", "refine_projection", "step2", "step3"]

Perceptual = Callable[[Tensor, Tensor], Tensor]
FeatureLoss = Callable[[Tensor, Tensor, Tensor], Tensor]


#: What pseudo samples are textured with: A's albedo (the paper) or the image itself, unshaded
#: (:func:`.model.image_albedo`: Step 1's fit in closed form).
PSEUDO_ALBEDO = ("network", "image")
#: Where Step 3 takes each projected sample's view from: V's prediction (the paper) or its pseudo sample's view.
STEP3_VIEWS = ("predicted", "pseudo")


@dataclass(frozen=True)
class Hyper:
    """Loss weights and Step-2 settings (defaults: the synface config of ``method.md`` section 8)."""

    lam_perc: float = 0.5
    lam_smooth: float = 0.01
    lam_regular: float = 0.01
    F1_d: int = 8
    relative_enc: bool = True
    view_scale: float = 1.2
    rand_light: tuple[float, ...] = (-0.9, 0.9, -0.3, 0.8, -0.1, 0.7, -0.4)
    step3_views: str = "predicted"
    pseudo_albedo: str = "network"

    def __post_init__(self):
        if self.pseudo_albedo not in PSEUDO_ALBEDO:
            raise ValueError(f"pseudo_albedo must be 'network' (A's output, the original) or 'image' (the image pulled "
                             f"back to the canonical frame and unshaded), got {self.pseudo_albedo!r}")
        if self.step3_views not in STEP3_VIEWS:
            raise ValueError(f"step3_views must be 'predicted' (V of each projected sample, the original) or "
                             f"'pseudo' (the view its pseudo sample was rendered under), got {self.step3_views!r}")


@dataclass(frozen=True)
class Step3Loss:
    """Step-3 terms: ``total = image.total + projected``; ``projected`` = L1 + lam_perc * perceptual of the
    re-rendered projected samples (plain and mirrored when flipping)."""

    total: Tensor
    image: Step1Loss
    projected: Tensor


def resize(images: Tensor, size: int) -> Tensor:
    """Square resize as in the original: bilinear when enlarging, area when shrinking, identity otherwise."""
    if images.shape[-1] == size:
        return images
    if images.shape[-1] < size:
        return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return F.interpolate(images, size=(size, size), mode="area")


def gan_images(G, w: Tensor, size: int) -> Tensor:
    """``G(w)`` (single W broadcast to every layer, the generator's stored noise), clamped to [-1, 1] and resized to
    ``size``: ``(B, D) -> (B, 3, size, size)``."""
    image, _ = G(w, input_is_w=True, randomize_noise=False)
    return resize(image.clamp(-1, 1), size)


def step1(nets: Networks, image: Tensor, geom: Geometry, hp: Hyper, flip: bool = False,
          perceptual: Perceptual | None = None) -> tuple[Step1Loss, PhotoForward]:
    """Step-1 loss of ``image`` ``(B, 3, S, S)`` and the forward it came from.

    ``L1(Î, I; m) + lam_perc P(Î m, I m) + lam_smooth [smooth(d) + smooth(max(0, n . l))]``, plus the mirrored
    reconstruction's L1 and perceptual terms when ``flip`` (``m`` the product of both validity masks).
    """
    fwd = photo_forward(nets, image, geom, flip=flip)
    r, rf = fwd.render, fwd.render_flip
    loss = step1_loss(r.image, image, r.valid, fwd.depth, r.diffuse, perceptual, hp.lam_perc, hp.lam_smooth,
                      recon_flip=None if rf is None else rf.image, mask_flip=None if rf is None else rf.valid,
                      shading_flip=None if rf is None else rf.diffuse)
    return loss, fwd


def pseudo_canon(fwd: PhotoForward, image: Tensor, geom: Geometry, hp: Hyper) -> PhotoForward:
    """The canonical model pseudo samples relight: ``fwd`` (detached), its albedo replaced by the image's
    (:func:`.model.image_albedo`) when ``hp.pseudo_albedo == "image"``."""
    fwd = fwd.detach()
    if hp.pseudo_albedo == "image":
        fwd = replace(fwd, albedo=image_albedo(fwd, image, geom))
    return fwd


def make_pseudo(canon: PhotoForward, n: int, view_prior: GaussianPrior, geom: Geometry, hp: Hyper,
                rng: torch.Generator, canon_mask: Tensor | None = None) -> PseudoSamples:
    """``n`` pseudo samples of one image's canonical model (``canon``, batch 1, detached): random lights
    (uniform ``rand_light``, relative to the image's ``k_a``, ``k_d``) and views ``N(mean, cov)`` with the yaw
    scaled by ``view_scale``. Random numbers come from the CPU generator ``rng``, so runs repeat on any device."""
    device = canon.depth.device
    lights = sample_lights(n, hp.rand_light, k_a=float(canon.k_ambient[0]), k_d=float(canon.k_diffuse[0]),
                           generator=rng)
    lights = replace(lights, k_ambient=lights.k_ambient.to(device), k_diffuse=lights.k_diffuse.to(device),
                     direction=lights.direction.to(device), delta=lights.delta.to(device))
    views = sample_views(n, view_prior.mean, view_prior.cov, hp.view_scale, rng).to(device)
    return render_pseudo_samples(canon.albedo, canon.depth, views, lights, geom.renderer,
                                 normals=lit_normals(canon.render.normal, views, geom), canon_mask=canon_mask)


def project(nets: Networks, G, w: Tensor, images: Tensor, gan_image: Tensor | None, hp: Hyper) -> tuple[Tensor, Tensor]:
    """Project ``images`` ``(B, 3, S, S)`` onto the GAN: ``G(w + Δw(E(images) - E(gan_image)))`` at S.

    ``gan_image`` ``(1, 3, S, S)`` is the image's own ``G(w)`` (``relative_enc``; None disables it).
    Returns ``(projected (B, 3, S, S), delta_w (B, D))``.
    """
    e = nets.netEnc(images)
    e_ref = nets.netEnc(gan_image) if (hp.relative_enc and gan_image is not None) else None
    w_new, delta_w = project_latent(G, w, e, e_ref, hp.F1_d)
    return gan_images(G, w_new, images.shape[-1]), delta_w


def step2(nets: Networks, G, w: Tensor, gan_image: Tensor, pseudo: PseudoSamples, hp: Hyper,
          disc_feature: FeatureLoss | None) -> tuple[Step2Loss, Tensor]:
    """Step-2 loss ``L1(proj, P; m) + DisFeat(proj, P; m) + lam_regular mean(Δw²)`` and the projections."""
    projected, delta_w = project(nets, G, w, pseudo.images, gan_image, hp)
    return step2_loss(projected, pseudo.images, pseudo.masks, delta_w, disc_feature, hp.lam_regular), projected


def refine_projection(G, w: Tensor, delta_w: Tensor, targets: Tensor, masks: Tensor, hp: Hyper, steps: int,
                      lr: float = 0.01, disc_feature: FeatureLoss | None = None,
                      on_step: Callable[[int, Tensor], None] | None = None) -> Tensor:
    """Projections refined by optimisation: from E's offsets ``delta_w`` ``(B, D)``, ``steps`` Adam steps on the
    offsets alone minimise Step 2's loss (:func:`.losses.step2_loss`) to ``targets`` ``(B, 3, S, S)`` under
    ``masks`` ``(B, 1, S, S)``; E and the GAN are untouched. ``w`` ``(1, D)`` or ``(B, D)``. ``on_step(k, Δw)``
    is called after step k = 1 ... steps (e.g. to trace the projections).
    Returns ``G(w + Δw)`` ``(B, 3, S, S)``."""
    delta = delta_w.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=lr)
    size = targets.shape[-1]
    with torch.enable_grad():
        for k in range(steps):
            loss = step2_loss(gan_images(G, w + delta, size), targets, masks, delta, disc_feature, hp.lam_regular)
            (delta.grad,) = torch.autograd.grad(loss.total, [delta])
            opt.step()
            if on_step is not None:
                on_step(k + 1, delta.detach())
    with torch.no_grad():
        return gan_images(G, w + delta, size)


def step3(nets: Networks, image: Tensor, projected: Tensor, projected_mask: Tensor, geom: Geometry, hp: Hyper,
          flip: bool = False, perceptual: Perceptual | None = None,
          views: Tensor | None = None) -> tuple[Step3Loss, PhotoForward]:
    """Step-3 loss: the Step-1 loss of ``image`` ``(1, 3, S, S)`` plus the reconstruction of ``B`` projected
    samples ``(B, 3, S, S)`` re-rendered from the image's canonical depth and albedo under their own predicted
    views (or, with ``hp.step3_views == "pseudo"``, the ``views`` ``(B, 6)`` their pseudo samples were rendered
    under) and predicted lights, masked by render validity x the collected masks ``(B, 1, S, S)``."""
    image_loss, fwd = step1(nets, image, geom, hp, flip=flip, perceptual=perceptual)
    if hp.step3_views == "pseudo" and views is None:
        raise ValueError("step3_views='pseudo' needs the pseudo samples' views")
    sample = photo_forward(nets, projected, geom, flip=flip, depth_albedo=(fwd.depth, fwd.albedo),
                           view=views if hp.step3_views == "pseudo" else None)
    mask = sample.render.valid * projected_mask
    if sample.render_flip is not None:
        mask = mask * sample.render_flip.valid
    mask = mask.detach()
    total = projected.new_zeros(())
    for r in (sample.render, sample.render_flip):
        if r is None:
            continue
        total = total + photometric_l1(r.image, projected, mask)
        if perceptual is not None:
            total = total + hp.lam_perc * perceptual(r.image * mask, projected * mask)
    return Step3Loss(image_loss.total + total, image_loss, total), fwd
