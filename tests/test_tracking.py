"""What every run leaves in MLflow: params, metrics, artifacts, tags, FAILED status, concurrent runs."""

import csv
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from benchmark import runner
from benchmark.config import compose
from core.registry import METHODS
from conftest import REPO, bench, tiny_overrides


def run_once(tiny_synface, uri, *extra):
    cfg = compose([f"tracking.uri={uri}", *tiny_overrides(tiny_synface), *extra])
    return runner.run(cfg, command="test")


def only_run(uri, experiment="shape_recon"):
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, runs


def test_run_records_params_metrics_artifacts_and_tags(workdir, tiny_synface):
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    summary = run_once(tiny_synface, uri, "method=ellipsoid", "ablation=flat_init", "seed=3")
    client, runs = only_run(uri)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["method.name"] == "ellipsoid" and params["method.shape_prior.kind"] == "flat"
    assert params["seed"] == "3" and params["dataset.root"] == str(tiny_synface)
    for key in ("side_mean", "side_std", "mad_mean", "mad_std", "mad_exact_mean", "mad_exact_std", "n_images",
                "wall_time_s"):
        assert key in metrics
    assert metrics["side_mean"] == pytest.approx(summary["side_mean"])
    assert metrics["n_images"] == 30
    # the image loop's wall time per image (prepare excluded) fits inside the run's wall time
    assert 0 < metrics["time_wall_per_image_s"] <= metrics["wall_time_s"] / 30
    assert tags["ablation"] == "flat_init" and tags["seed"] == "3" and tags["device"] == "cpu"
    assert len(tags["git_commit"]) >= 7 and tags["command"] == "test"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"per_image.csv", "config.yaml", "samples"} <= artifacts
    local = client.download_artifacts(run.info.run_id, "per_image.csv", str(workdir))
    rows = list(csv.DictReader(open(local)))
    assert len(rows) == 30 and {"name", "side", "mad", "mad_exact"} <= set(rows[0])
    assert sum(float(r["side"]) for r in rows) / 30 == pytest.approx(metrics["side_mean"], rel=1e-6)
    pngs = client.list_artifacts(run.info.run_id, "samples")
    assert pngs and pngs[0].path.endswith(".png")


def test_default_store_is_in_the_working_directory(workdir, tiny_synface):
    cfg = compose(["method=const_depth", *tiny_overrides(tiny_synface)])
    runner.run(cfg)
    assert (workdir / "mlflow.db").is_file()
    assert only_run(f"sqlite:///{workdir / 'mlflow.db'}")[1][0].info.status == "FINISHED"


def test_environment_variable_selects_the_store(workdir, tiny_synface, monkeypatch):
    uri = f"sqlite:///{workdir / 'env.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    runner.run(compose(["method=const_depth", *tiny_overrides(tiny_synface)]))
    assert not (workdir / "mlflow.db").exists()
    assert len(only_run(uri)[1]) == 1


class Exploding:
    def __init__(self, depth=1.0):
        pass

    def prepare(self, ctx):
        pass

    def reconstruct(self, batch):
        raise RuntimeError("boom in reconstruct")


def test_a_run_that_raises_is_marked_failed(workdir, tiny_synface, monkeypatch):
    METHODS.names()  # load the built-ins first, then add the test plugin for this test only
    monkeypatch.setitem(METHODS._entries, "_exploding_for_tests", Exploding)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    with pytest.raises(RuntimeError, match="boom"):
        run_once(tiny_synface, uri, "method=const_depth", "method.name=_exploding_for_tests")
    _, runs = only_run(uri)
    assert runs[0].info.status == "FAILED"
    assert "boom in reconstruct" in runs[0].data.tags["error"]
    assert "side_mean" not in runs[0].data.metrics


def test_same_config_and_seed_repeat_exactly(workdir, tiny_synface):
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    a = run_once(tiny_synface, uri, "method=avg_depth")
    b = run_once(tiny_synface, uri, "method=avg_depth")
    scores = lambda summary: {k: v for k, v in summary.items() if not k.startswith("time_")}  # noqa: E731
    assert scores(a) == scores(b) and "time_wall_per_image_s" in a  # every score repeats; wall times do not


def test_two_processes_started_together_are_both_recorded(workdir, tiny_synface):
    uri = f"sqlite:///{workdir / 'fresh.db'}"  # a store neither process has seen: both race to create it
    cmd = [sys.executable, "-m", "benchmark.cli", "run", f"tracking.uri={uri}", *tiny_overrides(tiny_synface)]
    procs = [subprocess.Popen([*cmd, f"method={m}"], cwd=workdir, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for m in ("const_depth", "ellipsoid")]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    _, runs = only_run(uri)
    assert sorted(r.data.tags["method"] for r in runs) == ["const_depth", "ellipsoid"]
    assert all(r.info.status == "FINISHED" for r in runs)


@pytest.mark.slow
def test_runs_and_reports_through_an_mlflow_tracking_server(workdir, tiny_synface):
    """tracking.uri=http://...: a local `mlflow server` (its own sqlite store and artifact folder) takes the run."""
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                               f"sqlite:///{workdir / 'server.db'}", "--artifacts-destination", str(workdir / "art"),
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).read() == b"OK":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start within 60 s")
        run = bench("run", "method=const_depth", "eval.limit=2", f"tracking.uri={url}", *tiny_overrides(tiny_synface),
                    cwd=workdir)
        assert run.returncode == 0, run.stderr[-2000:]
        report = bench("report", f"tracking.uri={url}", f"report.out_dir={workdir / 'rep'}", cwd=workdir)
        assert report.returncode == 0, report.stderr[-2000:]
        assert "| const_depth | none | 2 |" in (workdir / "rep" / "shape_recon.md").read_text()
        assert not (workdir / "mlflow.db").exists()  # nothing went to the default local store
        assert list((workdir / "art").rglob("per_image.csv"))  # artifacts went through the server
    finally:
        server.terminate()
        server.wait(30)


def test_a_killed_runs_mlflow_run_is_closed_failed_by_the_next_run(workdir):
    """A process that dies without closing its run (SIGKILL) leaves it RUNNING; the next run on the host ends it."""
    from benchmark import tracking

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    code = ("import os; from benchmark import tracking; "
            f"t = tracking.open_run('{uri}', 'orphans', 'killed', {{}}, {{}}); print(t.run_id, flush=True); os._exit(0)")
    dead = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    run_id = dead.stdout.strip().splitlines()[-1]
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(run_id).info.status == "RUNNING"
    with tracking.start_run(uri, "orphans", "next", {}, {}) as tracker:
        assert client.get_run(tracker.run_id).info.status == "RUNNING"  # a live run is left alone
    killed = client.get_run(run_id)
    assert killed.info.status == "FAILED" and "ended without closing the run" in killed.data.tags["error"]


def test_a_killed_run_is_closed_by_any_command_on_the_store(workdir):
    """Whatever experiment the killed run belongs to, the next command that opens the store (here `bench report`,
    which opens no run of its own) ends it FAILED."""
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    code = ("import os; from benchmark import tracking; "
            f"t = tracking.open_run('{uri}', 'elsewhere', 'killed', {{}}, {{}}); print(t.run_id, flush=True); "
            "os._exit(0)")
    dead = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    run_id = dead.stdout.strip().splitlines()[-1]
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(run_id).info.status == "RUNNING"
    report = bench("report", f"tracking.uri={uri}", f"report.out_dir={workdir / 'rep'}", cwd=workdir)
    assert client.get_run(run_id).info.status == "FAILED", report.stderr[-2000:]


def test_a_run_that_fails_while_opening_ends_failed_with_its_error(workdir, monkeypatch):
    from benchmark import tracking

    uri = f"sqlite:///{workdir / 'mlflow.db'}"

    def broken(self, tags):
        raise OSError("disk full")

    monkeypatch.setattr(tracking.Tracker, "set_tags", broken)
    with pytest.raises(OSError, match="disk full"):
        tracking.open_run(uri, "opening", "broken", {}, {})
    (run,) = MlflowClient(tracking_uri=uri).search_runs([MlflowClient(tracking_uri=uri).get_experiment_by_name(
        "opening").experiment_id])
    assert run.info.status == "FAILED" and "OSError while opening the run: disk full" in run.data.tags["error"]
