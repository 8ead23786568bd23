"""Joint pre-training of GAN2Shape on many images (the ``*_pretrain`` configs, ``method.md`` sections 1 and 8).

One set of networks for a list of images. Every iteration uses one image, visited in a random permutation per
process; under ``torchrun`` each process draws its own permutation (seed + rank) and the step's trained networks are
wrapped in :class:`torch.nn.parallel.DistributedDataParallel`, which averages their gradients, so every rank holds
the same weights (gloo on CPU, nccl on GPU). Per stage:

1. Step 1 (A only) on the images; then a no-grad Step-1 forward over **every** image stores its canonical depth,
   albedo, normals and light (the per-image input of Step 2);
2. Step 2 (E only) with pseudo samples of the iteration's image; then ``collect_iters`` no-grad Step-2 forwards
   (one random image each) fill the pool of projected samples, tagged with their image;
3. Step 3 (D, A, V, L) on an image and a batch of its own projected samples.

D is pre-fitted to the ellipsoid of the **first** image of the list, once. A wrapper module per step
(:class:`StepLoss`) makes the loss a ``forward`` so DDP sees it; a new wrapper is built at every step switch, with
the fresh optimiser, because the set of trained parameters changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from core.errors import BenchError

from .fitting import Optim, Schedule, StageCheckpoint, Timings, prefit_depth, run_step
from .model import STEP_NETS, Geometry, Networks, geometry_from_dict
from .pseudo import GaussianPrior
from .steps import FeatureLoss, Hyper, Perceptual, make_pseudo, pseudo_canon, step1, step2, step3

__all__ = ["JointData", "StepLoss", "pretrain", "init_from_unsup3d"]


@dataclass
class JointData:
    """The image list: ``images`` ``(N, 3, S, S)``, their latents ``w`` ``(N, D)``, ``gan_images`` ``G(w)`` at S
    ``(N, 3, S, S)`` and the ellipsoid ``prior_depth`` ``(1, S, S)`` of the first image (None: no pre-fit, D starts
    as it is). Kept on the CPU."""

    images: Tensor
    w: Tensor
    gan_images: Tensor
    prior_depth: Tensor | None

    def __len__(self) -> int:
        return self.images.shape[0]


class StepLoss(nn.Module):
    """The loss of one step as a module ``forward(**inputs) -> scalar``, so DDP can wrap it. Only ``nets`` is a
    sub-module; the frozen GAN and the loss callables are plain attributes (never broadcast or synchronised)."""

    def __init__(self, nets: Networks, step: int, geom: Geometry, hp: Hyper, G, perceptual: Perceptual | None,
                 disc_feature: FeatureLoss | None):
        super().__init__()
        self.nets, self.step = nets, step
        self.extras = (geom, hp, G, perceptual, disc_feature)

    def forward(self, **inputs) -> Tensor:
        geom, hp, G, perceptual, disc_feature = self.extras
        if self.step == 1:
            return step1(self.nets, inputs["image"], geom, hp, inputs["flip"], perceptual)[0].total
        if self.step == 2:
            return step2(self.nets, G, inputs["w"], inputs["gan_image"], inputs["pseudo"], hp, disc_feature)[0].total
        return step3(self.nets, inputs["image"], inputs["projected"], inputs["mask"], geom, hp, inputs["flip"],
                     perceptual, inputs["views"])[0].total


#: The Unsup3d networks GAN2Shape shares (same classes, same key names); Unsup3d's confidence network has no
#: counterpart and E has none in Unsup3d.
SHARED_NETS = ("netD", "netA", "netV", "netL")


def init_from_unsup3d(path: str | Path, latent_dim: int, inplace_relu_quirk: bool = True,
                      nf_enc: int = 32) -> tuple[Networks, Geometry]:
    """GAN2Shape networks whose D, A, V, L are Unsup3d's trained ones (``bench train model=unsup3d_cpu`` export),
    E freshly initialised, and the :class:`Geometry` Unsup3d rendered with: its widths, border clamp, light frame,
    hard symmetry and view-spread statistics (frozen at their running values), no prior means (Unsup3d adds none).

    This is the photo-geometric half of joint pre-training done by Unsup3d's trainer on the training split; the
    CPU pre-training recipe continues from here (``configs/model/gan2shape_pretrain_cpu.yaml``).
    """
    from methods.unsup3d.training import load_weights

    unsup3d, meta = load_weights(path)  # card and tensors checked against each other (one-line errors)
    model = meta["model"]
    if model.get("view_spread_pitch") or model.get("equivariant_views"):
        raise BenchError(f"{path}: Unsup3d weights with view_spread_pitch or equivariant_views cannot start GAN2Shape "
                         "(its V has the yaw spread only); use weights trained without them")
    nets = Networks(int(model["image_size"]), latent_dim, inplace_relu_quirk, nf_depth_albedo=model["nf_depth_albedo"],
                    nf_view_light=model["nf_view_light"], zdim=model["zdim"], gn_base=model["gn_base"], nf_enc=nf_enc)
    tensors = unsup3d.state_dict()
    nets.load_state_dict({k: v for k, v in tensors.items() if k.split(".")[0] in SHARED_NETS}, strict=False)
    spread = tensors.get("view_spread")
    geom = geometry_from_dict({
        "border_factor": model["border_factor"], "border_width": model["border_width"], "depth_pool": 1,
        "light_frame": model["light_frame"], "hard_symmetry": bool(model["symmetry"] and model["hard_symmetry"]),
        "view_spread": None if spread is None or float(spread[2]) <= 0 else spread[:3].tolist()})
    return nets, geom


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _wrap(module: StepLoss, device: torch.device) -> nn.Module:
    if _distributed()[1] == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def pretrain(nets: Networks, G, data: JointData, view_prior: GaussianPrior, geom: Geometry, hp: Hyper,
             schedule: Schedule, optim: Optim, *, device: torch.device, seed: int = 0, prefit_iters: int = 1000,
             perceptual: Perceptual | None = None, disc_feature: FeatureLoss | None = None,
             checkpoint: StageCheckpoint | None = None,
             on_iter: Callable[[int, str, float], None] | None = None) -> Timings:
    """Jointly train ``nets`` (on ``device``) over ``data``; resumes from ``checkpoint`` at the next stage.

    Stage-0 step lengths count iterations (one image each) per process, as in the original. Rank 0 writes the
    checkpoint after every stage. Returns the seconds per phase.
    """
    rank, world = _distributed()
    rng = torch.Generator()
    timings, start = Timings(), 0
    resumed = checkpoint.load(nets, timings) if checkpoint is not None else None
    if resumed is not None:
        start = resumed[0]
    elif prefit_iters > 0 and data.prior_depth is not None:
        t = time.perf_counter()
        prefit_depth(nets, data.images[:1].to(device), data.prior_depth.to(device), geom, prefit_iters, optim)
        timings.add("prefit", t)
    if world > 1:  # every rank starts from rank 0's weights
        for tensor in nets.state_dict().values():
            dist.broadcast(tensor, 0)

    order: list[int] = []

    def next_image() -> int:
        if not order:
            order.extend(torch.randperm(len(data), generator=rng).tolist())
        return order.pop()

    def run(step: int, length: int, inputs_fn: Callable[[], dict], stage: int) -> None:
        nets.train_only(STEP_NETS[step])  # before wrapping: DDP synchronises the parameters that need gradients
        model = _wrap(StepLoss(nets, step, geom, hp, G, perceptual, disc_feature), device)
        run_step(nets, step, length, lambda: model(**inputs_fn()), optim, on_iter, stage)

    for stage in range(start, schedule.num_stage):
        rng.manual_seed(seed + rank + 7919 * stage)  # per rank and stage, so a resumed stage draws the same numbers
        order.clear()
        len1, len2, len3 = schedule.lengths(stage)
        flip1, flip3 = bool(schedule.flip1[stage]), bool(schedule.flip3[stage])

        t = time.perf_counter()
        run(1, len1, lambda: {"image": data.images[next_image()][None].to(device), "flip": flip1}, stage)
        nets.train_only(())
        with torch.no_grad():  # Step-1 collect: every image's canonical model, for Step 2
            canon = [pseudo_canon(step1(nets, image, geom, hp, flip1)[1], image, geom, hp).map(Tensor.cpu)
                     for image in (data.images[i][None].to(device) for i in range(len(data)))]
        timings.add("step1", t)

        def step2_inputs() -> dict:
            i = next_image()
            pseudo = make_pseudo(canon[i].map(lambda t: t.to(device)), schedule.batch_size, view_prior, geom, hp, rng)
            return {"w": data.w[i][None].to(device), "gan_image": data.gan_images[i][None].to(device),
                    "pseudo": pseudo, "index": i}

        t = time.perf_counter()
        run(2, len2, step2_inputs, stage)
        timings.add("step2", t)

        t = time.perf_counter()
        nets.train_only(())
        pool: dict[int, list[tuple[Tensor, Tensor, Tensor]]] = {}
        with torch.no_grad():
            for _ in range(schedule.collect_iters):
                inputs = step2_inputs()
                i = inputs["index"]
                _, projected = step2(nets, G, inputs["w"], inputs["gan_image"], inputs["pseudo"], hp, None)
                pseudo = inputs["pseudo"]
                pool.setdefault(i, []).append((projected.cpu(), pseudo.masks.cpu(), pseudo.views.cpu()))
        pooled = {i: tuple(torch.cat(parts) for parts in zip(*v)) for i, v in pool.items()}
        timings.add("collect", t)

        def step3_inputs() -> dict:
            i = next_image()
            while i not in pooled:  # an image with no collected samples this stage: take another
                i = next_image()
            images, masks, views = pooled[i]
            idx = torch.randint(0, images.shape[0], (schedule.batch_size,), generator=rng)
            return {"image": data.images[i][None].to(device), "projected": images[idx].to(device),
                    "mask": masks[idx].to(device), "views": views[idx].to(device), "flip": flip3}

        t = time.perf_counter()
        run(3, len3, step3_inputs, stage)
        timings.add("step3", t)
        if checkpoint is not None and rank == 0:
            checkpoint.save(nets, stage + 1, rng, timings)
        if world > 1:
            dist.barrier()
    nets.train_only(())
    return timings
