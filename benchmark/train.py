"""``bench train``: train a model on a benchmark dataset, track it in MLflow, export our safetensors format.

``model.arch`` selects the trainer: a recipe registered in ``TRAINERS`` runs on the single driver
(:mod:`benchmark.driver`; ``supervised``, ``unsup3d``); the others are jobs, not yet moved onto it, in their
``benchmark.train_*`` modules: ``stylegan2``, ``view_light_prior`` (:mod:`benchmark.train_unsup3d`),
``gan2shape_pretrain``, ``yaw_regressor``, ``identity`` and ``hologan``. This module only dispatches; nothing
imports it but the CLI.
"""

from __future__ import annotations

from benchmark import train_gan2shape, train_hologan, train_identity, train_stylegan2, train_unsup3d, train_yaw
from benchmark.config import compose
from benchmark.driver import train_with_recipe
from core.errors import BenchError
from core.registry import TRAINERS

TRAIN_CONFIG = "train"
JOBS = {"stylegan2": train_stylegan2.train_stylegan2, "view_light_prior": train_unsup3d.fit_view_light_prior,
        "gan2shape_pretrain": train_gan2shape.train_gan2shape_pretrain,
        "yaw_regressor": train_yaw.train_yaw_regressor, "identity": train_identity.train_identity,
        "hologan": train_hologan.train_hologan}


def train_command(overrides: list[str]) -> int:
    """``bench train [overrides]``: compose ``configs/train.yaml`` and run the trainer of ``model.arch``."""
    cfg = compose(overrides, config_name=TRAIN_CONFIG)
    if cfg.model.arch in TRAINERS:
        return train_with_recipe(cfg, overrides, TRAINERS.get(cfg.model.arch))
    if cfg.model.arch not in JOBS:
        valid = sorted([*JOBS, *TRAINERS.names()])
        raise BenchError(f"bench train has no trainer for model arch '{cfg.model.arch}'; valid: {', '.join(valid)}")
    return JOBS[cfg.model.arch](cfg, overrides)
