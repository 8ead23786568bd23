"""The ``bench`` command: ``bench <command> [hydra overrides]``.

Commands: ``run`` (evaluate; ``-m`` for Hydra multirun), ``list`` (what is registered), ``data`` (generate or
check a dataset), ``report`` (tables from the MLflow runs). User mistakes print ``bench: error: ...`` on one line
and exit with status 2.
"""

from __future__ import annotations

import signal
import sys
from typing import Callable

from benchmark.errors import BenchError

USAGE = """usage: bench <command> [overrides ...]

commands:
  run      evaluate a method on a dataset and log it to MLflow (bench run --help for groups and options)
  list     print registered methods, datasets, experiments, mask providers and config group options
  data     generate or check a dataset: bench data dataset=synface_proc
  report   build tables from the MLflow runs into reports/: bench report
  sweep    Optuna hyperparameter search, trials logged to MLflow: bench sweep sweep=ellipsoid_prior
  train    train a model (stylegan2*, unsup3d*, hologan, identity, yaw_regressor, ...): bench train model=hologan
  convert  StyleGAN2 checkpoint (.pt, .pkl) to safetensors: bench convert SRC DST.safetensors
  sample   StyleGAN2 samples and their W latents: bench sample n=16 out_dir=samples
  invert   project real images into W (latents GAN2Shape reads): bench invert input=<image or folder>

Overrides use Hydra syntax: group=option, key=value, +new_key=value; `bench run -m` sweeps comma-separated values.
"""


def _hydra_task(cfg) -> dict[str, float]:
    from hydra.core.hydra_config import HydraConfig

    from benchmark import runner

    command = " ".join(["bench run", *HydraConfig.get().overrides.task])
    started: dict[str, str] = {}
    try:
        metrics = runner.run(cfg, command=command, on_start=lambda tracker: started.update(run=tracker.run_id))
    except BenchError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        sys.exit(2)
    scores = ", ".join(f"{k[:-5]} {v:.4g}" for k, v in metrics.items() if k.endswith("_mean"))
    print(f"bench run {cfg.method.name} on {cfg.dataset.name} ({int(metrics.get('n_images', 0))} images): {scores}; "
          f"MLflow run {started.get('run', '?')}")
    return metrics


def cmd_run(args: list[str]) -> int:
    import hydra

    from benchmark.config import CONFIG_DIR, ROOT_CONFIG, validate_overrides

    flags = {"-m", "--multirun"}
    passthrough = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--resolve", "--package", "-p"}
    if not passthrough & set(args):
        from benchmark.runner import preflight

        for cfg in validate_overrides([a for a in args if a not in flags]):
            preflight(cfg)
    main = hydra.main(config_path=str(CONFIG_DIR), config_name=ROOT_CONFIG, version_base="1.3")(_hydra_task)
    argv, sys.argv = sys.argv, ["bench run", *args]
    try:
        main()
    finally:
        sys.argv = argv
    return 0


def cmd_list(args: list[str]) -> int:
    from benchmark.config import config_groups, group_options
    from benchmark.registry import DATASETS, EXPERIMENTS, MASKS, METHODS

    for registry in (METHODS, DATASETS, EXPERIMENTS, MASKS):
        print(f"{registry.kind}s: {', '.join(registry.names())}")
    for group in config_groups():
        print(f"config group {group}: {', '.join(group_options(group))}")
    return 0


def cmd_data(args: list[str]) -> int:
    from pathlib import Path

    from benchmark import tracking
    from benchmark.config import compose
    from benchmark.registry import DATASETS
    from benchmark.runner import plain

    cfg = compose(args)
    ds = cfg.dataset
    factory = DATASETS.get(ds.name)
    stats = tracking.flatten(factory.prepare(str(Path(ds.root)), **plain(ds.generate), **plain(ds.load)))
    shown = {k: v for k, v in stats.items() if k.endswith(("size", "images", "images_per_second", "seconds")) or
             k in ("train", "test")}
    print(f"dataset {ds.name} at {Path(ds.root).resolve()}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return 0


def cmd_report(args: list[str]) -> int:
    from benchmark import report
    from benchmark.config import compose

    cfg = compose(args)
    written = report.build(cfg)
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_convert(args: list[str]) -> int:
    """``bench convert SRC DST.safetensors``: a rosinality .pt or NVlabs .pkl StyleGAN2 checkpoint to our format."""
    if len(args) != 2 or any(a.startswith("-") for a in args):
        raise BenchError("usage: bench convert SRC DST.safetensors  (SRC: rosinality .pt or NVlabs .pkl; the "
                         "architecture goes to DST.json beside the weights)")
    from methods.stylegan2.checkpoints import convert_checkpoint

    print(f"wrote {convert_checkpoint(args[0], args[1])}")
    return 0


def cmd_train(args: list[str]) -> int:
    from benchmark.train import train_command

    return train_command(args)


def cmd_sweep(args: list[str]) -> int:
    from benchmark.sweep import sweep_command

    return sweep_command(args)


def cmd_sample(args: list[str]) -> int:
    from benchmark.sampling import sample_command

    return sample_command(args)


def cmd_invert(args: list[str]) -> int:
    from benchmark.sampling import invert_command

    return invert_command(args)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "run": cmd_run, "list": cmd_list, "data": cmd_data, "report": cmd_report, "convert": cmd_convert,
    "train": cmd_train, "sample": cmd_sample, "invert": cmd_invert, "sweep": cmd_sweep,
}


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"bench: error: unknown command '{command}'; valid commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    # SIGTERM (kill, a scheduler's time limit) ends like Ctrl-C: open MLflow runs are marked FAILED, not left RUNNING
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return COMMANDS[command](rest)
    except BenchError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
