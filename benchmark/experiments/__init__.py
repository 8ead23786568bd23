"""Built-in experiments. Importing this package registers them in ``core.registry.EXPERIMENTS``.

An experiment is a function ``fn(ctx: RunContext) -> dict[str, float]`` that logs to ``ctx.tracker`` and returns
its summary metrics. Two optional attributes let mistakes surface before any MLflow run opens:
``fn.summary_metrics``, the names it returns (shell-style patterns allowed, e.g. ``time_*_s``), so that
``bench sweep`` refuses an unknown ``sweep.metric``; ``fn.reads_split = True`` when it reads ``experiment.split``
of the dataset, so that a missing dataset is refused.
"""

from benchmark.experiments import face_rotation, reconstruct, shape_recon  # noqa: F401  (registration)
