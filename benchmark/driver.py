"""The single training driver behind ``bench train`` for models that supply a :class:`~methods.base.TrainRecipe`.

``bench train model=<config>`` composes ``configs/train.yaml``; the model config's ``arch`` names a recipe in the
``TRAINERS`` registry (built-in ones, or third-party ones through the ``gan2shape_bench.trainers`` entry point).
The driver owns what every loop shares and the recipe owns the model:

* device, torch threads (``train.num_threads``) and seed;
* resume-or-create: ``train.out_dir/checkpoint.pt`` is resumed when present, after checking that it was made by
  the same model settings, dataset and seed (a one-line error otherwise);
* the MLflow run (config, tags, losses every ``train.log_every`` steps, validation figures and a sample grid every
  ``train.eval_every`` steps and at the end);
* the progress bar, checkpoints every ``train.checkpoint_every`` steps, and at the end a checkpoint, a validation
  and the export of the weights to ``train.export`` with the model card (command, dataset and generation seed,
  commit, device, wall time over all resumed parts, iterations, seed, settings, last losses, validation);
* a stop at the first non-finite logged loss (a one-line error naming it; the last checkpoint is kept);
* with ``train.select_on`` (a validation figure, e.g. ``mad_mean``), model selection on validation: the export
  is replaced only by an evaluation that lowers that figure, and its card says which step it holds
  (``selected``); the checkpoint always holds the last step, so a resumed run continues the same selection.
"""

from __future__ import annotations

import math
import shlex
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from benchmark import tracking
from benchmark.runner import device_name, open_split, plain, resolve_device, seed_everything
from core.errors import BenchError
from methods.base import TrainContext, TrainRecipe, TrainState

__all__ = ["train_with_recipe", "dataset_info"]


def dataset_info(cfg: DictConfig, split: str, ds: Any) -> dict[str, Any]:
    """What a model card says about its training data."""
    meta = getattr(ds, "meta", None) or {}
    return {"name": cfg.dataset.name, "root": str(cfg.dataset.root), "split": split, "images": len(ds),
            "generation_seed": (meta.get("config") or {}).get("seed"), "generation": meta.get("config")}


def _load_split(cfg: DictConfig, loaded: dict[str, Any]):
    def load(split: str, limit: int | None = None):
        ds = open_split(cfg, split, limit)
        loaded.setdefault(split, dataset_info(cfg, split, ds))
        return ds

    return load


def _resume_or_create(recipe: TrainRecipe, ckpt: Path, identity: dict[str, Any]) -> TrainState:
    if not ckpt.is_file():
        state = recipe.create()
        state.extra = {**identity, "wall_time_s": 0.0}
        return state
    try:
        state = recipe.load(ckpt)
    except (RuntimeError, ValueError, KeyError, OSError, TypeError) as err:
        raise BenchError(f"cannot resume from {ckpt} ({type(err).__name__}: {str(err)[:200]}); delete it or choose "
                         f"another train.out_dir") from None
    have = {k: state.extra.get(k) for k in identity}
    if have != identity:
        changed = sorted(k for k in identity if have.get(k) != identity[k])
        raise BenchError(f"{ckpt} was trained with other {', '.join(changed)}; delete {ckpt.parent} or set "
                         f"train.out_dir=<new folder>")
    return state


def _check_finite(logs: dict[str, float], step: int, ckpt: Path) -> None:
    """Stop at the first non-finite logged value (a diverged model would only spoil its next checkpoints)."""
    bad = sorted(k for k, v in logs.items() if not math.isfinite(float(v)))
    if bad:
        kept = f"the last checkpoint {ckpt} is kept" if ckpt.is_file() else "no checkpoint was written yet"
        raise BenchError(f"training diverged: {', '.join(bad)} not finite at step {step}; {kept}: lower the learning "
                         f"rate (e.g. model.lr) and rerun the same command")


def train_with_recipe(cfg: DictConfig, overrides: list[str], recipe_cls: type[TrainRecipe]) -> int:
    """Train (or resume) the model of ``cfg.model`` with ``recipe_cls``; returns the exit status (0)."""
    from tqdm import tqdm

    device = resolve_device(cfg.device.type)
    if cfg.train.num_threads:
        torch.set_num_threads(int(cfg.train.num_threads))
    seed_everything(int(cfg.seed))
    settings = plain(cfg.model)
    loaded: dict[str, Any] = {}
    limit = cfg.train.get("limit")
    ctx = TrainContext(settings=settings, device=device, seed=int(cfg.seed), load_split=_load_split(cfg, loaded),
                       dataset_name=cfg.dataset.name, train_split=str(cfg.train.split),
                       train_limit=None if limit is None else int(limit),
                       evaluation={**plain(cfg.get("eval") or {}), "samples": int(cfg.tracking.samples)},
                       iterations=int(cfg.train.iterations),
                       num_threads=int(cfg.train.num_threads) if cfg.train.num_threads else None)
    recipe = recipe_cls(ctx)
    iterations, out_dir = recipe.total_iterations(), Path(cfg.train.out_dir)
    ckpt = out_dir / "checkpoint.pt"
    command = " ".join(["bench train", *map(shlex.quote, overrides)])
    identity = {"model": recipe.resume_settings(), "dataset": cfg.dataset.name, "seed": int(cfg.seed)}
    state = _resume_or_create(recipe, ckpt, identity)
    resumed_from = state.step

    tags = {"model": cfg.model.name, "dataset": cfg.dataset.name, "seed": cfg.seed, "device": str(device),
            "device_name": device_name(device), "command": command, "resumed_from": resumed_from}
    started, commit = time.time(), tracking.git_commit()
    wall_before = float(state.extra.get("wall_time_s", 0.0))
    last: dict[str, float] = dict(state.extra.get("last_losses") or {})  # survives a resume with no new steps
    scores: dict[str, float] = {}
    select_on = cfg.train.get("select_on")

    def better(figures: dict[str, float]) -> bool:
        """Whether this evaluation's ``select_on`` figure is the lowest so far (then it replaces the export)."""
        if select_on not in figures:
            raise BenchError(f"train.select_on={select_on} is not a validation figure of {cfg.model.name}; choose "
                             f"one of {sorted(figures) or 'none (this model logs no validation figures)'} or null")
        best = state.extra.get("selected")
        return best is None or best["on"] != f"val_{select_on}" or figures[select_on] < best["value"]

    with tracking.start_run(cfg.tracking.uri, cfg.tracking.experiment, f"{cfg.model.name}-{cfg.dataset.name}",
                            tracking.flatten(plain(cfg)), tags) as tracker:
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        reference = recipe.reference_metrics(state)
        if reference:
            tracker.log_metrics(reference, step=state.step)

        def checkpoint() -> None:
            state.extra["wall_time_s"] = wall_before + time.time() - started
            state.extra["last_losses"] = dict(last)
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            recipe.save(ckpt, state)

        def evaluate() -> None:
            scores.clear()
            scores.update(recipe.evaluate(state))
            if scores:
                tracker.log_metrics({f"val_{k}": v for k, v in scores.items()}, step=state.step)
            grid = recipe.sample_grid(state)
            if grid is not None:
                tracker.log_image(grid, f"samples/step_{state.step:07d}.png")
            card = {"command": command, "dataset": loaded, "commit": commit, "device": device_name(device),
                    "wall_time_s": wall_before + time.time() - started, "iterations": state.step,
                    "seed": int(cfg.seed), "train_config": settings, "losses": dict(last), "validation": dict(scores)}
            if select_on:
                if not better(scores):
                    return
                state.extra["selected"] = {"on": f"val_{select_on}", "step": state.step, "value": scores[select_on]}
                card["selected"] = state.extra["selected"]
            recipe.export(state, Path(cfg.train.export), card)

        bar = tqdm(total=iterations, initial=min(state.step, iterations), disable=not cfg.train.progress,
                   desc=f"train {cfg.model.name}", dynamic_ncols=True)
        while state.step < iterations:
            logs = recipe.step(state)
            _check_finite(logs, state.step, ckpt)
            last.update(logs)
            bar.update(1)
            if state.step % int(cfg.train.log_every) == 0:
                tracker.log_metrics(logs, step=state.step)
                bar.set_postfix(loss=f"{logs.get('loss', float('nan')):.3f}")
            if state.step % int(cfg.train.checkpoint_every) == 0:
                checkpoint()
            if state.step % int(cfg.train.eval_every) == 0 and state.step < iterations:
                evaluate()
        bar.close()
        checkpoint()
        evaluate()
        tracker.log_metrics({"iterations": state.step, "seconds_per_iteration":
                             (time.time() - started) / max(state.step - resumed_from, 1)}, step=state.step)
    selected = state.extra.get("selected") if select_on else None
    held = (f" (the weights of step {selected['step']}, best {selected['on']} {selected['value']:.4g})"
            if selected else "")
    print(f"trained {cfg.model.name}: {recipe.summary(state, scores)}; wrote {cfg.train.export}{held}")
    return 0
