"""Does our GAN give GAN2Shape usable views? Two checks on the first N *validation* images (never the test split).

    python tools/gan2shape_gan_probe.py turn N [E_ITERS] [key=value ...]   # do projections of turned samples turn?
    python tools/gan2shape_gan_probe.py refit N [--targets none,gan,true] [key=value ...]  # does refitting help?

``key=value`` items are config overrides, e.g. ``method.gan=<another GAN export>``.

Both start like a GAN2Shape image (``method=gan2shape preset=fast``): the W inversion, the ellipsoid pre-fit (200
steps) and Step 1 (60 steps) give the canonical depth and albedo that Step 2 relights and turns.

``turn``: five pseudo samples at yaw -30, -15, 0, 15, 30 degrees (frontal light) are projected onto the GAN
(a) by the latent-offset encoder E after Step 2 training (``E_ITERS`` iterations, default 600, at batch 8, as in the
method) and (b) by a free W offset per sample (Adam, lr 0.01, 300 steps, Step 2's loss without the regulariser): the
reachable upper bound for E. Printed: the masked L1 to the pseudo samples and the slope of the yaw regressor's reading
of the projections on its reading of the pseudo samples (1: they turn as asked, 0: they do not turn).

``refit``: 16 random pseudo samples (Step 2's view and light distributions) are projected with (b), then a coarse
depth offset (16 x 16 grid inside the object mask, bilinear), a per-pixel albedo and one light per image are fitted
(Adam, lr 1e-3, 300 steps) to the input under its view and to the projections under their pseudo views. Targets
``none`` (the pseudo samples themselves: nothing new, the shape should stay) against ``gan`` (the projections) and,
on synface_proc, ``true``: the same face re-rendered by the dataset's own renderer at the pseudo views (turned from
the image's true view by what each pseudo view turns from the model's view of the image, centred as the image) under
the pseudo lights, i.e. what a perfect GAN would return. ``true`` bounds what any GAN can give this fit.
``--targets none,true`` fits only those (the projections are the slow part).
Printed: SIDE / MAD of the input-view depth before and after, per image and on average.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmark import runner
from benchmark.config import compose
from benchmark.datasets.synface_proc import SynfaceProc, sample_shard
from methods.base import PrepareContext
from methods.common.shape_prior import shape_prior_depth
from methods.common.yaw import load_yaw_regressor, predict_yaw
from methods.gan2shape.fitting import prefit_depth, run_step
from methods.gan2shape.losses import photometric_l1
from methods.gan2shape.model import render
from methods.gan2shape.pseudo import render_pseudo_samples, sample_lights
from methods.gan2shape.steps import gan_images, make_pseudo, project, refine_projection, step1, step2
from methods.renderer.warp import warp_canon_depth
from metrics.shape import shape_metrics

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "outputs" / "gan2shape_gan_probe"
YAWS = torch.tensor([-30.0, -15.0, 0.0, 15.0, 30.0])


def setup(n: int, overrides: list[str]):
    torch.set_num_threads(1)
    cfg = compose(["method=gan2shape", "preset=fast", "experiment.split=val", "method.progress=false", *overrides])
    data = runner.open_split(cfg, "val", limit=n)
    method = runner.create_checked(runner.METHODS, cfg.method.name, runner.method_args(cfg), "gan2shape_gan_probe")
    method.prepare(PrepareContext(torch.device("cpu"), 0, WORK, lambda split: None, cfg.dataset.name))
    return data, method


def canonical_at_step2(method, item: dict, index: int):
    """The image, its W latent, G(w) and its canonical model after the pre-fit and Step 1 (as at Step 2)."""
    torch.manual_seed(0)
    image, mask = item["image"][None], item["mask"][None]
    w = method.latents({"image": image}, [method.cache / f"val_{index:06d}"])  # the method's per-GAN cache
    nets, geom, hp = method.nets, method.geom, method.hp
    nets.load_state_dict(method.initial_state)
    prefit_depth(nets, image, shape_prior_depth(mask, **method.shape_prior), geom, 200, method.optim)
    run_step(nets, 1, 60, lambda: step1(nets, image, geom, hp)[0].total, method.optim)
    with torch.no_grad():
        canon = step1(nets, image, geom, hp)[1].detach()
        gan_image = gan_images(method.G, w, image.shape[-1])
    return image, mask, w, gan_image, canon


def slope(y: torch.Tensor, x: torch.Tensor) -> float:
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / x.pow(2).sum())


def direct_projection(method, w: torch.Tensor, pseudo, steps: int) -> torch.Tensor:
    """A free W offset per pseudo sample, fitted from zero with Step 2's L1 + discriminator-feature loss (no
    regulariser): :func:`refine_projection` without E's start."""
    start = torch.zeros(pseudo.images.shape[0], w.shape[1])
    return refine_projection(method.G, w, start, pseudo.images, pseudo.masks, replace(method.hp, lam_regular=0.0),
                             steps, lr=0.01, disc_feature=method.disc_feature)


def turn(n: int, e_iters: int, overrides: list[str]) -> None:
    data, method = setup(n, overrides)
    regressor = load_yaw_regressor()
    nets, geom, hp = method.nets, method.geom, method.hp
    for i in range(n):
        item = data[i]
        image, _, w, gan_image, canon = canonical_at_step2(method, item, i)
        with torch.no_grad():
            views = method.view_prior.mean[None].repeat(len(YAWS), 1)
            views[:, 1] = YAWS / geom.renderer.rot_range_deg
            lights = sample_lights(len(YAWS), (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.4), k_a=float(canon.k_ambient[0]),
                                   k_d=float(canon.k_diffuse[0]), generator=torch.Generator().manual_seed(1))
            fixed = render_pseudo_samples(canon.albedo, canon.depth, views, lights, geom.renderer,
                                          normals=canon.render.normal)
            target_yaw = predict_yaw(regressor, fixed.images)
            inversion = float((gan_image - image).abs().mean())

        def report(name: str, proj: torch.Tensor) -> None:
            with torch.no_grad():
                l1 = float(photometric_l1(proj, fixed.images, fixed.masks))
                print(f"val {i} {name:>22}: L1 {l1:.3f}  yaw slope {slope(predict_yaw(regressor, proj), target_yaw):5.2f}",
                      flush=True)

        print(f"val {i}: inversion L1 |G(w) - I| {inversion:.3f}; pseudo-sample yaw (regressor) "
              f"{[round(v) for v in target_yaw.tolist()]}", flush=True)
        rng = torch.Generator().manual_seed(5)
        nets.train_only(("netEnc",))
        opt = method.optim.make(nets.parameters_of(("netEnc",)))
        for it in range(e_iters + 1):
            if it in (60, e_iters):
                with torch.no_grad():
                    report(f"E after {it} Step-2 its", project(nets, method.G, w, fixed.images, gan_image, hp)[0])
            if it == e_iters:
                break
            pseudo = make_pseudo(canon, 8, method.view_prior, geom, hp, rng)
            loss = step2(nets, method.G, w, gan_image, pseudo, hp, method.disc_feature)[0].total
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        report("free W offset (300)", direct_projection(method, w, fixed, 300))


def refit(n: int, overrides: list[str], kinds: tuple[str, ...] = ("none", "gan", "true")) -> None:
    data, method = setup(n, overrides)
    geom, hp = method.geom, method.hp
    totals: dict[str, list[tuple[float, float]]] = {"before": []}
    synface = isinstance(data, SynfaceProc)
    truth = TrueViews(method.geom.renderer.rot_range_deg, data) if synface and "true" in kinds else None

    def score(view_depth, valid, item) -> tuple[float, float]:
        s = shape_metrics(view_depth, item["depth"][None], valid)
        return float(s["side"][0]), float(s["mad"][0])

    for i in range(n):
        item = data[i]
        image, mask, w, _, canon = canonical_at_step2(method, item, i)
        pseudo = make_pseudo(canon, 16, method.view_prior, geom, hp, torch.Generator().manual_seed(i))
        valid = canon.render.valid[:, 0]
        totals["before"].append(score(canon.render.view_depth, valid, item))
        line = f"val {i}: before {totals['before'][-1][0]:.3f} / {totals['before'][-1][1]:.2f}"
        fits = [("none", pseudo.images, pseudo)] if "none" in kinds else []
        if "gan" in kinds:
            fits.append(("gan", direct_projection(method, w, pseudo, 150), pseudo))
        if truth is not None:
            fits.append(("true", *truth.render(i, item, canon.view, pseudo)))
        for name, targets, views_of in fits:
            totals.setdefault(name, [])
            depth = fit_shape(canon, mask, image, targets, views_of, geom)
            totals[name].append(score(warp_canon_depth(depth, canon.view, geom.renderer), valid, item))
            line += f", refit to {name}: {totals[name][-1][0]:.3f} / {totals[name][-1][1]:.2f}"
        print(line, flush=True)
    for name, rows in totals.items():
        mean = torch.tensor(rows).mean(0)
        print(f"mean over {n} val images, {name}: SIDE {mean[0]:.3f} MAD {mean[1]:.2f}", flush=True)


class TrueViews:
    """synface_proc faces re-rendered by the dataset's renderer at pseudo views (the ``true`` refit targets)."""

    def __init__(self, rot_range_deg: float, data):
        self.rot_range, self.cfg = float(rot_range_deg), data.meta["config"]
        self.shard_size = int(self.cfg["shard_size"])
        self.shard_params: dict[int, object] = {}  # face parameters per val shard, drawn once (about 1-2 s a shard)

    def render(self, i: int, item: dict, model_view: torch.Tensor, pseudo):
        """Targets ``(N, 3, S, S)`` and the pseudo samples with their views' translation set to the image's."""
        from benchmark.datasets.sdf_faces import render_faces, rotation_matrices

        shard = i // self.shard_size
        if shard not in self.shard_params:
            self.shard_params[shard] = sample_shard(self.cfg, "val", shard)["params"]
        n, size = pseudo.views.shape[0], item["image"].shape[-1]
        # methods' view (pitch, yaw, roll) / rot_range -> the dataset's (yaw, pitch, roll) degrees
        turn = (pseudo.views[:, :3] - model_view[:, :3]) * self.rot_range
        view_deg = (item["view"][None] + turn[:, [1, 0, 2]]).double().numpy()
        ka, kd, lx, ly = pseudo.lights.light_vectors().double().unbind(1)  # canonical frame (2k_a - 1, 2k_d - 1, ...)
        l_cam = torch.einsum("bij,bj->bi", torch.from_numpy(rotation_matrices(view_deg)),
                             torch.stack([lx, ly, torch.ones_like(lx)], 1))
        light = torch.stack([(ka + 1) / 2, (kd + 1) / 2, l_cam[:, 0] / l_cam[:, 2].clamp_min(1e-3),
                             l_cam[:, 1] / l_cam[:, 2].clamp_min(1e-3)], 1).float()
        params = torch.as_tensor(self.shard_params[shard][i % self.shard_size])[None].repeat(n, 1)
        with torch.no_grad():
            out = render_faces(params, view_deg, light, torch.full((n, 3, size, size), 0.5), size)
        images = out["rgb"].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        views = pseudo.views.clone()
        views[:, 3:] = model_view[:, 3:]  # the dataset centres every face as it centred the image
        return images, replace(pseudo, views=views, masks=out["mask"][:, None].float())


def fit_shape(canon, mask, image, targets, pseudo, geom, res: int = 16, steps: int = 300) -> torch.Tensor:
    """Canonical depth after fitting a coarse offset, the albedo and the lights to the input and the targets."""
    size = image.shape[-1]
    n = targets.shape[0] + 1
    views = torch.cat([canon.view, pseudo.views])
    images = torch.cat([image, targets])
    masks = torch.cat([torch.ones_like(pseudo.masks[:1]), pseudo.masks])
    offset = torch.zeros(1, 1, res, res, requires_grad=True)
    albedo = canon.albedo.clone().requires_grad_(True)
    lights = torch.cat([canon.light, pseudo.lights.light_vectors()]).clone().requires_grad_(True)
    inside = mask[:, None].float()
    opt = torch.optim.Adam([offset, albedo, lights], lr=1e-3)

    def depth() -> torch.Tensor:
        up = F.interpolate(offset, size=(size, size), mode="bilinear", align_corners=False)
        return canon.depth + (up * inside)[:, 0]

    for _ in range(steps):
        out = render(depth().expand(n, size, size), albedo.expand(n, -1, -1, -1), views, lights, geom)
        m = out.valid * masks
        per_image = ((out.image - images).abs() * m).flatten(1).sum(1) / (m.flatten(1).sum(1) * 3 + 1)
        loss = per_image[0] + per_image[1:].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return depth()


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("turn", "refit"):
        sys.exit(__doc__)
    args = sys.argv[3:]
    chosen = ("none", "gan", "true")
    if "--targets" in args:
        k = args.index("--targets")
        chosen, args = tuple(args[k + 1].split(",")), args[:k] + args[k + 2:]
    overrides = [a for a in args if "=" in a]
    numbers = [int(a) for a in args if "=" not in a]
    if sys.argv[1] == "turn":
        turn(int(sys.argv[2]), numbers[0] if numbers else 600, overrides)
    else:
        refit(int(sys.argv[2]), overrides, chosen)
