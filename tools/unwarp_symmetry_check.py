"""Does the mirrored render of an input-unwarped albedo prefer the true view? (weights/README.md point 15)

``probe.albedo_unwarp`` of ``tools/unsup3d_probe.py`` takes the canonical albedo from the input image itself, through
the depth and view. The plain render then returns the input whatever they are, and only the mirrored render
carries a signal. This check scores that mirrored render (L1 in [-1, 1], inside the render mask) on 32 held-out
training images, with the true canonical light, for views on the line from frontal (0) to the true view (1), and
with two canonical depths: the identity's true frontal depth (sphere-traced) and the depth network fitted to
GAN2Shape's ellipsoid (``fit_ellipsoid`` of the probe). It reports the error on the dataset's head pixels and on
every rendered pixel (the camera-fixed background included), then the size of dL/d(view) per component for 16
images at the frontal view with the ellipsoid depth: which part of the view the loss moves first.

    python tools/unwarp_symmetry_check.py [--data data/synface_proc]
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
from methods.unsup3d.training import as_float_images, create_state, split_settings

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
    err = (out.recon_image[1] - image[0] * out.mask[1]).abs().mean(0)
    on_head = head * mask
    return float((err * on_head).sum() / on_head.sum()), float((err * mask).sum() / mask.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/synface_proc")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    settings = dict(probe.DEFAULTS, depth_init_gain=0, lam_depth_curv=0.1, use_conf=False, hard_symmetry=True)
    model_cfg, train_cfg, _ = split_settings(settings)
    data = probe.load(Path(args.data), 0)
    score = data["score"]
    net = create_state(model_cfg, train_cfg, "cpu", seed=0).net
    probe.fit_ellipsoid(net, data["train"]["image"], 200)
    net.forward = types.MethodType(functools.partial(probe.unwarp_forward, floor=0.2), net)
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
    fitted = net.canonical_depth
    for name in ("ellipsoid", "true"):
        for frac in (0.0, 0.5, 1.0):
            errs = []
            for i in range(32):
                depth = true_depth[i:i + 1] if name == "true" else None
                if depth is None:
                    net.canonical_depth = fitted
                errs.append(mirrored_error(net, images[i:i + 1], depth, views[i:i + 1] * frac, lights[i:i + 1],
                                           heads[i]))
            head, every = np.mean(errs, axis=0)
            print(f"{name} depth, view x {frac}: mirrored-render error on the head {head:.3f}, "
                  f"on every rendered pixel {every:.3f}")


if __name__ == "__main__":
    main()
