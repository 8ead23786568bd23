"""Short diagnostic Unsup3d trainings behind weights/README.md ("Why the learned rows lose", points 9 and 10).

Trains :mod:`methods.unsup3d` with model/train keys from the command line plus a few probe levers, and prints
every ``iters / 8`` steps the SIDE/MAD of the input-view depth, how the predicted yaw follows the truth
(correlation; spread of the predicted yaw in degrees, the dataset's being ~20; its mean) and how the light's x
component follows the truth's (in the frame the model shades in: canonical, or camera with ``light_frame=camera``)
on held-out images: the last 5% of the training identities (never the val or test split), or with ``--subset N``
the same N training images it trains on (the "networks on a few images" rung). Writes a picture (input,
reconstruction, canonical depth normals, canonical albedo, input-view depth normals, true normals) of 4 of them and
the networks' state_dict (``NAME.pt``) to ``--out``.

    python tools/unsup3d_probe.py NAME ITERS [key=value ...] [--data DIR] [--subset N] [--out DIR]
        [--own-render warped|fixed] [--max-yaw DEG] [--checkpoint-every N]

``--checkpoint-every N`` saves the networks, Adam and the step to ``OUT/NAME.ckpt`` every N steps; the same
command run again continues from it (the data order is a function of the step), so a long run spans sessions.

``--max-yaw`` keeps only the images whose true |yaw| is at most DEG degrees, for training and scoring (a dataset
with a narrower view range, without regenerating it).

``--own-render`` replaces every image by the methods' own render (:func:`methods.gan2shape.model.render`) of its
truth: the identity's frontal depth and albedo (sphere-traced, k_a 1, k_d 0) under the image's view and light, so
the image model is exactly the one the networks invert. ``warped``: a fresh background is part of the canonical
albedo at the far depth (it turns with the head); ``fixed``: it is pasted behind the warped head afterwards
(camera-fixed, as in the dataset), but the stretched rim of a turned head then samples the black outside the head:
a dark band whose width grows with the yaw, a cue the dataset does not have (weights/README.md point 13).

Model/train keys are those of ``configs/model/unsup3d.yaml`` (defaults here: width 16, batch 16, no perceptual
term, lr 1e-3). Probe levers (``probe.<lever>=value``):

* ``probe.oracle_light=1`` / ``probe.oracle_view=1``: the true light (turned into the canonical frame) / view
  replace the networks' predictions, in training and scoring;
* ``probe.yaw_gain=g``: the view network's yaw output multiplied by ``g`` (its tanh saturates at ``g`` times the
  rotation range): is a small predicted yaw what the loss prefers, or slow learning of the output?
* the spread prior on the views is the model option ``view_spread=true view_spread_schedule=[[N,s]]`` (spread
  ``s`` degrees from step N; here steps count the photometric steps only: ``probe.ellipsoid_init`` runs before
  step 0);
* ``probe.view_warmup=N``: views held frontal for the first N steps;
* ``probe.conf_ceiling=s``: confidence sigmas capped at ``s``;
* ``probe.depth_lowres=k``: the depth network's output average-pooled by ``k`` and bilinearly upsampled;
* ``probe.ellipsoid_init=N``: N Adam steps fitting the depth network to an ellipsoid first (GAN2Shape's start);
* ``probe.flip_consistency=λ``: half of each batch is the other half mirrored, and the canonical depth and albedo
  of an image and of its mirror image must agree (L1), their views and lights must be mirrors (yaw, roll, x
  translation and light x negated), weighted by λ: a canonical frame that does not depend on which way the face
  turns;
* ``probe.albedo_unet=W``: the albedo network replaced by a U-Net of base width W (skip connections carry the
  image's detail to the albedo at every scale, so the depth need not);
* ``probe.albedo_template=1`` / ``probe.depth_template=1``: a learned per-pixel template, shared by all images, is
  added to the albedo (before its tanh) / raw depth network output, at ``probe.template_lr`` (10) times the learning
  rate and without weight decay: a canonical map that every image trains at once;
* ``probe.wall_mask=t``: pixels whose colour comes from a steep part of the canonical depth (a neighbour step over
  ``t`` depth units: the head's rim, stretched into a wall when the head turns, where the dataset shows the side
  of the head or the background) are left out of the losses;
* ``probe.head_mask=1``: the losses see only the dataset's head pixels (an oracle: is the camera-fixed background
  what keeps the views frontal?);
* ``probe.albedo_unwarp=1``: the canonical albedo is not the albedo network's but the input image itself, brought
  into the canonical frame through the predicted depth and view (:func:`~methods.renderer.warp.canon_to_view_grid`)
  and divided by the canonical shading (floored at ``probe.unwarp_floor``, 0.2). The plain render then gives the
  input back almost whatever the depth, view and light; the mirrored render is what is left, and it compares the
  input with its own mirror image seen through the depth and view: a canonical albedo with the image's features from
  the first step, so the symmetry term can turn the view and shape the depth (parallax) at once;
  ``probe.unwarp_reliable=1`` also weights the mirrored render's loss by how well each sampled canonical pixel was
  seen in the input (the foreshortened side of a turned head is stretched by the unwarp);
  ``probe.unwarp_mirror_only=1`` leaves the plain render out of the loss (it carries only resampling blur, which
  pulls the views to exactly frontal);
* ``probe.depth_freeze=N``: the depth network (and its template) is not updated for the first N steps, so the views
  and the light can move before the depth settles.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.datasets.synface_proc import SynfaceProc, method_light, method_view
from methods.renderer.camera import depth_to_normals
from methods.unsup3d.losses import unsup3d_loss
from methods.unsup3d.training import (TrainConfig, as_float_images, batch_indices, create_state, depth_prior, predict,
                                      split_settings)
from metrics.shape import shape_metrics

DEFAULTS = {"nf_depth_albedo": 16, "conf_nf": 16, "gn_base": 4, "batch_size": 16, "perceptual": "none", "lr": 1e-3}


class Override(nn.Module):
    """A view or light network whose output is replaced by ``truth`` while it is set, else scaled by ``gain``."""

    def __init__(self, net: nn.Module, gain: torch.Tensor | None = None):
        super().__init__()
        self.net, self.truth, self.gain = net, None, gain

    def forward(self, x):
        out = self.net(x) if self.gain is None else self.net(x) * self.gain
        return out if self.truth is None else self.truth.to(out)


class Ceiling(nn.Module):
    """Confidence network with its sigmas capped at ``ceiling``."""

    def __init__(self, net: nn.Module, ceiling: float):
        super().__init__()
        self.net, self.ceiling = net, ceiling

    def forward(self, x):
        a, b = self.net(x)
        return a.clamp_max(self.ceiling), b.clamp_max(self.ceiling)


class LowRes(nn.Module):
    """A map network band-limited to ``1 / k`` of its resolution."""

    def __init__(self, net: nn.Module, k: int):
        super().__init__()
        self.net, self.k = net, k

    def forward(self, x):
        return F.interpolate(F.avg_pool2d(self.net(x), self.k), scale_factor=self.k, mode="bilinear",
                             align_corners=False)


class Template(nn.Module):
    """A map network plus a learned per-pixel template (a free ``(1, C, S, S)`` bias shared by all images) added
    before the network's output activation (``probe.albedo_template`` / ``probe.depth_template``)."""

    def __init__(self, net: nn.Module, channels: int, size: int = 64):
        super().__init__()
        layers = list(net.network)
        self.act = layers.pop() if isinstance(layers[-1], nn.Tanh) else nn.Identity()
        self.body = nn.Sequential(*layers)
        self.template = nn.Parameter(torch.zeros(1, channels, size, size))

    def forward(self, x):
        return self.act(self.body(x) + self.template)


class UNet(nn.Module):
    """A small U-Net ``(B, 3, 64, 64) -> (B, 3, 64, 64)`` in [-1, 1]: four 4x4/s2 conv downs (W, 2W, 4W, 8W), then
    ConvT 4x4/s2 ups, each concatenated with the encoder features of its scale, GroupNorm + LReLU between."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]

        def block(cin, cout, up=False):
            conv = (nn.ConvTranspose2d if up else nn.Conv2d)(cin, cout, 4, 2, 1)
            return nn.Sequential(conv, nn.GroupNorm(4, cout), nn.LeakyReLU(0.2))

        self.downs = nn.ModuleList([block(3, w[0]), block(w[0], w[1]), block(w[1], w[2]), block(w[2], w[3])])
        self.ups = nn.ModuleList([block(w[3], w[2], True), block(2 * w[2], w[1], True), block(2 * w[1], w[0], True),
                                  block(2 * w[0], w[0], True)])
        self.out = nn.Conv2d(w[0] + 3, 3, 3, 1, 1)

    def forward(self, x):
        skips, h = [x], x
        for down in self.downs:
            h = down(h)
            skips.append(h)
        skips.pop()
        for up in self.ups:
            h = up(h)
            h = torch.cat([h, skips.pop()], 1)
        return torch.tanh(self.out(h))


def parse_settings(items: list[str]) -> dict:
    """``key=value`` strings -> a dict, values read as JSON where they parse (numbers, booleans), else strings."""
    kv = {}
    for item in items:
        key, value = item.split("=", 1)
        try:
            kv[key] = json.loads(value)
        except ValueError:
            kv[key] = value
    return kv


def true_view_light(view_deg: torch.Tensor, light: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset's ``(yaw, pitch, roll)`` degrees and camera-frame light as the method's 6-d view and 4-d light."""
    return method_view(view_deg), method_light(view_deg, light)


def load(root: Path, subset: int, max_yaw: float = 0.0) -> dict[str, torch.Tensor]:
    ds = SynfaceProc(root, "train")
    arrays = {k: torch.from_numpy(np.ascontiguousarray(ds.array(k))) for k in ("image", "depth", "view", "light",
                                                                               "identity", "head_mask")}
    arrays["image"] = arrays["image"].permute(0, 3, 1, 2).contiguous()
    held = arrays["identity"] >= int(arrays["identity"].max() + 1) * 0.95
    if max_yaw:
        keep = arrays["view"][:, 0].abs() <= max_yaw
        arrays, held = {k: v[keep] for k, v in arrays.items()}, held[keep]
    train = {k: v[~held] for k, v in arrays.items()}
    if subset:
        train = {k: v[:subset] for k, v in train.items()}
        return {"train": train, "score": train}
    return {"train": train, "score": {k: v[held][:128] for k, v in arrays.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("iters", type=int)
    ap.add_argument("settings", nargs="*", help="key=value (model/train keys, or probe.<lever>=value)")
    ap.add_argument("--data", default="data/synface_proc")
    ap.add_argument("--subset", type=int, default=0)
    ap.add_argument("--out", default="outputs/probe")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--own-render", choices=("warped", "fixed"))
    ap.add_argument("--max-yaw", type=float, default=0.0)
    ap.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                    help="save the networks, Adam and the step to OUT/NAME.ckpt every N steps; a rerun of the same "
                         "command continues from it")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kv = parse_settings(args.settings)
    probe = {k[6:]: v for k, v in kv.items() if k.startswith("probe.")}
    model_cfg, train_cfg, _ = split_settings({**DEFAULTS, **{k: v for k, v in kv.items() if "." not in k}})
    data = load(Path(args.data), args.subset, args.max_yaw)
    train, score = data["train"], data["score"]
    if args.own_render:
        for part in {id(train): train, id(score): score}.values():
            part["image"] = own_render(Path(args.data), part, args.own_render)  # scored on the true depth
    state = create_state(model_cfg, train_cfg, "cpu", seed=0)
    net = state.net
    if probe.get("depth_template"):
        net.netD = Template(net.netD, 1)
    if probe.get("depth_lowres"):
        net.netD = LowRes(net.netD, int(probe["depth_lowres"]))
    if probe.get("conf_ceiling"):
        net.netC = Ceiling(net.netC, float(probe["conf_ceiling"]))
    yaw_gain = torch.tensor([1.0, float(probe["yaw_gain"]), 1, 1, 1, 1]) if probe.get("yaw_gain") else None
    net.netV, net.netL = Override(net.netV, yaw_gain), Override(net.netL)
    if probe.get("albedo_unet"):
        net.netA = UNet(int(probe["albedo_unet"]))
    if probe.get("albedo_template"):
        net.netA = Template(net.netA, 3)
    if probe.get("albedo_unwarp"):
        net.forward = types.MethodType(functools.partial(unwarp_forward, floor=float(probe.get("unwarp_floor", 0.2)),
                                                         reliable=bool(probe.get("unwarp_reliable")),
                                                         mirror_only=bool(probe.get("unwarp_mirror_only"))), net)
    if probe.get("ellipsoid_init"):
        fit_ellipsoid(net, train["image"], int(probe["ellipsoid_init"]))
    templates = [p for n, p in net.named_parameters() if n.endswith("template")]
    rest = [p for n, p in net.named_parameters() if not n.endswith("template")]
    groups = [{"params": rest}]
    if templates:
        groups.append({"params": templates, "lr": train_cfg.lr * float(probe.get("template_lr", 10)),
                       "weight_decay": 0.0})
    state.optim = torch.optim.Adam(groups, lr=train_cfg.lr, betas=(train_cfg.beta1, train_cfg.beta2),
                                   weight_decay=train_cfg.weight_decay)
    truth = true_view_light(train["view"], train["light"])
    score_truth = true_view_light(score["view"], score["light"])

    def set_truth(view, light, step):
        net.set_view_spread(train_cfg.view_spread_at(state.step))
        frontal = probe.get("view_warmup") and step < int(probe["view_warmup"])
        net.netV.truth = torch.zeros_like(view) if frontal else (view if probe.get("oracle_view") else None)
        net.netL.truth = light if probe.get("oracle_light") else None

    start = time.time()

    def report(tag):
        sides, mads, yaws, lights = [], [], [], []
        for i in range(0, (len(score["image"]) + 63) // 64):
            set_truth(*(t[64 * i: 64 * i + 64] for t in score_truth), step=1 << 30)  # oracles per chunk
            out = predict(net, score["image"][64 * i: 64 * i + 64], 64)[0]
            m = shape_metrics(out.recon_depth[:out.batch], score["depth"][64 * i: 64 * i + out.batch],
                              out.valid[:out.batch, 0])
            sides.append(m["side"])
            mads.append(m["mad"])
            yaws.append(out.view[:, 1] * 60)
            lights.append(out.light[:, 2])
        yaw, true = torch.cat(yaws).numpy(), score["view"][:, 0].numpy()
        # the light's x in the frame the model shades in: the stored camera-frame one or its canonical turn
        true_lx = (score["light"][:, 2] if model_cfg.light_frame == "camera" else score_truth[1][:, 2]).numpy()
        lx = torch.cat(lights).numpy()
        print(f"{args.name} {tag} step {state.step}: SIDE {float(torch.cat(sides).nanmean()):.3f} MAD "
              f"{float(torch.cat(mads).nanmean()):.2f}; yaw correlation {np.corrcoef(true, yaw)[0, 1]:.2f}, "
              f"spread {yaw.std():.1f} deg, mean {yaw.mean():.1f}; light x correlation "
              f"{np.corrcoef(true_lx, lx)[0, 1]:.2f} ({time.time() - start:.0f} s)", flush=True)

    Path(args.out).mkdir(parents=True, exist_ok=True)
    ckpt = Path(args.out) / f"{args.name}.ckpt"
    if args.checkpoint_every and ckpt.exists():
        saved = torch.load(ckpt, weights_only=True)
        net.load_state_dict(saved["net"])
        state.optim.load_state_dict(saved["optim"])
        state.step = int(saved["step"])
    report("resumed" if state.step else "start")
    every = max(args.iters // 8, 1)
    while state.step < args.iters:
        idx = batch_indices(len(train["image"]), train_cfg.batch_size, state.step, state.seed)
        set_truth(truth[0][idx], truth[1][idx], state.step)
        net.train()
        images = as_float_images(train["image"][idx])
        lam_fc = float(probe.get("flip_consistency", 0))
        if lam_fc:
            half = images.shape[0] // 2
            images = torch.cat([images[:half], images[:half].flip(-1)])
        out = net(images)
        if probe.get("wall_mask"):
            out = dataclasses.replace(out, mask=out.mask * (1 - wall_in_view(net, out, float(probe["wall_mask"]))))
        if probe.get("head_mask"):
            head = train["head_mask"][idx].unsqueeze(1).to(out.mask.dtype)
            out = dataclasses.replace(out, mask=out.mask * head.repeat(out.mask.shape[0] // len(idx), 1, 1, 1))
        loss = unsup3d_loss(out, None, train_cfg.lam_perc, train_cfg.lam_flip, train_cfg.lam_depth_sm,
                            train_cfg.lam_depth_curv, train_cfg.lam_coarse, train_cfg.coarse_kernel)
        total = loss.total
        if lam_fc:
            a, b = slice(0, half), slice(half, 2 * half)
            sign_v = torch.tensor([1.0, -1.0, -1.0, -1.0, 1.0, 1.0])
            sign_l = torch.tensor([1.0, 1.0, -1.0, 1.0])
            total = total + lam_fc * ((out.canon_depth_free[a] - out.canon_depth_free[b]).abs().mean()
                                      + (out.canon_albedo[a] - out.canon_albedo[b]).abs().mean()
                                      + (out.view[a] * sign_v - out.view[b]).abs().mean()
                                      + (out.light[a] * sign_l - out.light[b]).abs().mean())
        state.optim.zero_grad(set_to_none=True)
        total.backward()
        if state.step < int(probe.get("depth_freeze", 0)):
            for p in net.netD.parameters():
                p.grad = None  # Adam leaves a parameter without a gradient alone
        state.optim.step()
        state.step += 1
        if state.step % every == 0 or state.step == args.iters:
            report("held-out" if not args.subset else "trained")
        if args.checkpoint_every and state.step % args.checkpoint_every == 0:
            torch.save({"net": net.state_dict(), "optim": state.optim.state_dict(), "step": state.step},
                       ckpt.with_suffix(".tmp"))
            ckpt.with_suffix(".tmp").replace(ckpt)
    picture(net, score, score_truth, set_truth, Path(args.out) / f"{args.name}.png")
    torch.save(net.state_dict(), Path(args.out) / f"{args.name}.pt")


def unwarp_forward(net, image: torch.Tensor, floor: float = 0.2, reliable: bool = False,
                   mirror_only: bool = False):
    """Unsup3d's forward pass with the canonical albedo taken from ``image`` (``probe.albedo_unwarp``).

    ``reliable`` (``probe.unwarp_reliable=1``): the mirrored render's loss mask is weighted by how well each
    canonical pixel it samples was seen in the input: the area of its footprint in the input image relative to a
    frontal pixel, capped at 1 (detached). A canonical pixel foreshortened in the input (the side a turned head turns
    away) is stretched by the unwarp and carries no reliable colour.

    ``mirror_only`` (``probe.unwarp_mirror_only=1``): the plain render's loss mask is zeroed. Unwarped and rendered
    back, the input comes out exact only at the frontal view (an identity grid); any other view resamples it twice
    with bilinear interpolation, and that blur is the plain render's whole loss: a pull to exactly frontal views.
    """
    from methods.renderer.shading import light_to_shading
    from methods.renderer.warp import canon_to_view_grid, view_to_canon_grid

    cfg, renderer = net.cfg, net.cfg.renderer
    free, depth = net.canonical_depth(image)
    view, light = net.view_light(image)
    normal = depth_to_normals(depth, renderer.intrinsics(cfg.image_size, depth))
    if cfg.light_frame == "camera":  # shaded as Unsup3dNet.render shades
        normal = torch.einsum("nij,nhwj->nhwi", renderer.transform(view)[0], normal)
    shading = light_to_shading(normal, light)
    to_view = canon_to_view_grid(depth, view, renderer)
    seen = F.grid_sample(image, to_view, mode="bilinear", padding_mode="border", align_corners=True)
    albedo = (((seen + 1) / 2) / shading.clamp(min=floor) * 2 - 1).clamp(-1, 1)
    conf = net.netC(image) if net.netC is not None else (None, None)
    out = net.render(image, free, depth, albedo, view, light, conf, flip=True)  # mirrored even when hard-symmetric
    if mirror_only:
        b = image.shape[0]
        out = dataclasses.replace(out, mask=torch.cat([torch.zeros_like(out.mask[:b]), out.mask[b:]]))
    if not reliable:
        return out
    with torch.no_grad():  # weights in the loss mask only, not in the render
        b = image.shape[0]
        g = to_view * (cfg.image_size - 1) / 2  # pixels
        gx, gy = g[:, :, 1:] - g[:, :, :-1], g[:, 1:] - g[:, :-1]
        gx, gy = F.pad(gx, (0, 0, 0, 1)), F.pad(gy, (0, 0, 0, 0, 0, 1))
        area = (gx[..., 0] * gy[..., 1] - gx[..., 1] * gy[..., 0]).abs().clamp(max=1).unsqueeze(1)
        grid = view_to_canon_grid(out.recon_depth[b:], view, renderer)
        seen_well = F.grid_sample(area.flip(-1), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return dataclasses.replace(out, mask=torch.cat([out.mask[:b], out.mask[b:] * seen_well]))


def wall_in_view(net, out, step: float) -> torch.Tensor:
    """``(N, 1, S, S)``: 1 where a render samples a canonical pixel with a neighbour depth step over ``step``."""
    from methods.renderer.warp import view_to_canon_grid

    with torch.no_grad():
        d = out.canon_depth
        slope = torch.zeros_like(d)
        dx, dy = (d[:, :, 1:] - d[:, :, :-1]).abs(), (d[:, 1:] - d[:, :-1]).abs()
        slope[:, :, 1:], slope[:, :, :-1] = torch.maximum(slope[:, :, 1:], dx), torch.maximum(slope[:, :, :-1], dx)
        slope[:, 1:], slope[:, :-1] = torch.maximum(slope[:, 1:], dy), torch.maximum(slope[:, :-1], dy)
        reps = d.shape[0] // out.view.shape[0]
        grid = view_to_canon_grid(out.recon_depth, out.view.repeat(reps, 1), net.cfg.renderer)
        wall = (slope > step).float().unsqueeze(1)
        return F.grid_sample(wall, grid, mode="bilinear", padding_mode="zeros", align_corners=True).gt(0).float()


def own_render(root: Path, part: dict, background: str) -> torch.Tensor:
    """The methods' render of each image's truth (``--own-render``): ``(N, 3, S, S)`` uint8 images."""
    from benchmark.datasets.sdf_faces import render_faces
    from benchmark.datasets.synface_proc import backgrounds, identity_table
    from methods.gan2shape.model import Geometry, render

    cfg = json.loads((root / "meta.json").read_text())["config"]
    table = identity_table(cfg, "train")
    ids, inverse = torch.unique(part["identity"], return_inverse=True)
    n = len(ids)
    white = np.tile([[1.0, 0.0, 0.0, 0.0]], (n, 1)).astype(np.float32)
    front = render_faces(table[ids.numpy()], np.zeros((n, 3)), white, torch.zeros(n, 3, 64, 64), 64)
    depth_id, mask_id = front["depth"], front["mask"].unsqueeze(1)
    albedo_id = front["rgb"].permute(0, 3, 1, 2).float() / 255
    bg = backgrounds(np.random.default_rng(7), len(inverse), 64)
    geom = Geometry(border_factor=1.0)
    images = []
    for lo in range(0, len(inverse), 256):
        sl = slice(lo, lo + 256)
        k = inverse[sl]
        view_deg = part["view"][sl]
        albedo = torch.where(mask_id[k], albedo_id[k], bg[sl] if background == "warped" else torch.zeros_like(bg[sl]))
        out = render(depth_id[k], albedo * 2 - 1, method_view(view_deg), method_light(view_deg, part["light"][sl]),
                     geom)
        img = out.image.add(1).div(2)
        if background == "fixed":
            head = (out.view_depth < 1.09).unsqueeze(1)
            img = torch.where(head, img, bg[sl])
        images.append((img * 255).round().clamp(0, 255).to(torch.uint8))
    return torch.cat(images)


def fit_ellipsoid(net, images: torch.Tensor, iters: int) -> None:
    """Fit the depth network to an ellipsoid in a fixed face box for every image (GAN2Shape's initialisation): the
    target of the trainer's ``depth_prior_steps`` (:func:`~methods.unsup3d.training.depth_prior`, default box)."""
    target = depth_prior(TrainConfig(), 64)
    opt = torch.optim.Adam(net.netD.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(iters):
        idx = torch.randint(0, len(images), (16,), generator=gen)
        loss = (net.canonical_depth(as_float_images(images[idx]))[0] - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def picture(net, score, score_truth, set_truth, path: Path) -> None:
    from PIL import Image

    set_truth(*(t[:4] for t in score_truth), step=1 << 30)
    out = predict(net, score["image"][:4], 4)[0]
    K = net.cfg.renderer.intrinsics(64, out.recon_depth)

    def normals(d):
        return depth_to_normals(d, K).mul(0.5).add(0.5).clamp(0, 1)

    def rgb(x):
        return x.permute(0, 2, 3, 1).add(1).div(2).clamp(0, 1)

    cols = [score["image"][:4].permute(0, 2, 3, 1).float() / 255, rgb(out.recon_image[:4]),
            normals(out.canon_depth[:4]), rgb(out.canon_albedo[:4]), normals(out.recon_depth[:4]),
            normals(score["depth"][:4])]
    img = torch.cat([torch.cat(list(c), 0) for c in cols], 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((img.numpy() * 255).astype(np.uint8)).resize((img.shape[1] * 2, img.shape[0] * 2),
                                                                  Image.NEAREST).save(path)


if __name__ == "__main__":
    main()
