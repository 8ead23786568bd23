"""Run one composed config: build the dataset and method from the registries, run the experiment, track it."""

from __future__ import annotations

import inspect
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from benchmark import tracking
from core.errors import BenchError
from core.registry import DATASETS, EXPERIMENTS, METHODS, Registry


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so CPU runs repeat exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(kind: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise BenchError("device=cuda was asked for but torch sees no CUDA GPU; use device=cpu or device=auto")
    if kind not in ("cpu", "cuda"):
        raise BenchError(f"unknown device '{kind}'; valid devices: auto, cpu, cuda")
    return torch.device(kind)


def init_distributed(kind: str) -> tuple[torch.device, int, int]:
    """Join torchrun's process group when launched by it (``WORLD_SIZE`` > 1): nccl on CUDA (one GPU per
    ``LOCAL_RANK``), gloo on the CPU. Returns ``(device, rank, world_size)``; ``(device, 0, 1)`` otherwise."""
    import os

    import torch.distributed as dist

    device = resolve_device(kind)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return device, rank, (dist.get_world_size() if dist.is_initialized() else 1)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def check_args(registry: Registry, name: str, args: dict[str, Any], origin: str) -> None:
    """Raise a clear error if plugin ``name`` does not accept every key of ``args``."""
    params = inspect.signature(registry.get(name)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(args) - set(params))
    if unknown:
        raise BenchError(f"{registry.kind} '{name}' does not take {', '.join(unknown)} (from {origin}); it takes "
                         f"{', '.join(p for p in params if p != 'self') or 'no arguments'}")


def create_checked(registry: Registry, name: str, args: dict[str, Any], origin: str) -> Any:
    """``registry.create`` that turns arguments the plugin does not take into a clear error."""
    check_args(registry, name, args, origin)
    return registry.create(name, **args)


def open_split(cfg: DictConfig, split: str, limit: int | None = None) -> Dataset:
    """The configured dataset's ``split`` (first ``limit`` images); a one-line error when it is empty."""
    ds = create_checked(DATASETS, cfg.dataset.name, dataset_args(cfg, split, limit), f"dataset={cfg.dataset.name}")
    if len(ds) == 0:
        raise BenchError(f"dataset {cfg.dataset.name} split {split} is empty; generate it with bench data")
    return ds


def ablation_label(cfg: DictConfig) -> str:
    """``none`` or the sorted ablation names joined by ``+``."""
    return "+".join(sorted(cfg.ablations)) or "none"


def plain(node: Any) -> Any:
    """A resolved plain-Python copy of a config node."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def dataset_args(cfg: DictConfig, split: str, limit: int | None = None) -> dict[str, Any]:
    return {"root": str(Path(cfg.dataset.root)), "split": split, "limit": limit, **plain(cfg.dataset.load)}


def method_args(cfg: DictConfig) -> dict[str, Any]:
    return {k: v for k, v in plain(cfg.method).items() if k != "name"}


def method_origin(cfg: DictConfig) -> str:
    label = ablation_label(cfg)
    return f"method={cfg.method.name}" + ("" if label == "none" else f" with ablation={label}")


@dataclass(frozen=True)
class RunContext:
    """Everything an experiment function gets: the config, the device and the open MLflow run.

    ``report(step, metrics)`` passes intermediate summary metrics (e.g. the running ``side_mean`` after each batch)
    to whoever launched the run: ``bench sweep`` prunes trials on them. They are also logged at ``step``.

    Under torchrun (``world`` > 1) every rank runs the experiment on its shard of the data and only rank 0 has a
    ``tracker`` (one MLflow run); an experiment gathers its per-rank results before logging (:meth:`gather`).
    """

    cfg: DictConfig
    device: torch.device
    tracker: tracking.Tracker | None
    on_report: Callable[[int, Mapping[str, float]], None] | None = None
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, data: Dataset) -> Dataset:
        """This rank's share of ``data``: items ``rank, rank + world, ...`` (all of it in one process)."""
        if self.world == 1:
            return data
        from torch.utils.data import Subset

        return Subset(data, range(self.rank, len(data), self.world))

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` in rank order (``[obj]`` in one process)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def report(self, step: int, metrics: Mapping[str, float]) -> None:
        if self.tracker is None:
            return
        self.tracker.log_metrics({f"running_{k}": v for k, v in metrics.items()}, step=step)
        if self.on_report is not None:
            self.on_report(step, metrics)

    def load_split(self, split: str, limit: int | None = None) -> Dataset:
        return create_checked(DATASETS, self.cfg.dataset.name, dataset_args(self.cfg, split, limit),
                              f"dataset={self.cfg.dataset.name}")

    def create_method(self) -> Any:
        return create_checked(METHODS, self.cfg.method.name, method_args(self.cfg), method_origin(self.cfg))

    @property
    def work_dir(self) -> Path:
        return Path(self.cfg.paths.work_dir)


def _positive_int(value: Any, key: str, allow_none: bool = False) -> None:
    """A config value that must be an integer >= 1 (or null); one-line BenchError otherwise."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        hint = "null (all) or " if allow_none else ""
        raise BenchError(f"{key} must be {hint}an integer >= 1, got {value!r}; e.g. {key}=8")


def check_run_settings(cfg: DictConfig) -> None:
    """Types and ranges of the harness's own settings (``eval.*``, ``seed``)."""
    _positive_int(cfg.eval.get("limit"), "eval.limit", allow_none=True)
    _positive_int(cfg.eval.get("batch_size"), "eval.batch_size")
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise BenchError(f"seed must be an integer, got {seed!r}; e.g. seed=0")


def check_config(cfg: DictConfig) -> None:
    """The checks of the config alone (no I/O): setting types and ranges, known names, accepted arguments and the
    method's own value checks (``check_settings``)."""
    check_run_settings(cfg)
    EXPERIMENTS.get(cfg.experiment.name)
    check_args(METHODS, cfg.method.name, method_args(cfg), method_origin(cfg))
    check_settings = getattr(METHODS.get(cfg.method.name), "check_settings", None)
    if check_settings is not None:
        check_settings(**method_args(cfg))
    check_args(DATASETS, cfg.dataset.name, dataset_args(cfg, cfg.experiment.split), f"dataset={cfg.dataset.name}")


def preflight(cfg: DictConfig) -> None:
    """Checks before any work: :func:`check_config`, then an available device, a usable tracking store and the
    experiment's split present (for experiments with ``reads_split``).

    Mistakes found here are config errors and never open an MLflow run.
    """
    check_config(cfg)
    resolve_device(cfg.device.type)
    tracking.resolve_uri(cfg.tracking.uri)  # a writable store, or a server that answers
    if getattr(EXPERIMENTS.get(cfg.experiment.name), "reads_split", False):
        open_split(cfg, cfg.experiment.split, limit=1)  # a missing or empty dataset


def run(cfg: DictConfig, command: str = "python API", *, tags: Mapping[str, Any] | None = None,
        on_report: Callable[[int, Mapping[str, float]], None] | None = None,
        on_start: Callable[[tracking.Tracker], None] | None = None) -> dict[str, float]:
    """Run the experiment ``cfg.experiment.name`` as one MLflow run and return its summary metrics.

    ``command`` is recorded as the run's ``command`` tag: how to reproduce it. ``tags`` are added to the run (e.g.
    ``mlflow.parentRunId`` to nest it under a sweep), ``on_start(tracker)`` is called once the run exists and
    ``on_report`` receives the experiment's intermediate metrics (:meth:`RunContext.report`).
    """
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg
    preflight(cfg)
    experiment = EXPERIMENTS.get(cfg.experiment.name)
    device, rank, world = init_distributed(cfg.device.type)
    seed_everything(cfg.seed)
    if rank != 0:  # torchrun: ranks > 0 compute their shard; rank 0 gathers and logs the one MLflow run
        return experiment(RunContext(cfg=cfg, device=device, tracker=None, rank=rank, world=world))
    label = ablation_label(cfg)
    tags = {
        "method": cfg.method.name, "dataset": cfg.dataset.name, "ablation": label,
        "experiment": cfg.experiment.name, "seed": cfg.seed, "device": str(device), "device_name": device_name(device),
        "command": command, "world_size": world, **(tags or {}),
    }
    run_name = f"{cfg.method.name}-{cfg.dataset.name}" + ("" if label == "none" else f"-{label}")
    params = tracking.flatten(plain(cfg))
    with tracking.start_run(cfg.tracking.uri, cfg.tracking.experiment, run_name, params, tags) as tracker:
        if on_start is not None:
            on_start(tracker)
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        return experiment(RunContext(cfg=cfg, device=device, tracker=tracker, on_report=on_report, world=world))
