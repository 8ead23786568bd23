"""Run one composed config: build the dataset and method from the registries, run the experiment, track it."""

from __future__ import annotations

import inspect
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from benchmark import tracking
from benchmark.errors import BenchError
from benchmark.registry import DATASETS, EXPERIMENTS, METHODS, Registry


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


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def create_checked(registry: Registry, name: str, args: dict[str, Any], origin: str) -> Any:
    """``registry.create`` that turns arguments the plugin does not take into a clear error."""
    factory = registry.get(name)
    params = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(args) - set(params))
        if unknown:
            raise BenchError(f"{registry.kind} '{name}' does not take {', '.join(unknown)} (from {origin}); it takes "
                             f"{', '.join(p for p in params if p != 'self') or 'no arguments'}")
    return registry.create(name, **args)


def ablation_label(cfg: DictConfig) -> str:
    """``none`` or the sorted ablation names joined by ``+``."""
    return "+".join(sorted(cfg.ablations)) or "none"


def plain(node: Any) -> Any:
    """A resolved plain-Python copy of a config node."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


@dataclass(frozen=True)
class RunContext:
    """Everything an experiment function gets: the config, the device and the open MLflow run."""

    cfg: DictConfig
    device: torch.device
    tracker: tracking.Tracker

    def load_split(self, split: str, limit: int | None = None) -> Dataset:
        ds = self.cfg.dataset
        args = {"root": str(Path(ds.root)), "split": split, "limit": limit, **plain(ds.load)}
        return create_checked(DATASETS, ds.name, args, f"dataset={ds.name}")

    def create_method(self) -> Any:
        args = {k: v for k, v in plain(self.cfg.method).items() if k != "name"}
        origin = f"method={self.cfg.method.name}" + (f" with ablation={ablation_label(self.cfg)}"
                                                     if self.cfg.ablations else "")
        return create_checked(METHODS, self.cfg.method.name, args, origin)

    @property
    def work_dir(self) -> Path:
        return Path(self.cfg.paths.work_dir)


def run(cfg: DictConfig) -> dict[str, float]:
    """Run the experiment ``cfg.experiment.name`` as one MLflow run and return its summary metrics."""
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg
    # Fail on unknown names before a run is opened: these are config mistakes, not failed experiments.
    experiment = EXPERIMENTS.get(cfg.experiment.name)
    METHODS.get(cfg.method.name)
    DATASETS.get(cfg.dataset.name)
    device = resolve_device(cfg.device.type)
    seed_everything(cfg.seed)
    label = ablation_label(cfg)
    tags = {
        "method": cfg.method.name, "dataset": cfg.dataset.name, "ablation": label,
        "experiment": cfg.experiment.name, "seed": cfg.seed, "device": str(device), "device_name": device_name(device),
        "command": " ".join(["bench", *sys.argv[1:]]),
    }
    run_name = f"{cfg.method.name}-{cfg.dataset.name}" + ("" if label == "none" else f"-{label}")
    params = tracking.flatten(plain(cfg))
    with tracking.start_run(cfg.tracking.uri, cfg.tracking.experiment, run_name, params, tags) as tracker:
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        return experiment(RunContext(cfg=cfg, device=device, tracker=tracker))
