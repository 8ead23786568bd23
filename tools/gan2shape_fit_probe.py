"""Does GAN2Shape's instance fit improve on its start? SIDE / MAD before and after, on the first N *validation* images.

    python tools/gan2shape_fit_probe.py N PRETRAINED [--step3 both|image|projected] [--step3-nets netD,netA,...]
                                        [--trace-every K] [--threads T]
                                        [key=value ...]

``PRETRAINED`` is a GAN2Shape export (``bench train model=gan2shape_pretrain_cpu``, or Unsup3d's networks converted
with ``--from-unsup3d``); D starts as loaded (``shape_prior.kind=pretrained``). Every image runs the schedule of
``preset=fast`` unless overridden (``key=value`` are config overrides, e.g. ``method.lr=3e-5``). ``--step3`` keeps
Step 3's terms: both (the method), the input image only, or the projected samples only; ``--step3-nets`` limits what
Step 3 trains. Printed per image: SIDE / MAD of the one-pass start and of the fit, and MAD every ``--trace-every``
Step-3 iterations (20); then the means, and the mean SIDE / MAD at each traced iteration (to choose Step 3's length
on validation images). Used for weights/README.md, "GAN2Shape on 2 CPU cores".
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmark.config import compose
from benchmark.runner import method_args, open_split
from methods.base import PrepareContext
from methods.gan2shape import fitting, steps
from methods.gan2shape.fitting import ImageTask, fit_image
from methods.gan2shape.method import GAN2Shape, save_networks
from methods.gan2shape.model import STEP_NETS, photo_forward
from methods.gan2shape.pretrain import init_from_unsup3d
from methods.gan2shape.steps import gan_images
from metrics.shape import shape_metrics


def score(method: GAN2Shape, image: torch.Tensor, depth: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        fwd = photo_forward(method.nets, image, method.geom)
    s = shape_metrics(fwd.render.view_depth, depth, fwd.render.valid[:, 0])
    return float(s["side"][0]), float(s["mad"][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("n", type=int)
    parser.add_argument("pretrained")
    parser.add_argument("--from-unsup3d", action="store_true", help="PRETRAINED is an Unsup3d export (E untrained)")
    parser.add_argument("--step3", choices=["both", "image", "projected"], default="both")
    parser.add_argument("--step3-nets", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trace-every", type=int, default=20, help="Step-3 iterations between traced scores")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    torch.set_num_threads(args.threads)
    pretrained = args.pretrained
    if args.from_unsup3d:
        torch.manual_seed(0)
        nets, geom = init_from_unsup3d(pretrained, latent_dim=256)
        pretrained = str(save_networks(Path(tempfile.mkdtemp()) / "from_unsup3d.safetensors", nets,
                                       {"command": f"init_from_unsup3d({args.pretrained})"}, geom))
    cfg = compose(["method=gan2shape", "preset=fast", f"method.pretrained={pretrained}",
                   "method.shape_prior.kind=pretrained", "method.perceptual=none", "method.progress=false",
                   *args.overrides])
    method = GAN2Shape(**method_args(cfg))
    method.prepare(PrepareContext(torch.device("cpu"), 0, Path(tempfile.mkdtemp()), None, cfg.dataset.name))
    if args.step3_nets:
        STEP_NETS[3] = tuple(args.step3_nets.split(","))
    full_step3 = steps.step3

    def step3(*a, **k):
        loss, fwd = full_step3(*a, **k)
        total = {"both": loss.total, "image": loss.image.total, "projected": loss.projected}[args.step3]
        return steps.Step3Loss(total, loss.image, loss.projected), fwd

    fitting.step3 = step3
    ds = open_split(cfg, "val", args.n)
    pairs, traces, start = [], [], time.time()
    for i in range(len(ds)):
        item = ds[i]
        image, depth = item["image"][None], item["depth"][None]
        w = method.latents({"image": image}, [method.cache / item["name"]])
        method.nets.load_state_dict(method.initial_state)
        before, trace, count = score(method, image, depth), [], [0]

        def on_iter(stage: int, step: str, loss: float) -> None:
            if step == "step3":
                count[0] += 1
                if count[0] % args.trace_every == 0:
                    trace.append(score(method, image, depth))

        with torch.no_grad():
            gan_image = gan_images(method.G, w, method.image_size)
        fit_image(method.nets, method.G, ImageTask(image, w, gan_image), method.view_prior, method.geom, method.hp,
                  method.schedule, method.optim, rng=torch.Generator().manual_seed(i), on_iter=on_iter,
                  perceptual=method.perceptual_fn, disc_feature=method.disc_feature)
        after = score(method, image, depth)
        pairs.append((before, after))
        traces.append(trace)
        print(f"{item['name']}: start {before[0]:.3f} / {before[1]:.2f}  fit {after[0]:.3f} / {after[1]:.2f}  "
              f"MAD in Step 3 {[round(t[1], 2) for t in trace]}", flush=True)
    b, a = (torch.tensor([p[k] for p in pairs]).mean(0) for k in (0, 1))
    print(f"mean of {len(pairs)}: start {b[0]:.3f} / {b[1]:.2f}  fit {a[0]:.3f} / {a[1]:.2f}  "
          f"({time.time() - start:.0f} s)")
    curve = torch.tensor(traces).mean(0)  # (points, 2): the mean SIDE / MAD after every trace_every Step-3 iterations
    print("mean over Step 3 (iterations: SIDE / MAD): " + ", ".join(
        f"{(k + 1) * args.trace_every}: {s:.3f} / {m:.2f}" for k, (s, m) in enumerate(curve.tolist())))


if __name__ == "__main__":
    main()
