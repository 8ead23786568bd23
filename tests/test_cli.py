"""The `bench` command: listing, help, runs, reports and every bad-input case of the spine issue."""

import sqlite3

import numpy as np
import pytest
from PIL import Image

from benchmark.cli import main
from conftest import bench, tiny_overrides


def one_line_error(capsys_or_stderr: str) -> str:
    lines = [line for line in capsys_or_stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, capsys_or_stderr
    assert lines[0].startswith("bench: error: ") and "Traceback" not in capsys_or_stderr
    return lines[0]


def test_list_prints_registries_and_groups(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "methods: avg_depth, const_depth, ellipsoid" in out
    assert "datasets: image_folder, synface_bfm, synface_proc" in out
    for group in ("ablation", "experiment", "preset", "method", "dataset"):
        assert f"config group {group}:" in out
    assert "flat_init" in out and "shape_recon" in out and "paper" in out


def test_run_help_shows_groups(workdir):
    result = bench("run", "--help", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "method: avg_depth, const_depth, ellipsoid" in result.stdout
    assert "ablation: flat_init" in result.stdout and "preset: cpu, fast, paper" in result.stdout


@pytest.mark.parametrize("command", ["list", "data", "report", "sweep", "train", "convert", "sample", "invert"])
def test_every_command_has_help(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: bench {command}")
    if command == "train":
        assert "supervised" in out and "unsup3d_cpu" in out


@pytest.mark.parametrize("args, expected", [
    (["run", "method=nope"], "unknown method option 'nope'; valid method options: avg_depth, const_depth"),
    (["run", "dataset=nope"], "unknown dataset option 'nope'"),
    (["run", "ablation=[flat_init,nope]"], "unknown ablation option 'nope'"),
    (["run", "-m", "method=avg_depth,nope"], "unknown method option 'nope'"),
    (["run", "eval.limit=[1"], "no viable alternative"),
    (["run", "no_such_key=1"], "unknown config key 'no_such_key'; valid keys at the top level: "),
    (["run", "eval.limt=3"], "unknown config key 'eval.limt'; did you mean 'eval.limit'?"),
    (["train", "model=unsup3d_cpu", "model.lrr=1"], "did you mean 'model.lr'?"),
    (["run", "method=const_depth", "ablation=flat_init"], "does not take shape_prior"),
    (["data", "dataset=image_folder"], "no value for dataset.root"),
    (["run", "device=cuda"] if not __import__("torch").cuda.is_available() else ["run", "device=nope"], "device"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["run", "eval.limit=abc"], "eval.limit must be null (all) or an integer >= 1, got 'abc'"),
    (["run", "eval.limit=1.5"], "eval.limit must be"),
    (["run", "eval.limit=0"], "eval.limit must be"),
    (["run", "eval.limit=-1"], "eval.limit must be"),
    (["run", "eval.batch_size=0"], "eval.batch_size must be an integer >= 1"),
    (["run", "seed=abc"], "seed must be an integer"),
    (["invert", "input="], "input is empty"),
    (["run", "method=ellipsoid", "method.shape_prior.kind=cube"], "unknown shape prior 'cube'; valid: ellipsoid"),
    (["run", "method=ellipsoid", "method.shape_prior.near=1.1", "method.shape_prior.far=0.9"],
     "near (1.1) must be below far (0.9)"),
    (["run", "method=ellipsoid", "method.shape_prior.scale=0"], "method.shape_prior.scale must be > 0"),
    (["run", "method=gan2shape", "method.shape_prior.kind=cube"], "unknown shape prior 'cube'"),
    (["run", "method=gan2shape", "method.depth_pool=3"], "method.depth_pool must be an integer >= 1 that divides"),
    (["run", "method=gan2shape", "method.shape_prior.kind=pretrained"], "but method.pretrained is null"),
    (["run", "method=gan2shape", "method.parallel_images=0"], "method.parallel_images must be an integer >= 1"),
    (["run", "method=const_depth", "method.depth=nan"], "method.depth must be a positive finite number"),
    (["run", "method=const_depth", "method.depth=-1"], "method.depth must be a positive finite number"),
    (["run", "method=const_depth", "tracking.uri=http://127.0.0.1:9"], "tracking server http://127.0.0.1:9 does not"),
    (["report", "tracking.uri=http://127.0.0.1:9"], "does not answer"),
    (["run", "method=const_depth", "tracking.uri=sqlite:///not_a_db.db"], "is not an SQLite database"),
    (["run", "method=const_depth", "hydra.run.dir=/proc/nope"], "cannot create hydra.run.dir=/proc/nope"),
    (["sample", "n=1", "out_dir=/proc/nope"], "cannot create out_dir=/proc/nope"),
    (["run", "method=const_depth", "dataset.root=no_dataset_here"], "synface_proc dataset not found (no meta.json)"),
])
def test_bad_input_is_one_line(args, expected, capsys, workdir):
    (workdir / "not_a_db.db").write_bytes(b"these bytes are no database" * 10)
    assert main(args) == 2
    assert expected in one_line_error(capsys.readouterr().err)
    store = workdir / "mlflow.db"
    if store.exists():  # checks made up front open no run; later ones close theirs FAILED
        with sqlite3.connect(store) as db:
            assert db.execute("SELECT COUNT(*) FROM runs WHERE status = 'RUNNING'").fetchone() == (0,)


def test_a_file_named_outputs_is_one_line(workdir, capsys):
    (workdir / "outputs").write_text("not a folder")
    assert main(["run", "method=const_depth"]) == 2
    assert "outputs is a file; pass hydra.run.dir=<writable folder>" in one_line_error(capsys.readouterr().err)


def test_missing_dataset_folder_says_how_to_generate(workdir):
    result = bench("run", "method=const_depth", f"dataset.root={workdir / 'nowhere'}", cwd=workdir)
    assert result.returncode == 2
    assert "bench data dataset=synface_proc" in one_line_error(result.stderr)


def test_unwritable_tracking_location(workdir, tiny_synface, capsys):
    args = ["run", "method=const_depth", f"dataset.root={tiny_synface}", "tracking.uri=sqlite:////proc/nope/m.db"]
    result = bench(*args, cwd=workdir)
    assert result.returncode == 2
    assert "not writable" in one_line_error(result.stderr)


def test_unwritable_report_location(workdir, tiny_synface, capsys):
    uri = f"sqlite:///{workdir / 'm.db'}"
    assert bench("run", "method=const_depth", f"dataset.root={tiny_synface}", f"tracking.uri={uri}",
                 cwd=workdir).returncode == 0
    assert main(["report", f"tracking.uri={uri}", "report.out_dir=/proc/nope"]) == 2
    assert "cannot write the report" in one_line_error(capsys.readouterr().err)


def test_baselines_multirun_report_and_paper_ordering(workdir, tiny_synface, capsys):
    """`bench run -m` over the three baselines, then `bench report`: the paper's ordering holds."""
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    result = bench("run", "-m", "method=const_depth,avg_depth,ellipsoid", f"tracking.uri={uri}",
                   *tiny_overrides(tiny_synface), cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert main(["report", f"tracking.uri={uri}", f"report.out_dir={workdir / 'reports'}"]) == 0
    md = (workdir / "reports" / "shape_recon.md").read_text()
    assert (workdir / "reports" / "shape_recon.tex").read_text().count(r"\toprule") == 1
    assert "<table>" in (workdir / "reports" / "shape_recon.html").read_text()
    rows = {line.split("|")[1].strip(): line.split("|") for line in md.splitlines() if line.startswith("| ")}
    side = {m: float(rows[m][4].split("±")[0]) for m in ("const_depth", "avg_depth", "ellipsoid")}
    mad = {m: float(rows[m][5].split("±")[0]) for m in ("const_depth", "avg_depth", "ellipsoid")}
    # The paper's rows: constant null depth is worse than the average GT depth on both metrics.
    assert side["const_depth"] > side["avg_depth"] and mad["const_depth"] > mad["avg_depth"]
    # The ellipsoid prior alone (no paper row) already has much better normals than a plane.
    assert mad["const_depth"] > mad["ellipsoid"]
    assert "2.723 ± 0.371" in rows["const_depth"][7]  # the paper's figure beside ours
    assert rows["const_depth"][3].strip() == "30"
    # faces.md: the first 4 faces of every row, 5 tiles each (input, true depth, depth, true normals, normals)
    faces = (workdir / "reports" / "faces.md").read_text()
    assert sum(line.startswith("| ") and "](faces/" in line for line in faces.splitlines()) == 3
    strips = {m: np.asarray(Image.open(workdir / "reports" / "faces" / f"{m}-none.png")) for m in ("const_depth",
                                                                                                "avg_depth")}
    h, w, _ = strips["avg_depth"].shape
    tile = (w - 2) // 5
    assert (w - 2) % 5 == 0 and h == 2 + 4 * tile and strips["const_depth"].shape == (h, w, 3)
    assert np.array_equal(strips["const_depth"][:, :tile], strips["avg_depth"][:, :tile])  # the same input faces
    assert not np.array_equal(strips["const_depth"][:, 2 * tile:3 * tile], strips["avg_depth"][:, 2 * tile:3 * tile])
    # another configuration of a method gets its own row instead of replacing the default one
    result = bench("run", "method=ellipsoid", "method.shape_prior.scale=1.2", "eval.limit=4", f"tracking.uri={uri}",
                   *tiny_overrides(tiny_synface), cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "bench run ellipsoid" in result.stdout and "MLflow run" in result.stdout
    assert main(["report", f"tracking.uri={uri}", f"report.out_dir={workdir / 'reports'}"]) == 0
    lines = [ln for ln in (workdir / "reports" / "shape_recon.md").read_text().splitlines()
             if ln.startswith("| ellipsoid")]
    assert len(lines) == 2 and sum("method.shape_prior.scale=1.2" in ln for ln in lines) == 1


def test_ablation_study_rows_chosen_through_the_sweeper_params(workdir, tiny_synface):
    """The README's way to pick ablation rows, `experiment=ablations 'hydra.sweeper.params={row: ...}'`, runs
    exactly those rows (the output folder is resolved without the sweeper's parameters)."""
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    result = bench("run", "experiment=ablations", "eval.limit=2", 'hydra.sweeper.params={row: "const_depth,ellipsoid"}',
                   f"tracking.uri={uri}", *tiny_overrides(tiny_synface), cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("bench run ") == 2
    assert "bench run const_depth" in result.stdout and "bench run ellipsoid" in result.stdout
