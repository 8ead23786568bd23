"""The supervised upper bound: `bench train model=supervised` on the single training driver (model card, validation
on the val split, resume checks; bit-exact resume is tests/test_trainers.py) and the `supervised` method."""

import json

import pytest

from benchmark.cli import main
from benchmark.config import compose
from core.errors import BenchError
from benchmark.runner import run
from tests.conftest import tiny_overrides

TINY_NET = ["model.nf=8", "model.zdim=16", "model.gn_base=2", "model.batch_size=4", "model.val_images=4"]


def _train(tiny_synface, out, iterations, uri):
    export = out / "w.safetensors"
    args = ["train", "model=supervised", *tiny_overrides(tiny_synface), *TINY_NET, "train.progress=false",
            "train.eval_every=2", "train.log_every=1", "train.checkpoint_every=1", f"train.out_dir={out}",
            f"train.export={export}", f"tracking.uri={uri}", "device=cpu", f"train.iterations={iterations}"]
    assert main(args) == 0
    return export


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_synface):
    """Trained 4 steps."""
    work = tmp_path_factory.mktemp("supervised")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    return _train(tiny_synface, work / "straight", 4, uri), uri


def test_card_says_what_made_it(trained):
    straight, _ = trained
    meta = json.loads(straight.with_suffix(".json").read_text())
    assert meta["format"] == "gan2shape-bench.supervised" and meta["model"]["nf"] == 8
    card = meta["training"]
    assert card["iterations"] == 4 and card["command"].startswith("bench train model=supervised")
    assert card["dataset"]["train"]["generation_seed"] == 0 and card["dataset"]["val"]["split"] == "val"
    assert set(card["validation"]) >= {"side_mean", "mad_mean"} and "loss" in card["losses"]
    assert card["wall_time_s"] > 0 and card["seed"] == 0


def test_resume_with_other_settings_is_one_line_error(trained, tiny_synface, tmp_path, capsys):
    straight, uri = trained
    assert main(["train", "model=supervised", *tiny_overrides(tiny_synface), *TINY_NET, "model.lr=0.5",
              "train.progress=false", f"train.out_dir={straight.parent}", f"train.export={tmp_path / 'x.safetensors'}",
              f"tracking.uri={uri}", "device=cpu", "train.iterations=5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was trained with other model" in err[0]


def test_supervised_method_in_the_harness(trained, workdir, tiny_synface):
    straight, uri = trained
    cfg = compose(["method=supervised", *tiny_overrides(tiny_synface), f"method.weights={straight}",
                   "eval.limit=4", f"tracking.uri={uri}", "device=cpu"])
    summary = run(cfg)
    assert summary["n_images"] == 4 and summary["side_mean"] > 0 and summary["mad_mean"] > 0


def test_missing_weights_name_the_command(workdir, tiny_synface, tmp_path):
    missing = tmp_path / "none.safetensors"
    cfg = compose(["method=supervised", *tiny_overrides(tiny_synface), f"method.weights={missing}",
                   "eval.limit=2", f"tracking.uri=sqlite:///{tmp_path / 'm.db'}", "device=cpu"])
    with pytest.raises(BenchError, match="bench train model=supervised"):
        run(cfg)


def test_select_on_exports_the_best_validation_step(tiny_synface, tmp_path, capsys):
    """train.select_on keeps the export of the evaluation with the lowest figure; the card says which step."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    export = tmp_path / "w.safetensors"
    args = ["train", "model=supervised", *tiny_overrides(tiny_synface), *TINY_NET, "model.lr=0.05",
            "train.progress=false", "train.eval_every=1", "train.checkpoint_every=1", f"train.out_dir={tmp_path}",
            f"train.export={export}", f"tracking.uri={uri}", "device=cpu", "train.iterations=6",
            "train.select_on=mad_mean", "tracking.experiment=select"]
    assert main(args) == 0
    assert "the weights of step" in capsys.readouterr().out
    card = json.loads(export.with_suffix(".json").read_text())["training"]
    client = mlflow.tracking.MlflowClient(uri)
    run_id = client.search_runs([client.get_experiment_by_name("select").experiment_id])[0].info.run_id
    history = {m.step: m.value for m in client.get_metric_history(run_id, "val_mad_mean")}
    best = min(history, key=history.get)
    assert sorted(history) == [1, 2, 3, 4, 5, 6] and best < 6  # so the selection differs from the last step
    assert card["selected"] == {"on": "val_mad_mean", "step": best, "value": pytest.approx(history[best])}
    assert card["iterations"] == best and card["validation"]["mad_mean"] == pytest.approx(history[best])

    bad = [a for a in args if not a.startswith("train.select_on")] + ["train.select_on=nope", "train.iterations=7"]
    assert main(bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.select_on=nope is not a validation figure" in err[0] and "mad_mean" in err[0]
