"""How far does Rotation-GAN with refined offsets turn faces, and at what cost to identity, per refinement step?

    python tools/gan2shape_rotation_probe.py [--sources 6] [--first-seed 2000000] [--steps 500] [--trace-every 50]
                                             [--threads 1] [key=value ...]

Runs the face-rotation experiment's scoring (20 yaws in -20 ... 20 degrees, the shared yaw regressor, the identity
network) for GAN2Shape on ``preset=cpu`` with ``method.rotation.mode=gan_refined`` on GAN sources of seeds
``--first-seed`` ... (2,000,000+ by default: not the scored sources 0 ... 99, so the step count is chosen on other
faces), and reads the refined projections every ``--trace-every`` Adam steps of one ``--steps`` run
(``GAN2Shape.rotate``'s ``on_refine_step``). Printed per traced step: identity mean, yaw slope,
yaw error. The fits are the cached ones of ``outputs/work`` (made on the first call, like ``bench run``).
``key=value`` are config overrides (e.g. ``method.rotation.refine_lr=0.03``). Used for weights/README.md's choice of
``rotation.refine_steps`` and ``refine_lr``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmark.config import compose
from benchmark.experiments.face_rotation import reached_yaw_summary, score_rotation, yaw_grid
from benchmark.runner import method_args
from methods.base import PrepareContext
from methods.common.yaw import load_yaw_regressor
from methods.gan2shape.method import GAN2Shape
from methods.gan2shape.steps import gan_images
from metrics.identity import identity_summary, load_identity_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", type=int, default=6)
    parser.add_argument("--first-seed", type=int, default=2_000_000)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--trace-every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    torch.set_num_threads(args.threads)
    cfg = compose(["experiment=face_rotation", "method=gan2shape", "preset=cpu", "method.rotation.mode=gan_refined",
                   f"method.rotation.refine_steps={args.steps}", "method.parallel_images=1", "method.progress=false",
                   *args.overrides])
    ex = cfg.experiment
    method = GAN2Shape(**method_args(cfg))
    method.prepare(PrepareContext(torch.device("cpu"), int(cfg.seed), Path("outputs/work"), None, cfg.dataset.name))
    traced: dict[int, list[torch.Tensor]] = {}

    def keep(n: int, k: int, latents: torch.Tensor) -> None:
        if k % args.trace_every == 0:
            with torch.no_grad():
                traced.setdefault(k, []).append(gan_images(method.G, latents, method.image_size))

    yaw = yaw_grid(ex.yaw_min_deg, ex.yaw_max_deg, ex.angles)
    seeds = list(range(args.first_seed, args.first_seed + args.sources))
    rot = method.rotate(seeds, yaw, on_refine_step=keep)
    identity, regressor = load_identity_model(cfg.metrics.identity.model_path), load_yaw_regressor(ex.yaw_regressor)
    print(f"{len(seeds)} sources (seeds {seeds[0]}+) x {len(yaw)} yaws, lr {cfg.method.rotation.refine_lr}")
    for k in sorted(traced):
        score, reached = score_rotation(identity, regressor, rot.source, torch.stack(traced[k]).clamp(-1, 1))
        yaw_fig = reached_yaw_summary(reached, yaw)
        print(f"step {k:4d}: identity {identity_summary(score)['identity_mean']:.3f}, "
              f"yaw slope {yaw_fig['yaw_slope']:.2f}, yaw error {yaw_fig['yaw_error_mean_deg']:.1f} deg")


if __name__ == "__main__":
    main()
