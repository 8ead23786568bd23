"""One test for every registered training recipe (timm's idea): two steps on the tiny dataset, and the same two
steps interrupted after the first and resumed, give bit-identical checkpoints and weights.

A new trainer adds its model config and tiny settings to ``TINY_SETTINGS``; an unlisted one fails here."""

import pytest
import torch
from safetensors.torch import load_file

from benchmark.cli import main
from core.registry import TRAINERS
from methods.base import TrainRecipe
from tests.conftest import tiny_overrides

TINY_SETTINGS = {
    "supervised": ["model=supervised", "model.nf=8", "model.zdim=16", "model.gn_base=2", "model.batch_size=4",
                   "model.val_images=4"],
    "stylegan2": ["model=stylegan2_32", "model.size=16", "model.style_dim=16", "model.channels={4: 8, 8: 8, 16: 8}",
                  "model.batch_size=4", "eval.swd_images=4", "eval.swd_patches=4", "tracking.samples=4"],
    "hologan": ["model=hologan", "model.z_dim=8", "model.c0=8", "model.c3d=[8,8]", "model.c_rot=4", "model.c_proj=8",
                "model.c2d=[8,8]", "model.d_channels=[8,8,8]", "model.batch_size=4", "model.grid_rows=2",
                "eval.swd_images=4", "eval.swd_patches=4"],
    "yaw_regressor": ["model=yaw_regressor", "model.iterations=2", "model.width=8", "model.batch_size=8",
                      "model.val_images=16"],
    "identity": ["model=identity", "model.batch_size=16", "model.widths=[8,16]", "model.embedding_dim=16",
                 "model.negative_pairs=50", "model.val_split=val"],
    "unsup3d": ["model=unsup3d_cpu", "model.nf_depth_albedo=8", "model.nf_view_light=8", "model.zdim=16",
                "model.gn_base=2", "model.conf_nf=8", "model.conf_zdim=16", "model.batch_size=4", "model.val_images=4"],
}


def _flat(checkpoint: dict) -> dict:
    out = {}

    def walk(prefix, node):
        if isinstance(node, torch.Tensor):
            out[prefix] = node
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(f"{prefix}.{i}", v)

    walk("", {k: v for k, v in checkpoint.items() if k != "extra"})
    return out


SUFFIX = {"identity": ".onnx"}  # exports that are not safetensors
RECIPES = [name for name in TRAINERS.names() if isinstance(TRAINERS.get(name), type)
           and issubclass(TRAINERS.get(name), TrainRecipe)]
JOBS = sorted(set(TRAINERS.names()) - set(RECIPES))


def test_registry_holds_recipes_and_jobs():
    """Recipes run on the driver; the rest are jobs (``fn(cfg, overrides) -> int``) registered the same way."""
    assert set(RECIPES) == {"supervised", "unsup3d", "stylegan2", "hologan", "yaw_regressor", "identity"}
    assert set(JOBS) == {"view_light_prior", "gan2shape_pretrain"} and all(callable(TRAINERS.get(n)) for n in JOBS)


@pytest.mark.parametrize("arch", RECIPES)
def test_trainer_resumes_bit_exactly(arch, tiny_synface, tmp_path):
    assert arch in TINY_SETTINGS, f"add tiny settings for trainer {arch} to TINY_SETTINGS"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def train(name, iterations):
        out = tmp_path / name
        args = ["train", *TINY_SETTINGS[arch], *tiny_overrides(tiny_synface), "train.limit=32", "train.eval_every=1",
                "train.log_every=1", "train.checkpoint_every=1", "train.progress=false", f"train.out_dir={out}",
                f"train.export={out / ('w' + SUFFIX.get(arch, '.safetensors'))}", f"tracking.uri={uri}", "device=cpu",
                f"train.iterations={iterations}"]
        assert main(args) == 0
        return out

    straight = train("straight", 2)
    train("resumed", 1)
    resumed = train("resumed", 2)
    a = _flat(torch.load(straight / "checkpoint.pt", weights_only=True))
    b = _flat(torch.load(resumed / "checkpoint.pt", weights_only=True))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    name = "w" + SUFFIX.get(arch, ".safetensors")
    if name.endswith(".safetensors"):
        wa, wb = load_file(str(straight / name)), load_file(str(resumed / name))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    else:
        assert (straight / name).read_bytes() == (resumed / name).read_bytes()


def test_diverged_training_stops_with_one_line_and_keeps_its_checkpoint(tiny_synface, tmp_path, monkeypatch, capsys):
    """A non-finite loss stops the run at that step (MLflow run FAILED), naming the loss; the last checkpoint stays
    and the export is not written from the diverged weights."""
    import sqlite3

    recipe = TRAINERS.get("stylegan2")
    step = recipe.step

    def diverging(self, state):
        logs = step(self, state)
        return {**logs, "loss_d": float("nan")} if state.step == 3 else logs

    monkeypatch.setattr(recipe, "step", diverging)
    out, store = tmp_path / "run", tmp_path / "mlflow.db"
    args = ["train", *TINY_SETTINGS["stylegan2"], *tiny_overrides(tiny_synface), "train.limit=32",
            "train.eval_every=100", "train.checkpoint_every=2", "train.progress=false", f"train.out_dir={out}",
            f"train.export={out / 'w.safetensors'}", f"tracking.uri=sqlite:///{store}", "device=cpu",
            "train.iterations=5"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "training diverged: loss_d not finite at step 3" in err and "lower the learning rate" in err
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2
    assert not (out / "w.safetensors").exists()
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT status FROM runs").fetchall() == [("FAILED",)]
