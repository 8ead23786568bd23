"""Did a refactor change what the trainers produce? Record tiny runs of every trainer, then compare two records.

    python tools/trainer_fingerprints.py record TAG [trainer ...]   # outputs/fingerprints/TAG/<trainer>/...
    python tools/trainer_fingerprints.py compare TAG_A TAG_B

``record`` runs each trainer through ``bench train`` on a tiny generated dataset, straight to N steps and interrupted
at N/2 then resumed to N, with the code of the tree in ``$CODE`` (default: this checkout; point it at a ``git
worktree`` of the commit before a refactor, installed once with ``pip install -e <worktree> --no-deps`` and this
checkout reinstalled after it, so that the old tree finds its own plugin entry points). ``compare`` checks, per trainer and part, that the checkpoints hold
the same tensors and values (wall times and the driver's ``extra`` aside), the exports the same tensors (ONNX: the
same bytes) and the model cards the same content once paths are normalised and wall time and commit dropped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "fingerprints"
DATA = OUT / "data"
GAN = OUT / "tiny_gan.safetensors"
COMMON = ["device=cpu", "train.num_threads=1", "train.progress=false"]
DATA_ARGS = {"": ["dataset.generate.train_size=64", "dataset.generate.val_size=40", "dataset.generate.test_size=8"],
             "_id": ["dataset.generate.train_size=200", "dataset.generate.val_size=100",
                     "dataset.generate.test_size=8"]}
# trainer: (its tiny settings, the key that sets where it stops, N, dataset variant)
TRAINERS = {
    "stylegan2": (["model=stylegan2_32", "model.size=16", "model.style_dim=16", "model.channels={4: 8, 8: 8, 16: 8}",
                   "model.batch_size=4", "train.log_every=1", "train.eval_every=2", "train.checkpoint_every=1",
                   "eval.swd_images=4", "eval.swd_patches=4", "tracking.samples=4"], "train.iterations", 4, ""),
    "hologan": (["model=hologan", "model.z_dim=8", "model.c0=8", "model.c3d=[8,8]", "model.c_rot=4", "model.c_proj=8",
                 "model.c2d=[8,8]", "model.d_channels=[8,8,8]", "model.batch_size=4", "train.log_every=1",
                 "train.eval_every=2", "train.checkpoint_every=1"], "train.iterations", 4, ""),
    "yaw_regressor": (["model=yaw_regressor", "model.width=8", "model.batch_size=8", "model.val_images=16",
                       "train.limit=64", "train.checkpoint_every=1"], "model.iterations", 4, ""),
    "identity": (["model=identity", "model.batch_size=16", "model.widths=[8,16]", "model.embedding_dim=16",
                  "model.negative_pairs=50", "model.val_split=val", "train.checkpoint_every=1"],
                 "train.iterations", 4, "_id"),
    "gan2shape_pretrain": (["model=gan2shape_pretrain", "model.images=3", f"model.method.gan={GAN}",
                            "model.method.prefit_iters=2", "model.method.inversion.steps=2",
                            "model.method.schedule.stage_len=[2,2,2]", "model.method.schedule.stage_len_later=[1,1,1]",
                            "model.method.schedule.batch_size=2", "model.method.schedule.collect_iters=2"],
                           "model.method.schedule.num_stage", 2, ""),
    "unsup3d": (["model=unsup3d_cpu", "model.nf_depth_albedo=8", "model.nf_view_light=8", "model.zdim=16",
                 "model.gn_base=2", "model.conf_nf=8", "model.conf_zdim=16", "model.batch_size=4", "model.val_images=4",
                 "train.limit=32", "train.eval_every=1", "train.log_every=1", "train.checkpoint_every=1"],
                "train.iterations", 2, ""),
    "supervised": (["model=supervised", "model.nf=8", "model.zdim=16", "model.gn_base=2", "model.batch_size=4",
                    "model.val_images=4", "train.limit=32", "train.eval_every=1", "train.log_every=1",
                    "train.checkpoint_every=1"], "train.iterations", 2, ""),
}
VOLATILE = {"wall_time_s", "commit", "seconds_per_iteration", "seconds_per_phase"}


def record(tag: str, names: list[str]) -> None:
    code = Path(os.environ.get("CODE", ROOT)).resolve()
    if not GAN.exists():
        from methods.stylegan2.checkpoints import save_networks
        from methods.stylegan2.model import Discriminator, Generator

        torch.manual_seed(0)
        save_networks(GAN, Generator(32, style_dim=32, n_mlp=8, max_channels=16), Discriminator(32, max_channels=16),
                      {"command": "tools/trainer_fingerprints.py: untrained tiny GAN"})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(code)}
    for name in names:
        args, key, n, variant = TRAINERS[name]
        data = [f"dataset.root={DATA}{variant}", *DATA_ARGS[variant]]
        suffix = ".onnx" if name == "identity" else ".safetensors"
        for part, stops in (("straight", [n]), ("resumed", [n // 2, n])):
            folder = OUT / tag / name / part
            shutil.rmtree(folder, ignore_errors=True)
            for stop in stops:
                cmd = [sys.executable, "-m", "benchmark.cli", "train", *args, *data, *COMMON, f"{key}={stop}",
                       f"train.out_dir={folder}", f"train.export={folder / ('w' + suffix)}",
                       f"tracking.uri=sqlite:///{OUT / tag}/mlflow.db"]
                done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=code)
                if done.returncode:
                    raise SystemExit(f"{name} {part} failed:\n{done.stderr[-2000:]}")
        print(f"recorded {name}", flush=True)


def _plain(node, prefix: str, out: dict) -> None:
    if isinstance(node, torch.Tensor):
        out[prefix] = node
    elif isinstance(node, dict):
        for k, v in node.items():
            if k not in VOLATILE and k != "extra":
                _plain(v, f"{prefix}.{k}", out)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _plain(v, f"{prefix}.{i}", out)
    else:
        out[prefix] = repr(node)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]
                                        for k in a)


def _card(path: Path, roots: tuple[Path, ...]):
    def norm(x):
        if isinstance(x, dict):
            return {k: norm(v) for k, v in x.items() if k not in VOLATILE}
        if isinstance(x, list):
            return [norm(v) for v in x]
        if isinstance(x, str):
            for root in roots:
                x = x.replace(str(root), "<root>")
        return x

    return norm(json.loads(path.read_text()))


def compare(tag_a: str, tag_b: str) -> bool:
    a_dir, b_dir = OUT / tag_a, OUT / tag_b
    ok = True
    for name in sorted(p.name for p in a_dir.iterdir() if p.name in TRAINERS and (b_dir / p.name).is_dir()):
        for part in ("straight", "resumed"):
            fa, fb = a_dir / name / part, b_dir / name / part
            res = {}
            for ck in sorted(fa.rglob("*.pt")):
                x, y = {}, {}
                _plain(torch.load(ck, weights_only=True), "", x)
                _plain(torch.load(fb / ck.relative_to(fa), weights_only=True), "", y)
                res[str(ck.relative_to(fa))] = _same(x, y)
            for w in sorted(fa.glob("w.*")):
                if w.suffix == ".safetensors":
                    res["export"] = _same(load_file(str(w)), load_file(str(fb / w.name)))
                elif w.suffix == ".onnx":
                    res["export"] = w.read_bytes() == (fb / w.name).read_bytes()
                elif w.suffix == ".json":
                    ca, cb = _card(w, (fa, a_dir, ROOT)), _card(fb / w.name, (fb, b_dir, ROOT))
                    res["card"] = ca == cb or sorted(k for k in set(ca) | set(cb) if ca.get(k) != cb.get(k))
            ok &= all(v is True for v in res.values())
            print(f"{name:20s} {part:9s} {res}")
    return ok


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "record":
        record(sys.argv[2], sys.argv[3:] or list(TRAINERS))
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        raise SystemExit(0 if compare(sys.argv[2], sys.argv[3]) else 1)
    else:
        raise SystemExit(__doc__)
