"""The ``bench`` command: ``bench <command> [hydra overrides]``.

Commands: ``run`` (evaluate; ``-m`` for Hydra multirun), ``list`` (what is registered), ``data`` (generate or
check a dataset), ``report`` (tables from the MLflow runs). User mistakes print ``bench: error: ...`` on one line
and exit with status 2.
"""

from __future__ import annotations

import signal
import sys
from typing import Callable

from core.errors import BenchError

USAGE = """usage: bench <command> [overrides ...]

commands:
  run      evaluate a method on a dataset and log it to MLflow (bench run --help for groups and options)
  list     print registered methods, datasets, experiments, mask providers and config group options
  data     generate or check a dataset: bench data dataset=synface_proc
  report   build tables from the MLflow runs into reports/: bench report
  sweep    Optuna hyperparameter search, trials logged to MLflow: bench sweep sweep=ellipsoid_prior
  train    train a model (supervised, unsup3d*, stylegan2*, hologan, identity, ...): bench train model=supervised
  convert  StyleGAN2 checkpoint (.pt, .pkl) to safetensors: bench convert SRC DST.safetensors
  sample   StyleGAN2 samples and their W latents: bench sample n=16 out_dir=samples
  invert   project real images into W (latents GAN2Shape reads): bench invert input=<image or folder>

Overrides use Hydra syntax: group=option, key=value, +new_key=value; `bench run -m` sweeps comma-separated values.
`bench <command> --help` says more about each command.
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
        from benchmark.config import check_creatable, hydra_output_dir
        from benchmark.runner import preflight

        plain_args = [a for a in args if a not in flags]
        multirun = bool(flags & set(args))
        hydra_args = [a for a in plain_args if a.lstrip("+~").startswith(("hydra.", "hydra/"))]  # place the output
        check_creatable(hydra_output_dir(hydra_args, multirun), "hydra.sweep.dir" if multirun else "hydra.run.dir")
        for cfg in validate_overrides(plain_args):
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
    from core.registry import DATASETS, EXPERIMENTS, MASKS, METHODS

    for registry in (METHODS, DATASETS, EXPERIMENTS, MASKS):
        print(f"{registry.kind}s: {', '.join(registry.names())}")
    for group in config_groups():
        print(f"config group {group}: {', '.join(group_options(group))}")
    return 0


def cmd_data(args: list[str]) -> int:
    from pathlib import Path

    from benchmark import tracking
    from benchmark.config import compose
    from benchmark.runner import plain
    from core.registry import DATASETS

    cfg = compose(args)
    ds = cfg.dataset
    factory = DATASETS.get(ds.name)
    stats = tracking.flatten(factory.prepare(str(Path(ds.root)), **plain(ds.generate), **plain(ds.load)))
    shown = {k: v for k, v in stats.items() if k.endswith(("size", "images", "images_per_second", "seconds")) or
             k in ("train", "test")}
    print(f"dataset {ds.name} at {Path(ds.root).resolve()}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return 0


def cmd_report(args: list[str]) -> int:
    from benchmark.config import compose
    from benchmark.report_study import build

    cfg = compose(args)
    written = build(cfg)
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


# `bench <command> --help` for the commands other than `run` (whose help is Hydra's): usage, what the overrides
# mean, and the options of the config groups the command composes.
HELP: dict[str, tuple[str, tuple[str, ...]]] = {
    "list": ("usage: bench list\n  print the registered plugins and the options of every config group", ()),
    "data": ("usage: bench data [dataset=<name>] [dataset.root=<folder>] [dataset.generate.<key>=<value> ...]\n"
             "  generate a dataset (synface_proc: train/val/test splits; rerun to resume) or check a folder "
             "dataset", ("dataset",)),
    "report": ("usage: bench report [tracking.experiment=<name>] [report.out_dir=<folder>] [tracking.uri=<uri>]\n"
               "  tables (md, tex, html) and plots from the finished MLflow runs of an experiment", ()),
    "sweep": ("usage: bench sweep sweep=<search space> [overrides ...]\n"
              "  Optuna search over the space's params on the val split; rerun to resume, start again elsewhere "
              "for more workers", ("sweep", "method", "preset")),
    "train": ("usage: bench train model=<model> [dataset=<name>] [train.iterations=N] [train.out_dir=<folder>] "
              "[model.<key>=<value> ...]\n  train a model, resumable (rerun the same command), tracked in MLflow, "
              "exported to train.export with a model card", ("model", "dataset", "device")),
    "convert": ("usage: bench convert SRC DST.safetensors\n  a rosinality .pt or NVlabs .pkl StyleGAN2 checkpoint to "
                "safetensors (the architecture goes to DST.json)", ()),
    "sample": ("usage: bench sample [n=16] [out_dir=<folder>] [truncation=1.0] [gan.checkpoint=<weights>]\n"
               "  StyleGAN2 samples and their W latents", ()),
    "invert": ("usage: bench invert input=<image or folder> [out_dir=<folder>] [gan.checkpoint=<weights>]\n"
               "  project real images into W (the latents GAN2Shape reads)", ()),
}


def command_help(command: str) -> str:
    """The ``--help`` text of a command other than ``run``."""
    from benchmark.config import group_options

    usage, groups = HELP[command]
    lines = [usage] + [f"  {g}: {', '.join(group_options(g))}" for g in groups]
    return "\n".join(lines) + "\n\nOverrides use Hydra syntax: group=option, key=value, +new_key=value."


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
    if command in HELP and any(a in {"-h", "--help"} for a in rest):
        print(command_help(command))
        return 0
    # SIGTERM (kill, a scheduler's time limit) ends like Ctrl-C: open MLflow runs are marked FAILED, not left RUNNING
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return COMMANDS[command](rest)
    except BenchError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
