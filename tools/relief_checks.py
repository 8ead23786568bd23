"""What is wrong with a trained Unsup3d's depth, on validation images (weights/README.md point 18):

    python tools/relief_checks.py WEIGHTS.safetensors [--data DIR] [--images 256]

prints, on the first ``--images`` images of the ``val`` split (never the test split):

* the predicted views against the true ones: for pitch, yaw and roll, the standard deviation of each (degrees),
  their correlation and the slope of predicted on true. A slope under 1 means the model turns the head less
  than the camera did;
* SIDE and MAD with the predicted relief scaled about the background depth, ``d' = b + s (d - b)``, for a few
  ``s``. A model that under-turns heads makes up for it with a deeper relief (the warp's image motion grows with
  both), so its best ``s`` falls below 1.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmark.datasets.synface_proc import SynfaceProc
from methods.common.data import split_images_depths
from methods.unsup3d import training
from metrics.shape import shape_metrics

SCALES = (0.5, 0.7, 0.85, 1.0, 1.2, 1.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights")
    parser.add_argument("--data", default="data/synface_proc")
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    val = SynfaceProc(args.data, "val", limit=args.images)
    images, depths = split_images_depths(val, "val split")
    true_views = np.stack([val[i]["view"].numpy() for i in range(len(val))])  # (yaw, pitch, roll) degrees
    net, _ = training.load_weights(args.weights)
    outs = training.predict(net, images)
    views = torch.cat([o.view[:o.batch] for o in outs]).numpy() * net.cfg.rot_range_deg  # (pitch, yaw, roll, ...)
    for name, mine, truth in (("pitch", 0, 1), ("yaw", 1, 0), ("roll", 2, 2)):
        p, t = views[:, mine], true_views[:, truth]
        print(f"{name:5s}: std {p.std():5.2f} (true {t.std():5.2f}), correlation {np.corrcoef(p, t)[0, 1]:.3f}, "
              f"slope {np.polyfit(t, p, 1)[0]:.3f}")
    depth = torch.cat([o.recon_depth[:o.batch] for o in outs])
    valid = torch.cat([o.valid[:o.batch, 0] for o in outs])
    background = depth.amax(dim=(1, 2), keepdim=True)
    for s in SCALES:
        scores = shape_metrics(background + s * (depth - background), depths, valid)
        print(f"relief x{s:<4}: SIDE {float(scores['side'].mean()):.3f}  MAD {float(scores['mad'].mean()):.2f}")


if __name__ == "__main__":
    main()
