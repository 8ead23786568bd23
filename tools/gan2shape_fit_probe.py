"""Does GAN2Shape's instance fit improve on its start? SIDE / MAD before and after, on the first N *validation* images.

    python tools/gan2shape_fit_probe.py N PRETRAINED [--step3 both|image|projected] [--step3-nets netD,netA,...]
                                        [--trace-every K] [--threads T] [--preset fast|cpu]
                                        [--collect gan|true|refined|free|pseudo] [--refine-steps K]
                                        [--refine-lr LR] [key=value ...]

``PRETRAINED`` is a GAN2Shape export (``bench train model=gan2shape_pretrain_cpu``, or Unsup3d's networks converted
with ``--from-unsup3d``); D starts as loaded (``shape_prior.kind=pretrained``). Every image runs the schedule of
``--preset`` (fast) unless overridden (``key=value`` are config overrides, e.g. ``method.lr=3e-5``). ``--step3`` keeps
Step 3's terms: both (the method), the input image only, or the projected samples only; ``--step3-nets`` limits what
Step 3 trains. Printed per image: SIDE / MAD of the one-pass start and of the fit, and MAD every ``--trace-every``
Step-3 iterations (20); then the means, and the mean SIDE / MAD at each traced iteration (to choose Step 3's length
on validation images). Used for weights/README.md, "GAN2Shape on 2 CPU cores".

``--collect`` chooses what the collect pass gives Step 3: ``gan`` E's projections (the method); ``true``
(synface_proc) the same face re-rendered by the dataset's renderer at the pseudo samples' views and lights
(``gan2shape_gan_probe.TrueViews``): GAN2Shape with a perfect GAN; ``refined`` E's projections refined by
``--refine-steps`` Adam steps on their W offsets at ``--refine-lr`` (``steps.refine_projection``); ``free`` the same
from zero offsets; ``pseudo`` the pseudo samples themselves (nothing new: the control). Except with ``gan`` and
``refined``, Step 2 (training E) serves nothing: pass ``presets.gan2shape.schedule.stage_len=[60,0,10]`` to skip it.
weights/README.md, "GAN2Shape on 2 CPU cores", point 7, has what they gave.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import torch

from benchmark.config import compose
from benchmark.runner import method_args, open_split
from methods.base import PrepareContext
from methods.common.gan_recipe import image_grid
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
    parser.add_argument("--preset", default="fast", help="the preset whose schedule and settings the fit runs")
    parser.add_argument("--collect", choices=["gan", "true", "refined", "free", "pseudo"], default="gan",
                        help="Step 3's targets: the GAN's projections by E (the method), true re-renders, E's "
                             "projections refined by --refine-steps Adam steps on the offsets (lr --refine-lr), "
                             "free offsets fitted so from zero, or the pseudo samples themselves (nothing new)")
    parser.add_argument("--refine-steps", type=int, default=100)
    parser.add_argument("--refine-lr", type=float, default=0.1)
    parser.add_argument("--pseudo-albedo", choices=["network", "image"], default=None,
                        help="texture of the pseudo samples, over the one PRETRAINED's card sets")
    parser.add_argument("--save-collect", default=None, help="folder for each image's first collect batch: "
                        "<name>_<collect>.png, the pseudo samples above what Step 3 fits")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    torch.set_num_threads(args.threads)
    pretrained = args.pretrained
    if args.from_unsup3d:
        torch.manual_seed(0)
        nets, geom = init_from_unsup3d(pretrained, latent_dim=256)
        pretrained = str(save_networks(Path(tempfile.mkdtemp()) / "from_unsup3d.safetensors", nets,
                                       {"command": f"init_from_unsup3d({args.pretrained})"}, geom))
    cfg = compose(["method=gan2shape", f"preset={args.preset}", f"method.pretrained={pretrained}",
                   "method.shape_prior.kind=pretrained", "method.perceptual=none", "method.progress=false",
                   *args.overrides])
    method = GAN2Shape(**method_args(cfg))
    method.prepare(PrepareContext(torch.device("cpu"), 0, Path(tempfile.mkdtemp()), None, cfg.dataset.name))
    if args.pseudo_albedo:
        method.hp = replace(method.hp, pseudo_albedo=args.pseudo_albedo)
    if args.step3_nets:
        STEP_NETS[3] = tuple(args.step3_nets.split(","))
    full_step3 = steps.step3

    def step3(*a, **k):
        loss, fwd = full_step3(*a, **k)
        total = {"both": loss.total, "image": loss.image.total, "projected": loss.projected}[args.step3]
        return steps.Step3Loss(total, loss.image, loss.projected), fwd

    fitting.step3 = step3
    ds = open_split(cfg, "val", args.n)
    current = {}  # the image being fitted (index, item, saved) and the model's view of it at the latest pseudo samples
    full_make_pseudo, full_step2 = fitting.make_pseudo, fitting.step2
    truth = None
    if args.collect == "true":
        from gan2shape_gan_probe import TrueViews

        truth = TrueViews(method.geom.renderer.rot_range_deg, ds)

    def make_pseudo(canon, *a, **k):
        current["view"] = canon.view
        return full_make_pseudo(canon, *a, **k)

    def targets(nets, G, w, gan_image, pseudo, hp) -> torch.Tensor:
        """What the collect pass gives Step 3 for ``pseudo`` under ``args.collect``."""
        if args.collect == "gan":
            return full_step2(nets, G, w, gan_image, pseudo, hp, None)[1]
        if args.collect == "pseudo":
            return pseudo.images
        if args.collect == "true":
            images, moved = truth.render(current["index"], current["item"], current["view"], pseudo)
            pseudo.masks.copy_(moved.masks)  # the collect pass keeps these tensors for Step 3
            pseudo.views.copy_(moved.views)
            return images
        if args.collect == "refined":
            delta_w = steps.project(nets, G, w, pseudo.images, gan_image, hp)[1]
        else:  # free
            delta_w = w.new_zeros(pseudo.images.shape[0], w.shape[1])
        return steps.refine_projection(G, w, delta_w, pseudo.images, pseudo.masks, hp, args.refine_steps,
                                       args.refine_lr, method.disc_feature)

    def step2(nets, G, w, gan_image, pseudo, hp, disc_feature):
        if torch.is_grad_enabled():  # training E (Step 2): unchanged
            return full_step2(nets, G, w, gan_image, pseudo, hp, disc_feature)
        images = targets(nets, G, w, gan_image, pseudo, hp)  # the collect pass
        if args.save_collect and not current["saved"]:
            current["saved"] = True
            grid = image_grid(torch.cat([pseudo.images, images]), nrow=pseudo.images.shape[0])
            iio.imwrite(Path(args.save_collect) / f"{current['item']['name']}_{args.collect}.png", grid)
        return None, images

    fitting.make_pseudo, fitting.step2 = make_pseudo, step2
    if args.save_collect:
        Path(args.save_collect).mkdir(parents=True, exist_ok=True)
    pairs, traces, start = [], [], time.time()
    for i in range(len(ds)):
        item = ds[i]
        current.update(index=i, item=item, saved=False)
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
