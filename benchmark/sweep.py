"""``bench sweep``: an Optuna study over config keys; every trial is a ``bench run`` nested in the study's MLflow run.

    bench sweep sweep=ellipsoid_prior                      # the search space and objective of configs/sweep/
    bench sweep sweep=gan2shape_losses sweep.n_trials=40   # any run override applies to every trial

A sweep file (``configs/sweep/<name>.yaml``, package ``_global_``) sets the run overrides every trial shares (method,
``eval.limit``, ...) and a ``sweep`` block: ``params`` (config key -> ``{type: float|int, low, high, log, step}``
or ``{type: categorical, choices: [...]}``; a choice is written as a command-line value, so ``ablation`` can take
``"[flat_init]"``), ``metric`` (a summary metric of the run, ``side_mean`` by default) and ``direction``, the
``sampler`` (TPE by default) and ``pruner`` (median on the running metric the experiment reports after each batch),
and ``storage``.

Engines, not home-made machinery:

* the study lives in Optuna RDB storage: ``sqlite:///optuna.db`` in the launch directory by default, any SQLAlchemy
  URL (PostgreSQL, MySQL) with ``sweep.storage=``. Start the same command in several shells, on several machines
  or as a SLURM array: the workers share the study and stop when ``n_trials`` trials have finished in all.
* a killed worker leaves its trial RUNNING; Optuna's heartbeat marks it FAIL once it is older than
  ``grace_s`` (checked by every worker before each trial), :func:`stale_trial` then marks its MLflow run FAILED and
  re-queues its parameters once (``retry_failed``). Finished trials are never redone.
* every trial is an MLflow run tagged ``mlflow.parentRunId`` = the study's parent run, which all workers find by
  tag (the earliest one wins if two workers start at once).

When the study has its trials, the best parameters are written as ``configs/tuned/<name>.yaml``
(``sweep.best_config``), which ``bench run tuned=<name>`` composes.
"""

from __future__ import annotations

import fnmatch
import shlex
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from benchmark import tracking
from benchmark.config import CONFIG_DIR, compose, config_groups
from benchmark.runner import check_config, plain, preflight
from core.errors import BenchError
from core.registry import EXPERIMENTS

PARENT_TAG = "sweep.parent"
FINISHED = ("COMPLETE", "PRUNED")


class Pruned(Exception):
    """Raised inside a trial that the pruner stopped: Optuna records PRUNED, MLflow ends the run KILLED."""

    run_status = "KILLED"


class Surplus(Exception):
    """A worker started a trial after the others had already filled ``n_trials`` (a race of a few ms)."""


# ------------------------------------------------------------------------------------------------ search space
def suggest(trial, key: str, spec: Mapping[str, Any]) -> Any:
    """The trial's value for config ``key`` from its search-space ``spec``."""
    kind = spec.get("type")
    if kind == "float":
        return trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)),
                                   step=spec.get("step"))
    if kind == "int":
        return trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)),
                                 step=int(spec.get("step", 1)))
    if kind == "categorical":
        return trial.suggest_categorical(key, list(spec["choices"]))
    raise BenchError(f"sweep.params.{key}: type must be float, int or categorical, got {kind!r}")


def search_space(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``sweep.params`` as ``{config key: spec}``. Keys may be dotted (``method.lr: {...}`` in a file) or nested, as
    Hydra builds them from ``+sweep.params.method.lr={type:float,low:1e-4,high:1e-2}`` on the command line.

    >>> search_space({"a.b": {"type": "int", "low": 0, "high": 1}, "c": {"d": {"type": "categorical", "choices": [1]}}})
    {'a.b': {'type': 'int', 'low': 0, 'high': 1}, 'c.d': {'type': 'categorical', 'choices': [1]}}
    """
    out: dict[str, Any] = {}
    for key, spec in params.items():
        name = f"{prefix}{key}"
        nested = isinstance(spec, Mapping) and spec and all(isinstance(v, Mapping) for v in spec.values())
        if nested and "type" not in spec:
            out.update(search_space(spec, f"{name}."))
        else:
            out[name] = spec
    return out


def check_space(cfg: DictConfig, overrides: list[str]) -> None:
    """Refuse a wrong search space or metric before the first trial (and before the study's parent run opens):
    unknown types, missing or reversed bounds, a log scale through zero, empty choices, keys the config lacks."""
    sw = cfg.sweep
    for key, spec in search_space(plain(sw.params)).items():
        where = f"sweep.params.{key}"
        if not isinstance(spec, Mapping):
            raise BenchError(f"{where} must be a mapping such as {{type: float, low: 0.1, high: 1.0}}, got {spec!r}")
        kind = spec.get("type")
        if kind in ("float", "int"):
            low, high = spec.get("low"), spec.get("high")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
                raise BenchError(f"{where}: a {kind} range needs numeric low and high, got low={low!r} high={high!r}")
            if low > high:
                raise BenchError(f"{where}: low {low} is above high {high}; swap them")
            if spec.get("log") and low <= 0:
                raise BenchError(f"{where}: a log scale needs low > 0, got {low}")
            probe = low
        elif kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, (list, tuple)) or not choices:
                raise BenchError(f"{where}: categorical needs a non-empty list of choices, got {choices!r}")
            probe = choices[0]
        else:
            raise BenchError(f"{where}: type must be float, int or categorical, got {kind!r}")
        check_config(compose([*overrides, override(key, probe)]))  # an unknown key names its nearest spelling
    known = getattr(EXPERIMENTS.get(cfg.experiment.name), "summary_metrics", None)
    if known is not None and not any(fnmatch.fnmatchcase(str(sw.metric), pattern) for pattern in known):
        raise BenchError(f"sweep.metric {sw.metric} is not a summary metric of experiment {cfg.experiment.name}; "
                         f"choose one of {', '.join(known)}")


def override(key: str, value: Any) -> str:
    """A command-line override for ``key`` (``repr`` keeps floats exact).

    >>> override("method.lr", 0.0001), override("ablation", "[flat_init]"), override("method.symmetry", True)
    ('method.lr=0.0001', 'ablation=[flat_init]', 'method.symmetry=true')
    """
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    return f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"


def tuned_config(params: Mapping[str, Any], header: str) -> str:
    """A ``_global_`` config file setting ``params``: config groups go into the defaults list, keys nest.

    >>> print(tuned_config({"method.lr": 0.001, "ablation": "[flat_init]"}, "best"), end="")
    # @package _global_
    # best
    defaults:
    - override /ablation:
      - flat_init
    method:
      lr: 0.001
    """
    groups = set(config_groups())
    body: dict[str, Any] = {}
    defaults = []
    for key, value in params.items():
        if key in groups:
            parsed = OmegaConf.create({"v": value if not isinstance(value, str) else _yaml_value(value)})["v"]
            defaults.append({f"override /{key}": OmegaConf.to_container(parsed) if OmegaConf.is_config(parsed)
                             else parsed})
            continue
        node = body
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    tree = ({"defaults": defaults} if defaults else {}) | body
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    return "# @package _global_\n" + comments + OmegaConf.to_yaml(OmegaConf.create(tree))


def _yaml_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


# ------------------------------------------------------------------------------------------------ storage, MLflow
def storage(cfg: DictConfig):
    """Optuna RDB storage with heartbeats: ``sweep.storage`` or ``sqlite:///optuna.db`` in the launch directory."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from sqlalchemy.exc import SQLAlchemyError

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    url = cfg.sweep.storage or f"sqlite:///{Path.cwd() / 'optuna.db'}"
    retry = (RetryHeartbeatStaleTrialCallback(max_retry=int(cfg.sweep.retry_failed)) if cfg.sweep.retry_failed
             else None)

    def on_stale(study, trial) -> None:
        stale_trial(cfg, trial)
        if retry is not None:
            retry(study, trial)

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        with tracking.store_lock(url):  # workers starting together on a new sqlite file create its tables once
            return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=int(cfg.sweep.heartbeat_s),
                              grace_period=int(cfg.sweep.grace_s), heartbeat_stale_trial_callback=on_stale)
    except (optuna.exceptions.StorageInternalError, ImportError, ValueError, SQLAlchemyError) as err:
        raise BenchError(f"cannot open Optuna storage {url}: {str(err).splitlines()[0]}; check sweep.storage (an "
                         "SQLAlchemy URL such as postgresql://user:pass@host/db, with its driver: pip install "
                         "'gan2shape-bench[postgres]')") from None


def stale_trial(cfg: DictConfig, trial) -> None:
    """A trial whose worker died: its MLflow run (if one started) ends FAILED with the reason."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if not run_id:
        return
    client = tracking.client(cfg.tracking.uri)
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_tag(run_id, "error", f"worker lost: no heartbeat from trial {trial.number} for {cfg.sweep.grace_s} s")
        client.set_terminated(run_id, status="FAILED")


def parent_run(cfg: DictConfig, study_name: str, storage_url: str, command: str) -> str:
    """The study's MLflow parent run: found by tag, created if missing (the earliest wins if workers race)."""
    client = tracking.client(cfg.tracking.uri)
    query = f"tags.`{PARENT_TAG}` = '{study_name}'"

    def existing():
        found = client.get_experiment_by_name(cfg.tracking.experiment)
        if found is None:
            return []
        runs = client.search_runs([found.experiment_id], filter_string=query, max_results=50)
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))

    runs = existing()
    if runs:
        return runs[0].info.run_id
    space = {f"space.{k}": str(plain(v)) for k, v in cfg.sweep.params.items()}
    tags = {PARENT_TAG: study_name, "optuna.storage": tracking_safe(storage_url), "command": command,
            "experiment": cfg.experiment.name, "method": cfg.method.name, "dataset": cfg.dataset.name}
    params = {**space, "sweep.metric": cfg.sweep.metric, "sweep.direction": cfg.sweep.direction,
              "sweep.n_trials": cfg.sweep.n_trials, "sweep.sampler": cfg.sweep.sampler, "sweep.pruner": cfg.sweep.pruner}
    mine = tracking.open_run(cfg.tracking.uri, cfg.tracking.experiment, f"sweep-{study_name}", params, tags).run_id
    winner = existing()[0].info.run_id  # includes ours; a racing worker's earlier run wins and ours goes
    if winner != mine:  # ended first, so that no deleted run is left RUNNING
        client.set_tag(mine, "note", f"duplicate of parent run {winner}, created by a worker starting at the same time")
        client.set_terminated(mine, status="KILLED")
        client.delete_run(mine)
    return winner


def tracking_safe(url: str) -> str:
    """A storage URL without its password.

    >>> tracking_safe("postgresql://bench:secret@db:5432/optuna")
    'postgresql://bench:***@db:5432/optuna'
    """
    import re

    return re.sub(r"://([^:/@]+):[^@]+@", r"://\1:***@", url)


# ------------------------------------------------------------------------------------------------ the command
def _sampler(sw: DictConfig, seed: int):
    import optuna

    if sw.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(sw.n_startup_trials))
    if sw.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise BenchError(f"sweep.sampler must be tpe or random, got {sw.sampler!r}")


def _pruner(sw: DictConfig):
    import optuna

    if sw.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(sw.n_startup_trials),
                                           n_warmup_steps=int(sw.n_warmup_steps))
    if sw.pruner in (None, "none"):
        return optuna.pruners.NopPruner()
    raise BenchError(f"sweep.pruner must be median or none, got {sw.pruner!r}")


def _count(study, states: tuple[str, ...], below: int | None = None) -> int:
    from optuna.trial import TrialState

    wanted = tuple(TrialState[s] for s in states)
    return sum(1 for t in study.get_trials(deepcopy=False, states=wanted) if below is None or t.number < below)


def sweep_command(overrides: list[str]) -> int:
    """``bench sweep sweep=<name> [overrides]``: run trials of the study until it has ``n_trials`` finished."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from benchmark import runner

    cfg = compose(overrides)
    if cfg.get("sweep") is None:
        from benchmark.config import group_options

        raise BenchError(f"bench sweep needs a search space: sweep=<name>, one of {', '.join(group_options('sweep'))}")
    sw = cfg.sweep
    if sw.direction not in ("minimize", "maximize") or not sw.params:
        raise BenchError("sweep.direction must be minimize or maximize and sweep.params must name at least one key")
    preflight(cfg)
    check_space(cfg, overrides)
    name, n_trials = str(sw.name), int(sw.n_trials)
    store = storage(cfg)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tracking.store_lock(store.url):
        study = optuna.create_study(study_name=name, storage=store, direction=sw.direction, load_if_exists=True)
    # a resumed worker continues the sampler's sequence; simultaneous workers need distinct sweep.seed values
    seed = int(sw.seed) + len(study.get_trials(deepcopy=False))
    study = optuna.load_study(study_name=name, storage=store, sampler=_sampler(sw, seed), pruner=_pruner(sw))
    command = " ".join(["bench sweep", *map(shlex.quote, overrides)])
    with tracking.store_lock(store.url):  # one parent run even when workers start together (sqlite)
        parent = parent_run(cfg, name, store.url, command)
    study.set_user_attr("mlflow_parent_run_id", parent)

    def objective(trial) -> float:
        if _count(study, ("COMPLETE", "PRUNED", "RUNNING", "WAITING"), below=trial.number) >= n_trials:
            trial.set_user_attr("surplus", True)
            study.stop()
            raise Surplus(f"trial {trial.number} started after the study had its {n_trials} trials")
        params = {k: suggest(trial, k, spec) for k, spec in search_space(plain(sw.params)).items()}
        trial_overrides = [*overrides, *(override(k, v) for k, v in params.items())]
        tcfg = compose(trial_overrides)

        def on_report(step: int, metrics: Mapping[str, float]) -> None:
            if sw.metric in metrics:
                trial.report(float(metrics[sw.metric]), step)
                if trial.should_prune():
                    raise Pruned(f"pruned at step {step}: running {sw.metric} {metrics[sw.metric]:.4g}")

        tags = {"mlflow.parentRunId": parent, "optuna.study": name, "optuna.trial": trial.number}
        try:
            summary = runner.run(tcfg, " ".join(["bench run", *map(shlex.quote, trial_overrides)]), tags=tags,
                                 on_report=on_report, on_start=lambda t: trial.set_user_attr("mlflow_run_id", t.run_id))
        except Pruned as err:
            raise optuna.TrialPruned(str(err)) from None
        if sw.metric not in summary:
            raise BenchError(f"sweep.metric {sw.metric} is not a summary metric of experiment {tcfg.experiment.name};"
                             f" it logs {', '.join(sorted(summary))}")
        return float(summary[sw.metric])

    if _count(study, FINISHED) < n_trials:
        study.optimize(objective, catch=(Surplus,), gc_after_trial=False,
                       callbacks=[MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                      TrialState.RUNNING, TrialState.WAITING))])
    done = _count(study, FINISHED)
    print(f"study {name}: {done}/{n_trials} trials finished "
          f"({_count(study, ('PRUNED',))} pruned, {_count(study, ('FAIL',))} failed) in {store.url}")
    if done >= n_trials:
        finish(cfg, study, parent, command)
    return 0


def finish(cfg: DictConfig, study, parent: str, command: str) -> Path:
    """Log the best trial to the parent run, end it FINISHED, and write the tuned config; returns its path."""
    best = study.best_trial
    sw = cfg.sweep
    path = Path(sw.best_config) if sw.best_config else CONFIG_DIR / "tuned" / f"{sw.name}.yaml"
    base = [o for o in shlex.split(command)[2:] if not o.startswith(("sweep", "hydra"))]
    split = cfg.experiment.get("split", "test")
    warning = ("\nWARNING: tuned on the test split (experiment.split=test); its test scores are not held out."
               if split == "test" else "")
    header = (f"Best trial of Optuna study {sw.name}: trial {best.number}, {sw.metric} = {best.value:.6g} "
              f"({sw.direction}) on the {split} split over {_count(study, FINISHED)} finished trials.{warning}\n"
              f"Made by: {command}\nUse: {' '.join(['bench run', f'tuned={path.stem}', *base])}")
    text = tuned_config({"method": cfg.method.name, **best.params}, header)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as err:
        raise BenchError(f"cannot write the best config to {path}: {err.strerror}; pass sweep.best_config=<path>")
    client = tracking.client(cfg.tracking.uri)
    tracker = tracking.Tracker(client, parent)
    tracker.log_metrics({f"best_{sw.metric}": best.value, "best_trial": best.number,
                         "n_trials_finished": _count(study, FINISHED), "n_trials_pruned": _count(study, ("PRUNED",))})
    tracker.set_tags({"best_params": ", ".join(f"{k}={v}" for k, v in best.params.items()),
                      "best_run_id": best.user_attrs.get("mlflow_run_id", "")})
    tracker.log_text(text, "best.yaml")
    if client.get_run(parent).info.status == "RUNNING":
        client.set_terminated(parent, status="FINISHED")
    print(f"best: trial {best.number}, {sw.metric} = {best.value:.6g}, {best.params}; wrote {path}")
    return path
