"""Result-page images of a logged GAN2Shape run, for committing under ``reports/``.

    python tools/gan2shape_pages.py RUN_ID [--n 4] [--out reports/gan2shape_cpu] [--uri sqlite:///mlflow.db]

For the first ``n`` images of the run (its ``images/<name>/`` artifacts, written by ``methods/gan2shape/outputs.py``)
writes ``<name>.png`` (input, reconstruction, albedo, canonical depth, depth in the input view, normals, one row),
``<name>_rotate_gan.png`` and ``<name>_rotate_3d.png`` (the Rotation-GAN and Rotation-3D sweeps) and ``README.md``
naming the run, its command and the images' SIDE / MAD.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import tempfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from benchmark import tracking

PANELS = ("input", "reconstruction", "albedo", "canonical_depth", "view_depth", "normal")


def main() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_id")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--out", default="reports/gan2shape_cpu")
    parser.add_argument("--uri", default="sqlite:///mlflow.db")
    args = parser.parse_args()
    client = tracking.client(args.uri)
    run = client.get_run(args.run_id)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(a.path.split("/")[-1] for a in client.list_artifacts(args.run_id, "images") if a.is_dir)[:args.n]
    with tempfile.TemporaryDirectory() as tmp:
        per_image = Path(client.download_artifacts(args.run_id, "per_image.csv", tmp))
        scores = {r["name"]: r for r in csv.DictReader(per_image.open())} if per_image.is_file() else {}
        lines = [f"# GAN2Shape result pages: the first {len(names)} images of run `{args.run_id[:8]}`", "",
                 f"Command: `{run.data.tags.get('command', '?')}` on {run.data.tags.get('device_name', '?')}, "
                 f"commit {run.data.tags.get('git_commit', '?')[:12]}.", "",
                 "Each row: " + ", ".join(p.replace("_", " ") for p in PANELS) + "; then the Rotation-GAN sweep "
                 "(the rotated render re-projected through the GAN) and the Rotation-3D sweep (the textured mesh).", ""]
        for name in names:
            folder = Path(client.download_artifacts(args.run_id, f"images/{name}", tmp))
            panels = [iio.imread(folder / f"{p}.png")[..., :3] for p in PANELS]
            iio.imwrite(out / f"{name}.png", np.concatenate(panels, axis=1))
            for sweep in ("rotate_gan", "rotate_3d"):
                shutil.copyfile(folder / f"{sweep}.png", out / f"{name}_{sweep}.png")
            s = scores.get(name, {})
            score = f"SIDE {float(s['side']):.3f} / MAD {float(s['mad']):.2f}" if "side" in s else ""
            lines += [f"## {name} {score}".rstrip(), "", f"![{name}]({name}.png)", "",
                      f"![{name} Rotation-GAN]({name}_rotate_gan.png)", "",
                      f"![{name} Rotation-3D]({name}_rotate_3d.png)", ""]
    (out / "README.md").write_text("\n".join(lines))
    print(f"wrote {out}/README.md ({len(names)} images)")


if __name__ == "__main__":
    main()
