"""Does a pre-trained E turn faces? The yaw slope of its projections of turned pseudo samples, on GAN samples.

    python tools/gan2shape_e_turn.py EXPORT [--f1d K] [--samples 12]

``EXPORT`` is a ``bench train model=gan2shape_pretrain_cpu`` export. For GAN samples of seeds 2,000,000+ (disjoint
from the pre-training samples and the face-rotation sources) the canonical model textured with the sample itself
(``pseudo_albedo=image``, as that recipe trains E) is rendered at yaw -30, -15, 0, 15, 30 degrees and projected by
E onto the GAN. Printed: the slope of the yaw regressor's reading of the projections on its reading of the renders
(per sample, centred; 1: the projections turn as asked, 0: they do not). ``--f1d`` overrides the card's ``F1_d``
(exports written before the card recorded it).
"""

from __future__ import annotations

import argparse

import torch

from methods.common.yaw import load_yaw_regressor, predict_yaw
from methods.gan2shape.method import load_networks, read_card
from methods.gan2shape.model import Networks, geometry_from_dict, image_albedo, photo_forward, render
from methods.gan2shape.steps import Hyper, gan_images, project
from methods.renderer.warp import render_given_view
from methods.stylegan2.checkpoints import load_gan


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export")
    parser.add_argument("--f1d", type=int, default=None)
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--gan", default="weights/stylegan2_synface_proc_32.safetensors")
    args = parser.parse_args()
    G, _ = load_gan(args.gan, torch.device("cpu"))
    meta = read_card(args.export)
    nets = Networks(meta["image_size"], meta["latent_dim"], meta.get("inplace_relu_quirk", True), **meta["arch"])
    load_networks(nets, args.export)
    nets.eval()
    geom = geometry_from_dict(meta["geometry"])
    f1d = args.f1d if args.f1d is not None else (meta.get("step2") or {}).get("F1_d", 8)
    regressor = load_yaw_regressor()
    yaws = torch.linspace(-30, 30, 5)
    xs, ys = [], []
    w = G.seed_latents(range(2_000_000, 2_000_000 + args.samples))
    for i in range(len(w)):
        image = gan_images(G, w[i:i + 1], nets.image_size)
        fwd = photo_forward(nets, image, geom)
        textured = render(fwd.depth, image_albedo(fwd, image, geom), fwd.view, fwd.light, geom)
        views = fwd.view.repeat(len(yaws), 1)
        views[:, 1] += yaws / geom.renderer.rot_range_deg
        turned = render_given_view(textured.texture.expand(len(yaws), -1, -1, -1),
                                   fwd.depth.expand(len(yaws), -1, -1), views, geom.renderer).image
        projected, _ = project(nets, G, w[i:i + 1], turned, image, Hyper(F1_d=f1d))
        x, y = predict_yaw(regressor, turned), predict_yaw(regressor, projected)
        xs.append(x - x.mean())
        ys.append(y - y.mean())
    x, y = torch.cat(xs), torch.cat(ys)
    print(f"F1_d {f1d}: slope {float((x * y).sum() / (x * x).sum()):.2f} of the projections' yaw on the renders' "
          f"({args.samples} GAN samples, yaw -30 ... 30)")


if __name__ == "__main__":
    main()
