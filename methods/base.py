"""The plugin protocol every shape method follows.

A shape method is a class registered with ``@METHODS.register(name)``; its constructor takes the keys of its
``configs/method/<name>.yaml`` (minus ``name``). The runner calls ``prepare(ctx)`` once (fit statistics, load or
train weights), then ``reconstruct(batch)`` on batches of the evaluation split.

A rotation method (the face-rotation experiment) subclasses :class:`RotationMethod` instead, or as well (GAN2Shape
does both): ``prepare(ctx)``, then ``rotate(seeds, yaw_deg)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset


@dataclass(frozen=True)
class Reconstruction:
    """What a shape method returns for a batch of ``B`` images of size ``H x W``.

    Attributes:
        depth: ``(B, H, W)`` depth in the input view (what SIDE/MAD score).
        valid: ``(B, H, W)`` 1 where ``depth`` is defined (the render-validity mask).
        canon_depth: ``(B, H, W)`` canonical-frame depth, when the method has one.
        albedo: ``(B, 3, H, W)`` canonical albedo in [-1, 1], when the method has one.
        view: ``(B, 6)`` predicted view, when the method has one.
        light: ``(B, 4)`` predicted light, when the method has one.
        extras: anything else worth logging (images keyed by name, latents, ...).
    """

    depth: Tensor
    valid: Tensor
    canon_depth: Tensor | None = None
    albedo: Tensor | None = None
    view: Tensor | None = None
    light: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PrepareContext:
    """What a method may use while preparing: the device, the seed, a work folder and other splits of the data."""

    device: torch.device
    seed: int
    work_dir: Path
    load_split: Callable[[str], Dataset]
    dataset_name: str


class ShapeMethod(ABC):
    """Base class for shape methods; subclasses implement :meth:`reconstruct` and optionally :meth:`prepare` and
    :meth:`check_settings`."""

    @staticmethod
    def check_settings(**settings: Any) -> None:
        """Check the constructor arguments' values without building anything (no weights, no data); raise a
        one-line ``BenchError`` naming the key. ``bench run`` calls it before any MLflow run opens."""

    def prepare(self, ctx: PrepareContext) -> None:
        """Fit whatever the method needs before evaluation (default: nothing)."""

    @abstractmethod
    def reconstruct(self, batch: dict[str, Tensor]) -> Reconstruction:
        """Reconstruct a batch (``image`` ``(B, 3, H, W)`` and whatever else the dataset provides)."""


@dataclass(frozen=True)
class Rotation:
    """What a rotation method returns for ``N`` sources rotated to ``A`` yaw angles.

    Attributes:
        source: ``(N, 3, H, W)`` in [-1, 1], the unrotated image of each source (what identity is compared with).
        rotated: ``(N, A, 3, H, W)`` in [-1, 1], source ``n`` turned by ``yaw_deg[a]`` degrees about the vertical
            axis, in synface_proc's ``view`` yaw convention (the sign the shared yaw regressor reads).
        extras: anything else worth logging (latents, calibration figures, ...).
    """

    source: Tensor
    rotated: Tensor
    extras: dict[str, Any] = field(default_factory=dict)


class RotationMethod(ABC):
    """Base class for face-rotation methods: each draws source ``seed`` from its own generator and turns it."""

    def prepare(self, ctx: PrepareContext) -> None:
        """Load weights, find and calibrate directions, ... (default: nothing)."""

    @abstractmethod
    def rotate(self, seeds: Sequence[int], yaw_deg: Tensor) -> Rotation:
        """Rotate the sources drawn from ``seeds`` (one latent per seed, ``torch.Generator().manual_seed(seed)``)
        by each angle of ``yaw_deg`` ``(A,)`` degrees, relative to the source's own pose."""


# ------------------------------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class TrainContext:
    """What a training recipe gets from the driver (``bench train``).

    Attributes:
        settings: the ``model`` config group as a plain dict (architecture, optimisation, validation keys).
        device: where to train.
        seed: the run's seed (network initialisation and data order derive from it).
        load_split: ``load_split(split, limit)`` -> a dataset split (the driver builds and checks it, and records
            what each split is for the model card).
        dataset_name: name of the dataset (for model cards).
        train_split, train_limit: the split to train on and how many of its images (``train.split``,
            ``train.limit``; None: all).
        evaluation: the run's evaluation settings (the ``eval`` group of ``configs/train.yaml``, e.g. the SWD
            set-up of the GAN trainers, plus ``samples``, the images of a logged sample grid).
        iterations: the steps asked for (``train.iterations``); see :meth:`TrainRecipe.total_iterations`.
        num_threads: ``train.num_threads`` (None: the libraries' defaults), for recipes that run other runtimes.
    """

    settings: dict[str, Any]
    device: torch.device
    seed: int
    load_split: Callable[[str, int | None], Dataset]
    dataset_name: str
    train_split: str = "train"
    train_limit: int | None = None
    evaluation: dict[str, Any] = field(default_factory=dict)
    iterations: int = 0
    num_threads: int | None = None


class TrainState(ABC):
    """A recipe's training state: whatever it needs, plus ``step`` (optimisation steps done) and ``extra`` (a
    JSON-able dict the driver keeps in the checkpoint: identity of the run, wall time, last losses)."""

    step: int
    extra: dict[str, Any]


class TrainRecipe(ABC):
    """What a trainable model supplies to the single training driver (:mod:`benchmark.driver`): build data and
    networks, one optimisation step, validation, checkpoints and the shipped weights. Register a subclass with
    ``@TRAINERS.register(arch)``; ``bench train model=<config>`` picks it by the config's ``arch``.

    The driver owns everything else: device, threads and seed, resume-or-create (with an identity check), the
    MLflow run, the progress bar, the log / checkpoint / evaluation cadence, the final export with its model card
    and the summary line.
    """

    def __init__(self, ctx: TrainContext):
        self.ctx = ctx

    @abstractmethod
    def create(self) -> TrainState:
        """Fresh networks and optimiser (step 0), initialised from ``ctx.seed``."""

    @abstractmethod
    def step(self, state: TrainState) -> dict[str, float]:
        """One optimisation step (increments ``state.step``); returns the loss terms to log."""

    @abstractmethod
    def save(self, path: Path, state: TrainState) -> None:
        """Write a resumable checkpoint (loadable with ``weights_only=True``), atomically."""

    @abstractmethod
    def load(self, path: Path) -> TrainState:
        """Rebuild the state written by :meth:`save`; a run resumed from it continues bit-exactly."""

    def total_iterations(self) -> int:
        """Where training stops (default ``ctx.iterations``; a recipe whose schedule is part of its settings may
        fix it, as the yaw regressor's ``model.iterations`` does)."""
        return self.ctx.iterations

    def resume_settings(self) -> dict[str, Any]:
        """The settings a checkpoint must have been made with to be resumed (default all of ``ctx.settings``)."""
        return self.ctx.settings

    def reference_metrics(self, state: TrainState) -> dict[str, float]:
        """Figures logged once when a run (or a resumed part) starts, e.g. a real-vs-real floor; default none."""
        return {}

    def evaluate(self, state: TrainState) -> dict[str, float]:
        """Validation figures (logged with a ``val_`` prefix and written to the model card); default none."""
        return {}

    def sample_grid(self, state: TrainState) -> Any:
        """An ``(H, W, 3)`` uint8 picture of the current model (logged at each evaluation), or None."""
        return None

    @abstractmethod
    def export(self, state: TrainState, path: Path, card: dict[str, Any]) -> None:
        """Write the shipped weights (safetensors) with ``card`` (the driver's model card) in a JSON sidecar."""

    def summary(self, state: TrainState, scores: dict[str, float]) -> str:
        """One line for the end of training (default: the step and the validation figures)."""
        figures = ", ".join(f"{k} {v:.3f}" for k, v in scores.items() if k.endswith("_mean"))
        return f"{state.step} iterations" + (f"; validation {figures}" if figures else "")
