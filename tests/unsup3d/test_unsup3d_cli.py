"""`bench train model=unsup3d_cpu` (resumable, model card), `bench train model=view_light_prior` and the registered
`unsup3d` method through the experiment harness, on the tiny synface_proc and a tiny network."""

import json

import pytest

from benchmark.cli import main
from benchmark.config import compose
from core.errors import BenchError
from benchmark.runner import run
from methods.gan2shape.pseudo import load_view_light_prior
from tests.conftest import REPO, tiny_overrides

TINY_NET = ["model.nf_depth_albedo=8", "model.nf_view_light=8", "model.zdim=16", "model.gn_base=2",
            "model.conf_nf=8", "model.conf_zdim=16", "model.batch_size=4", "model.depth_prior_steps=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_synface):
    """Weights of a tiny Unsup3d trained for 2 iterations through `bench train`, then resumed to 3."""
    workdir = tmp_path_factory.mktemp("unsup3d")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    export = workdir / "weights" / "u.safetensors"
    disc = REPO / "weights" / "stylegan2_synface_proc_32.safetensors"
    args = ["train", "model=unsup3d_cpu", *tiny_overrides(tiny_synface), *TINY_NET, "train.limit=16",
            "model.perceptual=discriminator", f"model.perceptual_weights={disc}",
            "model.val_images=4", "train.eval_every=1", "train.log_every=1", "train.progress=false",
            f"train.out_dir={workdir / 'out'}", f"train.export={export}", f"tracking.uri={uri}", "device=cpu"]
    assert main([*args, "train.iterations=2"]) == 0
    assert json.loads(export.with_suffix(".json").read_text())["training"]["iterations"] == 2
    assert main([*args, "train.iterations=10", "model.iterations=3"]) == 0  # resumes; the model's schedule ends it
    return export, uri


def test_train_writes_card_with_validation(trained):
    export, _ = trained
    card = json.loads(export.with_suffix(".json").read_text())
    assert card["format"] == "gan2shape-bench.unsup3d" and card["model"]["symmetry"] is True
    t = card["training"]
    assert t["iterations"] == 3 and t["batch_size"] == 4 and t["command"].startswith("bench train model=unsup3d_cpu")
    assert t["validation"]["images"] == 4 and "side_mean" in t["validation"] and "mad_mean" in t["validation"]
    assert t["perceptual"]["perceptual"] == "discriminator" and len(t["perceptual"]["sha256"]) == 64
    assert {"loss", "loss_l1", "loss_perc"} <= set(t["losses"])


def test_view_light_prior_command(trained, tmp_path, tiny_synface):
    export, uri = trained
    view, light = tmp_path / "view.json", tmp_path / "light.json"
    assert main(["train", "model=view_light_prior", *tiny_overrides(tiny_synface), f"model.weights={export}",
                 f"model.view_out={view}", f"model.light_out={light}", "train.limit=12", f"tracking.uri={uri}",
                 "device=cpu"]) == 0
    assert load_view_light_prior(view, 6).cov.shape == (6, 6)
    assert load_view_light_prior(light, 4).cov.shape == (4, 4)
    assert json.loads(view.read_text())["images"] == 12


def test_unsup3d_method_in_the_harness(trained, workdir, tiny_synface):
    export, uri = trained
    base = ["method=unsup3d", *tiny_overrides(tiny_synface), f"method.weights={export}", "eval.limit=6",
            f"tracking.uri={uri}", "device=cpu"]
    summary = run(compose(base))
    assert summary["n_images"] == 6 and summary["side_mean"] > 0 and summary["mad_mean"] > 0
    # the no-symmetry ablation needs weights trained without symmetry: these are not
    with pytest.raises(BenchError, match="symmetry"):
        run(compose([*base, "ablation=no_symmetry", f"method.weights_no_symmetry={export}"]))
    # training belongs to `bench train`: a missing file is refused with the command that makes it
    with pytest.raises(BenchError, match="make them with `bench train model=unsup3d_cpu model.symmetry=true"):
        run(compose([*base, f"method.weights={export.parent / 'missing.safetensors'}"]))
