"""``bench train model=gan2shape_pretrain``: joint pre-training of GAN2Shape (:mod:`methods.gan2shape.pretrain`).

One process: ``bench train model=gan2shape_pretrain``. Several (one per GPU, or gloo processes on a CPU):
``torchrun --standalone --nproc_per_node=N -m benchmark.cli train model=gan2shape_pretrain``; torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) selects DDP with nccl on CUDA and gloo on the CPU. Rank 0
tracks the run in MLflow, writes the stage checkpoint to ``train.out_dir`` (rerunning the command resumes at the next
stage) and exports the networks to ``train.export`` (safetensors + JSON card) for ``method.pretrained``. Every rank
writes the SHA-256 of its final weights to ``<out_dir>/rank<r>.sha256``, so anyone can check the ranks agree.
"""

from __future__ import annotations

import contextlib
import hashlib
import shlex
import time
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import DictConfig

from benchmark import tracking
from benchmark.runner import device_name, open_split, plain, seed_everything
from core.registry import TRAINERS

__all__ = ["train_gan2shape_pretrain", "state_digest"]


def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 over the module's state dict (names and raw bytes), to compare weights across processes."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@TRAINERS.register("gan2shape_pretrain")  # a job: bench train runs it as is, not on the driver
def train_gan2shape_pretrain(cfg: DictConfig, overrides: list[str]) -> int:
    from benchmark.runner import init_distributed
    from methods.base import PrepareContext
    from methods.common.shape_prior import shape_prior_depth
    from methods.gan2shape.fitting import StageCheckpoint
    from methods.gan2shape.method import GAN2Shape, save_networks
    from core.errors import BenchError
    from core.paths import asset_path
    from core.weights import file_sha256
    from methods.gan2shape.pretrain import JointData, init_from_unsup3d, pretrain
    from methods.gan2shape.steps import gan_images

    device, rank, world = init_distributed(cfg.device.type)
    try:
        if cfg.train.num_threads:
            torch.set_num_threads(int(cfg.train.num_threads))
        seed_everything(int(cfg.seed))
        out_dir = Path(cfg.train.out_dir)
        command = " ".join(["bench train", *map(shlex.quote, overrides)])
        if world > 1:
            command = f"torchrun --nproc_per_node={world} -m benchmark.cli train " + " ".join(map(shlex.quote, overrides))
        method = GAN2Shape(**{**{k: v for k, v in plain(cfg.model.method).items() if k != "name"}, "progress": False})
        method.prepare(PrepareContext(device=device, seed=int(cfg.seed), work_dir=out_dir,
                                      load_split=lambda s: None, dataset_name=cfg.dataset.name))
        init = cfg.model.get("init")
        key = method.key
        if init:  # D, A, V, L and the geometry from Unsup3d's trained networks; E fresh
            torch.manual_seed(int(cfg.seed))
            nets, geom = init_from_unsup3d(asset_path(init), method.G.style_dim, method.inplace_relu_quirk,
                                           nf_enc=int(method.arch.get("nf_enc", 32)))
            method.nets, method.geom, method.prefit_iters = nets.to(device), geom.to(device), 0
            key += "-init" + file_sha256(asset_path(init))[:16]
        source, count = cfg.model.get("source", "train"), int(cfg.model.images)
        ds = None
        if source == "gan":  # GAN samples with their exact latents: no inversion, as many as wanted
            first = int(cfg.model.get("first_seed", 1_000_000))
            with torch.no_grad():
                latents = method.G.seed_latents(range(first, first + count))
        elif source == "train":  # the training split, inverted into W (cached under out_dir)
            ds = open_split(cfg, cfg.train.split, count)
            batch = {k: ([ds[i][k] for i in range(len(ds))]) for k in ds[0]}
            batch = {k: torch.stack(v) if isinstance(v[0], torch.Tensor) else v for k, v in batch.items()}
            latents = method.latents(batch, [method.cache / "latents" / n for n in batch["name"]])
        else:
            raise BenchError(f"model.source must be 'train' (the training split, inverted) or 'gan' (GAN samples "
                             f"with their latents), got {source!r}")
        with torch.no_grad():
            gan = torch.cat([gan_images(method.G, w[None], method.image_size) for w in latents]).cpu()
        if source == "gan":
            images, mask = gan, torch.ones(1, *gan.shape[-2:])
        else:
            images, mask = batch["image"], method.mask_provider({k: v[:1] for k, v in batch.items()})
        prior = shape_prior_depth(mask, **method.shape_prior) if method.shape_prior is not None else None
        data = JointData(images, latents.cpu(), gan, prior)
        checkpoint = StageCheckpoint(out_dir, key + f"-{source}{len(data)}")

        tags = {"model": cfg.model.name, "dataset": cfg.dataset.name, "seed": cfg.seed, "device": str(device),
                "device_name": device_name(device), "command": command, "world_size": world}
        track = (tracking.start_run(cfg.tracking.uri, cfg.tracking.experiment, f"{cfg.model.name}-{cfg.dataset.name}",
                                    tracking.flatten(plain(cfg)), tags) if rank == 0 else contextlib.nullcontext())
        started, commit = time.time(), tracking.git_commit()
        with track as tracker:
            step_counter = {"n": 0}

            def on_iter(stage: int, step: str, loss: float) -> None:
                step_counter["n"] += 1
                if tracker is not None and step_counter["n"] % int(cfg.train.log_every) == 0:
                    tracker.log_metrics({f"loss_{step}": loss, "stage": stage}, step=step_counter["n"])

            timings = pretrain(method.nets, method.G, data, method.view_prior, method.geom, method.hp,
                               method.schedule, method.optim, device=device, seed=int(cfg.seed),
                               prefit_iters=method.prefit_iters, perceptual=method.perceptual_fn,
                               disc_feature=method.disc_feature, checkpoint=checkpoint, on_iter=on_iter)
            digest = state_digest(method.nets)
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"rank{rank}.sha256").write_text(digest + "\n")
            if tracker is not None:
                wall = time.time() - started
                card = {"command": command, "commit": commit, "device": device_name(device), "world_size": world,
                        "wall_time_s": wall, "seconds_per_phase": dict(timings.seconds), "images": len(data),
                        "source": source, "init": init,
                        "dataset": {"name": cfg.dataset.name, "split": cfg.train.split,
                                    "generation": (getattr(ds, "meta", None) or {}).get("config")},
                        "seed": int(cfg.seed), "config": plain(cfg.model), "sha256": digest}
                dtype = getattr(torch, str(cfg.model.get("export_dtype", "float32")))
                export = save_networks(cfg.train.export, method.nets, {**card, "export_dtype": str(dtype)}, method.geom,
                                       dtype, method.hp)
                tracker.log_file(export.with_suffix(".json"))
                tracker.log_metrics({"wall_time_s": wall, **{f"time_{k}_s": v for k, v in timings.seconds.items()}})
                print(f"wrote {export} ({len(data)} images, {world} process(es), {wall:.0f} s)")
        if world > 1:
            dist.barrier()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0
