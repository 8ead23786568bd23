"""The per-image GAN2Shape schedule (``method.md`` sections 1 and 8): stages of Step 1 -> Step 2 -> collect -> Step 3.

* A step runs for its configured length with a **fresh Adam optimiser** (moments reset at every step switch) over
  exactly the networks it trains (:data:`.model.STEP_NETS`); the others are frozen.
* After Step 2 of every stage, ``collect_iters`` no-grad Step-2 forwards produce ``collect_iters x batch_size``
  projected samples and masks, kept on the CPU; Step 3 draws its batches from them.
* Since optimisers never outlive a step, the state after a finished stage is just the network weights and the random
  generator: :class:`StageCheckpoint` writes it atomically so a killed run resumes at the next stage.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from .model import STEP_NETS, Geometry, Networks, PhotoForward, canonical
from .pseudo import GaussianPrior
from .steps import FeatureLoss, Hyper, Perceptual, make_pseudo, pseudo_canon, step1, step2, step3

__all__ = ["Schedule", "Optim", "ImageTask", "StageCheckpoint", "prefit_depth", "run_step", "fit_image",
           "fit_concurrently"]


@dataclass(frozen=True)
class Schedule:
    """Stage/step lengths and flip flags (``method.md`` section 8; defaults: the synface instance config).

    ``stage_len`` is ``(Step 1, Step 2, Step 3)`` of stage 0, ``stage_len_later`` of later stages; ``flip1`` and
    ``flip3`` give one flag per stage (the Step-1 / Step-3 symmetry terms).
    """

    num_stage: int = 1
    stage_len: tuple[int, int, int] = (500, 500, 200)
    stage_len_later: tuple[int, int, int] = (200, 500, 300)
    batch_size: int = 16
    collect_iters: int = 100
    flip1: tuple[bool, ...] = (False,)
    flip3: tuple[bool, ...] = (True,)

    def __post_init__(self):
        problems = []
        if self.num_stage < 1:
            problems.append(f"num_stage must be >= 1, got {self.num_stage}")
        for name in ("stage_len", "stage_len_later"):
            lens = getattr(self, name)
            if len(lens) != 3 or any(int(n) < 0 for n in lens):
                problems.append(f"{name} must be three non-negative step lengths, got {list(lens)}")
        for name in ("flip1", "flip3"):
            if len(getattr(self, name)) < self.num_stage:
                problems.append(f"{name} needs one flag per stage ({self.num_stage}), got {list(getattr(self, name))}")
        if self.batch_size < 1 or self.collect_iters < 1:
            problems.append(f"batch_size and collect_iters must be >= 1, got {self.batch_size}, {self.collect_iters}")
        if problems:
            raise ValueError("invalid GAN2Shape schedule: " + "; ".join(problems))

    def lengths(self, stage: int) -> tuple[int, int, int]:
        """``(Step 1, Step 2, Step 3)`` iterations of ``stage``."""
        return tuple(int(n) for n in (self.stage_len if stage == 0 else self.stage_len_later))

    def iterations(self) -> int:
        """Optimisation iterations of the whole schedule (without collect passes)."""
        return sum(sum(self.lengths(s)) for s in range(self.num_stage))


@dataclass(frozen=True)
class Optim:
    """Adam settings: lr 1e-4, betas (0.9, 0.999), L2 weight decay 5e-4 inside Adam (not AdamW)."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 5e-4

    def make(self, params) -> torch.optim.Adam:
        return torch.optim.Adam(params, lr=self.lr, betas=tuple(self.betas), weight_decay=self.weight_decay)


@dataclass
class ImageTask:
    """One image to reconstruct: ``image`` ``(1, 3, S, S)``, its W latent ``w`` ``(1, D)``, ``gan_image`` the
    generator's ``G(w)`` at S ``(1, 3, S, S)``, and ``canon_mask`` ``(1, 1, S, S)`` when ``use_mask``."""

    image: Tensor
    w: Tensor
    gan_image: Tensor
    canon_mask: Tensor | None = None


@dataclass
class Timings:
    """Seconds spent per phase (``prefit``, ``step1``, ``step2``, ``collect``, ``step3``)."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, name: str, start: float) -> None:
        self.seconds[name] += time.perf_counter() - start


class StageCheckpoint:
    """Network weights and random state after a finished stage: ``<folder>/stage.safetensors`` + ``stage.json``.

    Written atomically (temporary file + rename), so a run killed while writing keeps the previous checkpoint.
    ``key`` identifies the configuration; a checkpoint written under another key is ignored.
    """

    def __init__(self, folder: Path, key: str):
        self.folder, self.key = Path(folder), key
        self.weights, self.meta = self.folder / "stage.safetensors", self.folder / "stage.json"

    def load(self, nets: Networks, timings: Timings | None = None) -> tuple[int, Tensor] | None:
        """``(next_stage, rng_state)`` after loading the weights into ``nets``, or None if nothing matches.
        ``timings`` gets back the seconds each phase took before the checkpoint, so a resumed image keeps them."""
        if not (self.weights.is_file() and self.meta.is_file()):
            return None
        meta = json.loads(self.meta.read_text())
        if meta.get("key") != self.key:
            return None
        tensors = load_file(str(self.weights))
        rng = tensors.pop("__rng_state__")
        nets.load_state_dict(tensors)
        if timings is not None:
            for phase, seconds in meta.get("seconds", {}).items():
                timings.seconds[phase] += float(seconds)
        return int(meta["next_stage"]), rng

    def save(self, nets: Networks, next_stage: int, rng: torch.Generator, timings: Timings) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in nets.state_dict().items()}
        tensors["__rng_state__"] = rng.get_state()
        tmp = self.weights.with_suffix(".tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, self.weights)
        tmp = self.meta.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": self.key, "next_stage": next_stage, "seconds": dict(timings.seconds)}))
        os.replace(tmp, self.meta)


def prefit_depth(nets: Networks, image: Tensor, prior_depth: Tensor, geom: Geometry, iters: int, optim: Optim,
                 on_iter: Callable[[float], None] | None = None) -> float:
    """Fit D so its processed output (centred, tanh, rescaled, **no** border clamp) matches ``prior_depth``
    ``(B, S, S)`` by MSE, with Adam; returns the last loss. Only D is updated."""
    nets.train_only(("netD",))
    opt = optim.make(nets.netD.parameters())
    loss = torch.zeros(())
    for _ in range(iters):
        depth, _ = canonical(nets, image, geom, border=False)
        loss = (depth - prior_depth).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_iter is not None:
            on_iter(loss.item())
    return loss.item()


def run_step(nets: Networks, step: int, length: int, loss_fn: Callable[[], Tensor], optim: Optim,
             on_iter: Callable[[int, str, float], None] | None = None, stage: int = 0) -> None:
    """``length`` iterations of ``loss_fn()`` with a fresh Adam over exactly the networks of ``step``
    (:data:`.model.STEP_NETS`), the others frozen; ``on_iter(stage, "step<k>", loss)`` after each."""
    nets.train_only(STEP_NETS[step])
    opt = optim.make(nets.parameters_of(STEP_NETS[step]))
    for _ in range(length):
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_iter:
            on_iter(stage, f"step{step}", loss.item())


def _sample_pool(pool: tuple[Tensor, ...], n: int, rng: torch.Generator, device) -> tuple[Tensor, ...]:
    """``n`` random rows (with replacement) of every tensor of the pool, on ``device``."""
    idx = torch.randint(0, pool[0].shape[0], (n,), generator=rng)
    return tuple(t[idx].to(device) for t in pool)


def fit_image(nets: Networks, G, task: ImageTask, view_prior: GaussianPrior, geom: Geometry, hp: Hyper,
              schedule: Schedule, optim: Optim, *, rng: torch.Generator, perceptual: Perceptual | None = None,
              disc_feature: FeatureLoss | None = None, start_stage: int = 0,
              on_stage: Callable[[int], None] | None = None,
              on_iter: Callable[[int, str, float], None] | None = None,
              timings: Timings | None = None) -> PhotoForward:
    """Run stages ``start_stage .. num_stage - 1`` on one image and return its final (no-grad) Step-1 forward.

    ``on_stage(k)`` is called after stage ``k`` (checkpointing); ``on_iter(stage, step_name, loss)`` after every
    iteration (progress). G stays frozen; only ``nets`` change.
    """
    timings = timings if timings is not None else Timings()
    image, device = task.image, task.image.device
    n = schedule.batch_size
    for stage in range(start_stage, schedule.num_stage):
        len1, len2, len3 = schedule.lengths(stage)
        flip1, flip3 = bool(schedule.flip1[stage]), bool(schedule.flip3[stage])

        t = time.perf_counter()
        run_step(nets, 1, len1, lambda: step1(nets, image, geom, hp, flip=flip1, perceptual=perceptual)[0].total,
                 optim, on_iter, stage)
        with torch.no_grad():  # the canonical model Step 2 relights (the latest Step-1 forward)
            canon = pseudo_canon(step1(nets, image, geom, hp, flip=flip1)[1], image, geom, hp)
        timings.add("step1", t)

        def pseudo_samples():
            return make_pseudo(canon, n, view_prior, geom, hp, rng, task.canon_mask)

        t = time.perf_counter()
        run_step(nets, 2, len2, lambda: step2(nets, G, task.w, task.gan_image, pseudo_samples(), hp,
                                              disc_feature)[0].total, optim, on_iter, stage)
        timings.add("step2", t)

        t = time.perf_counter()
        nets.train_only(())
        images, masks, views = [], [], []
        with torch.no_grad():
            for _ in range(schedule.collect_iters):
                pseudo = pseudo_samples()
                images.append(step2(nets, G, task.w, task.gan_image, pseudo, hp, None)[1].cpu())
                masks.append(pseudo.masks.cpu())
                views.append(pseudo.views.cpu())
        pool = (torch.cat(images), torch.cat(masks), torch.cat(views))
        timings.add("collect", t)

        def step3_loss():
            projected, projected_masks, views = _sample_pool(pool, n, rng, device)
            return step3(nets, image, projected, projected_masks, geom, hp, flip=flip3, perceptual=perceptual,
                         views=views)[0].total

        t = time.perf_counter()
        run_step(nets, 3, len3, step3_loss, optim, on_iter, stage)
        timings.add("step3", t)
        if on_stage:
            on_stage(stage)
    nets.train_only(())
    with torch.no_grad():
        return step1(nets, image, geom, hp)[1].detach()


def fit_concurrently(fit: Callable[[int, Networks], None], count: int, nets: list[Networks]) -> None:
    """Run ``fit(j, nets_k)`` for ``j`` in ``range(count)``, ``len(nets)`` images at a time in threads, each on its
    own networks.

    Images share nothing but the frozen GAN (read only), and every random number of an image comes from its own
    generator, so each result is the one that image gets when fitted alone. PyTorch releases the GIL inside its
    operators, so the threads keep the cores busy where one small-batch fit leaves them idle; the intra-op thread
    count is divided among the images meanwhile. The first error is re-raised once the running images end.
    """
    if len(nets) <= 1 or count <= 1:
        for j in range(count):
            fit(j, nets[0])
        return
    import queue
    from concurrent.futures import ThreadPoolExecutor

    free: queue.SimpleQueue = queue.SimpleQueue()
    for n in nets:
        free.put(n)

    def work(j: int) -> None:
        n = free.get()
        try:
            fit(j, n)
        finally:
            free.put(n)

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // len(nets)))
    try:
        with ThreadPoolExecutor(max_workers=len(nets)) as pool:
            futures = [pool.submit(work, j) for j in range(count)]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:  # images not started yet are dropped; running ones end their image
                    future.cancel()
                raise
    finally:
        torch.set_num_threads(threads)
