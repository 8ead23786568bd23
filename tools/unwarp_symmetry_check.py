"""Does the mirrored render of an input-unwarped albedo prefer the true view? (weights/README.md point 15)

``probe.albedo_unwarp`` of ``tools/unsup3d_probe.py`` takes the canonical albedo from the input image itself, through
the depth and view. The plain render then returns the input whatever they are, and only the mirrored render
carries a signal. This check scores that mirrored render (L1 in [-1, 1], inside the render mask) on 32 held-out
training images, with the true canonical light, for views on the line from frontal (0) to the true view (1), and
with two canonical depths: the identity's true frontal depth (sphere-traced) and the depth network fitted to
GAN2Shape's ellipsoid (``fit_ellipsoid`` of the probe), plus the mean of those 32 true depths made symmetric (one
mean face for all: is a roughly right shape enough?). It reports the error on the dataset's head pixels and on
every rendered pixel (the camera-fixed background included), then the size of dL/d(view) per component for 16
images at the frontal view with the ellipsoid depth (which part of the view the loss moves first), and for the
ellipsoid and mean depths the correlation over the 32 images of the per-image -dL/d(yaw) at the frontal view with the
true yaw, with the plain L1 and with the box-blurred L1 term added (``lam_coarse`` 1): does the first step point
the right way?

    python tools/unwarp_symmetry_check.py [--data data/synface_proc] [--reliable] [--view-only STEPS]

``--view-only STEPS`` instead trains the view network alone for STEPS Adam steps (lr 3e-4, batch 16, training
images), with the depth frozen at the fitted ellipsoid and the true light, and prints every 50 steps how its yaw on
the 128 held-out images follows the truth (correlation, spread in degrees, slope of a line fit): can the views
learn from this loss when nothing else moves?
"""

from __future__ import annotations

import argparse
import functools
import json
import types
from pathlib import Path

import numpy as np
import torch

from benchmark.datasets.sdf_faces import render_faces
from benchmark.datasets.synface_proc import identity_table
from methods.unsup3d.losses import unsup3d_loss
from methods.unsup3d.training import as_float_images, batch_indices, create_state, split_settings

import unsup3d_probe as probe  # noqa: E402  (tools/ is on sys.path when run as a script)


def mirrored_error(net, image, depth, view, light, head) -> tuple[float, float]:
    """Mean absolute error of the mirrored render on head pixels and on all rendered pixels."""
    if depth is not None:
        net.canonical_depth = lambda _image: (depth, depth)
    net.netV.forward = lambda _x: view
    net.netL.forward = lambda _x: light
    with torch.no_grad():
        out = net(image)
    mask = out.mask[1, 0]
    err = (out.recon_image[1] - image[0] * (out.mask[1] > 0)).abs().mean(0)  # the mask may hold weights
    on_head = head * mask
    return float((err * on_head).sum() / on_head.sum()), float((err * mask).sum() / mask.sum())


def train_view_only(net, data: dict, steps: int, flip: float) -> None:
    """Adam on the view network alone (see ``--view-only``), reporting every 50 steps."""
    train, score = data["train"], data["score"]
    train_light = probe.true_view_light(train["view"], train["light"])[1]
    score_light = probe.true_view_light(score["view"], score["light"])[1]
    true_yaw = score["view"][:, 0].numpy()
    opt = torch.optim.Adam(net.netV.parameters(), lr=3e-4)
    for step in range(steps + 1):
        if step % 50 == 0:
            with torch.no_grad():
                yaw = []
                for lo in range(0, len(true_yaw), 64):
                    net.netL.forward = lambda _x, lo=lo: score_light[lo:lo + 64]
                    yaw.append(net(as_float_images(score["image"][lo:lo + 64])).view[:, 1] * 60)
            yaw = torch.cat(yaw).numpy()
            print(f"view-only step {step}: yaw correlation {np.corrcoef(yaw, true_yaw)[0, 1]:.2f}, spread "
                  f"{yaw.std():.1f} deg, slope {np.polyfit(true_yaw, yaw, 1)[0]:.2f}", flush=True)
        if step == steps:
            break
        idx = batch_indices(len(train["image"]), 16, step, 0)
        net.netL.forward = lambda _x, idx=idx: train_light[idx]
        out = net(as_float_images(train["image"][idx]))
        loss = unsup3d_loss(out, None, 0.0, flip, 0.0, 0.0, 0.0, 9).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/synface_proc")
    ap.add_argument("--view-only", type=int, default=0, metavar="STEPS")
    ap.add_argument("--reliable", action="store_true", help="probe.unwarp_reliable: weight the mirrored render by "
                    "how well each sampled canonical pixel was seen in the input")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    settings = dict(probe.DEFAULTS, depth_init_gain=0, lam_depth_curv=0.1, use_conf=False, hard_symmetry=True,
                    xy_range=0.0 if args.view_only else 0.1)
    model_cfg, train_cfg, _ = split_settings(settings)
    data = probe.load(Path(args.data), 0)
    score = data["score"]
    net = create_state(model_cfg, train_cfg, "cpu", seed=0).net
    probe.fit_ellipsoid(net, data["train"]["image"], 200)
    net.forward = types.MethodType(functools.partial(probe.unwarp_forward, floor=0.2, reliable=args.reliable), net)
    if args.view_only:
        train_view_only(net, data, args.view_only, train_cfg.lam_flip)
        return
    views, lights = probe.true_view_light(score["view"], score["light"])
    images = as_float_images(score["image"][:32])
    heads = score["head_mask"][:32].float()

    imgs16 = images[:16]
    view = torch.zeros(16, 6, requires_grad=True)
    net.netV.forward = lambda _x: view
    net.netL.forward = lambda _x: lights[:16]
    out = net(imgs16)
    loss = unsup3d_loss(out, None, 0.0, train_cfg.lam_flip, 0.0, 0.0, 0.0, train_cfg.coarse_kernel).total
    (grad,) = torch.autograd.grad(loss, view)
    names = ("pitch", "yaw", "roll", "tx", "ty", "tz")
    print("ellipsoid depth, frontal view: mean |dL/dview| "
          + ", ".join(f"{n} {g:.4f}" for n, g in zip(names, grad.abs().mean(0).tolist())))

    cfg = json.loads((Path(args.data) / "meta.json").read_text())["config"]
    table = identity_table(cfg, "train")
    front = render_faces(table[score["identity"][:32].numpy()], np.zeros((32, 3)),
                         np.tile([[1.0, 0, 0, 0]], (32, 1)).astype(np.float32), torch.zeros(32, 3, 64, 64), 64)
    true_depth = front["depth"].float()
    mean_depth = true_depth.mean(0, keepdim=True)
    mean_depth = 0.5 * (mean_depth + mean_depth.flip(-1))
    fitted = net.canonical_depth
    for name in ("ellipsoid", "mean", "true"):
        for frac in (0.0, 0.5, 1.0):
            errs = []
            for i in range(32):
                depth = {"true": true_depth[i:i + 1], "mean": mean_depth}.get(name)
                if depth is None:
                    net.canonical_depth = fitted
                errs.append(mirrored_error(net, images[i:i + 1], depth, views[i:i + 1] * frac, lights[i:i + 1],
                                           heads[i]))
            head, every = np.mean(errs, axis=0)
            print(f"{name} depth, view x {frac}: mirrored-render error on the head {head:.3f}, "
                  f"on every rendered pixel {every:.3f}")
    true_yaw = score["view"][:32, 0].numpy()
    for name in ("ellipsoid", "mean"):
        for coarse in (0.0, 1.0):
            net.canonical_depth = fitted
            pull = yaw_pull(net, images, lights, mean_depth if name == "mean" else None, coarse, train_cfg.lam_flip)
            print(f"{name} depth, lam_coarse {coarse:g}: correlation of -dL/dyaw at the frontal view with the true "
                  f"yaw {np.corrcoef(pull, true_yaw)[0, 1]:.2f}")


def yaw_pull(net, images, lights, depth, coarse: float, flip: float) -> np.ndarray:
    """Per-image ``-dL/d(yaw)`` at the frontal view (``depth`` None: the network's)."""
    pulls = []
    for i in range(len(images)):
        if depth is not None:
            net.canonical_depth = lambda _image: (depth, depth)
        view = torch.zeros(1, 6, requires_grad=True)
        net.netV.forward = lambda _x: view
        net.netL.forward = lambda _x, i=i: lights[i:i + 1]
        out = net(images[i:i + 1])
        loss = unsup3d_loss(out, None, 0.0, flip, 0.0, 0.0, coarse, 9).total
        (grad,) = torch.autograd.grad(loss, view)
        pulls.append(-float(grad[0, 1]))
    return np.array(pulls)


if __name__ == "__main__":
    main()
