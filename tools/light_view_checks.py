"""Two checks behind weights/README.md point 16: can the light network read the light, and which yaw does a trained
probe network's loss prefer?

    python tools/light_view_checks.py light-sup [--data DIR] [--steps 400]
    python tools/light_view_checks.py view-scan STATE.pt [--data DIR] [key=value ...]

``light-sup`` trains the light network (``Encoder``, width 32, lr 3e-4, batch 16) *with* the true light of the
training images, once as the canonical-frame light the published model shades with (``R^T l``) and once as the
stored camera-frame light, each squashed by tanh as the network's output is, and prints every 100 steps the
correlation of each of its four outputs with the truth on the 128 held-out training identities of
``tools/unsup3d_probe.py``: is the network able to read either light from an image?

``view-scan`` loads the networks a ``tools/unsup3d_probe.py`` run saved (``NAME.pt``; pass the run's model settings
as ``key=value``, ``view_spread`` included; probe levers that replace networks are not rebuilt) and scores 64
held-out images with its training loss, and the plain render's L1 on the dataset's head pixels and off them, at the
frontal view, at the predicted view, and at the predicted view with its yaw replaced by half the true yaw and by the
true yaw, or multiplied by 3: do the learned canonical maps prefer the true yaw?
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from methods.common.networks import Encoder
from methods.unsup3d.losses import unsup3d_loss
from methods.unsup3d.training import as_float_images, batch_indices, create_state, split_settings

import unsup3d_probe as probe  # noqa: E402  (tools/ is on sys.path when run as a script)


def light_sup(data: dict, steps: int) -> None:
    train, score = data["train"], data["score"]
    for frame in ("canonical", "camera"):
        def target(part, frame=frame):
            light = probe.true_view_light(part["view"], part["light"])[1].clone()
            if frame == "camera":
                light[:, 2:] = part["light"][:, 2:]
            return torch.cat([light[:, :2], torch.tanh(light[:, 2:])], 1)

        torch.manual_seed(0)
        net = Encoder(3, 4, 64, nf=32)
        opt = torch.optim.Adam(net.parameters(), lr=3e-4)
        t_train, t_score = target(train), target(score)
        for step in range(steps + 1):
            if step % 100 == 0:
                with torch.no_grad():
                    pred = net(as_float_images(score["image"]))
                corr = [np.corrcoef(pred[:, j].numpy(), t_score[:, j].numpy())[0, 1] for j in range(4)]
                print(f"{frame} light, step {step}: correlation k_a {corr[0]:.2f}, k_d {corr[1]:.2f}, "
                      f"l_x {corr[2]:.2f}, l_y {corr[3]:.2f}", flush=True)
            if step == steps:
                break
            idx = batch_indices(len(train["image"]), 16, step, 0)
            loss = (net(as_float_images(train["image"][idx])) - t_train[idx]).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def view_scan(state_path: Path, data: dict, settings: dict) -> None:
    model_cfg, train_cfg, _ = split_settings({**probe.DEFAULTS, **{k: v for k, v in settings.items() if "." not in k}})
    net = create_state(model_cfg, train_cfg, "cpu", seed=0).net
    net.netV, net.netL = probe.Override(net.netV), probe.Override(net.netL)
    net.load_state_dict(torch.load(state_path, weights_only=True))
    net.eval()
    score = data["score"]
    views = probe.true_view_light(score["view"], score["light"])[0][:64]
    images = as_float_images(score["image"][:64])
    head = score["head_mask"][:64].float().unsqueeze(1)
    with torch.no_grad():
        pred = net.view_light(images)[0]

    def scores(view):
        net.netV.truth = view
        with torch.no_grad():
            out = net(images)
        total = unsup3d_loss(out, None, 0.0, train_cfg.lam_flip, 0.0, 0.0, 0.0, train_cfg.coarse_kernel).total
        b, m = images.shape[0], out.mask[:images.shape[0]]
        err = (out.recon_image[:b] - images * m).abs().mean(1, keepdim=True)
        return (float(total), float((err * m * head).sum() / (m * head).sum()),
                float((err * m * (1 - head)).sum() / (m * (1 - head)).sum()))

    def with_yaw(yaw):
        view = pred.clone()
        view[:, 1] = yaw
        return view

    for label, view in (("frontal", torch.zeros_like(pred)), ("predicted", pred),
                        ("predicted, yaw x 3", with_yaw(pred[:, 1] * 3)),
                        ("predicted, half the true yaw", with_yaw(views[:, 1] * 0.5)),
                        ("predicted, the true yaw", with_yaw(views[:, 1]))):
        total, on_head, off_head = scores(view)
        print(f"{state_path.stem} at the {label} view: loss {total:.4f}; plain L1 on the head {on_head:.4f}, "
              f"off it {off_head:.4f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("check", choices=("light-sup", "view-scan"))
    ap.add_argument("state", nargs="?", type=Path, help="view-scan: the probe run's NAME.pt")
    ap.add_argument("settings", nargs="*", help="view-scan: the probe run's model settings, key=value")
    ap.add_argument("--data", default="data/synface_proc")
    ap.add_argument("--steps", type=int, default=400)
    args = ap.parse_intermixed_args()
    torch.set_num_threads(1)
    data = probe.load(Path(args.data), 0)
    if args.check == "light-sup":
        light_sup(data, args.steps)
        return
    if args.state is None:
        ap.error("view-scan needs the probe run's NAME.pt")
    view_scan(args.state, data, probe.parse_settings(args.settings))


if __name__ == "__main__":
    main()
