"""``bench train``: train a model on a benchmark dataset, track it in MLflow, export our safetensors format.

``model.arch`` names an entry of the ``TRAINERS`` registry. A :class:`~methods.base.TrainRecipe` runs on the single
driver (:mod:`benchmark.driver`; ``supervised``, ``unsup3d``, ``stylegan2``, ``hologan``, ``yaw_regressor``,
``identity``); a function is a job that runs as is (``fn(cfg, overrides) -> exit status``), registered the same way
from its ``benchmark.train_*`` module: ``view_light_prior`` and ``gan2shape_pretrain``, which are not loops (a
least-squares fit over a trained model's predictions, and DDP pre-training stages). This module only dispatches;
nothing imports it but the CLI.
"""

from __future__ import annotations

from benchmark.config import compose
from benchmark.driver import train_with_recipe
from core.errors import BenchError
from core.registry import TRAINERS
from methods.base import TrainRecipe

TRAIN_CONFIG = "train"


def train_command(overrides: list[str]) -> int:
    """``bench train [overrides]``: compose ``configs/train.yaml`` and run the trainer of ``model.arch``."""
    cfg = compose(overrides, config_name=TRAIN_CONFIG)
    if cfg.model.arch not in TRAINERS:
        raise BenchError(f"bench train has no trainer for model arch '{cfg.model.arch}'; valid: "
                         f"{', '.join(TRAINERS.names())}")
    trainer = TRAINERS.get(cfg.model.arch)
    if isinstance(trainer, type) and issubclass(trainer, TrainRecipe):
        return train_with_recipe(cfg, overrides, trainer)
    return trainer(cfg, overrides)  # a job: ``fn(cfg, overrides) -> exit status``
