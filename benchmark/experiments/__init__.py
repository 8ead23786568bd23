"""Built-in experiments. Importing this package registers them in ``core.registry.EXPERIMENTS``.

An experiment is a function ``fn(ctx: RunContext) -> dict[str, float]`` that logs to ``ctx.tracker`` and returns
its summary metrics.
"""

from benchmark.experiments import face_rotation, reconstruct, shape_recon  # noqa: F401  (registration)
