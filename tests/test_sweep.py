"""`bench sweep` (Optuna over config keys, trials nested in MLflow), crash recovery, shared workers, scale-out."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, bench, tiny_overrides

SWEEP = ["sweep=ellipsoid_prior", "eval.limit=30", "eval.batch_size=5", "sweep.n_startup_trials=2"]


def _client(workdir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")


def _runs(workdir: Path, experiment: str = "sweep_ellipsoid_prior"):
    client = _client(workdir)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], run_view_type=3, max_results=500) if found else []


def _study(workdir: Path, name: str = "ellipsoid_prior", url: str | None = None):
    import optuna

    return optuna.load_study(study_name=name, storage=url or f"sqlite:///{workdir / 'optuna.db'}")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, workdir) -> tuple[str, str]:
    """``(storage url, study name)``: a sqlite file in the work folder, or a fresh study on the PostgreSQL server
    that ``.ci/run`` starts and names in BENCH_TEST_POSTGRES_URL (a developer without one skips those cases). The
    tests quote the url for Hydra: a socket url's ``?host=/path`` holds an ``=``."""
    if request.param == "sqlite":
        return f"sqlite:///{workdir / 'optuna.db'}", "ellipsoid_prior"
    url = os.environ.get("BENCH_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("no PostgreSQL server: .ci/run starts one; or set BENCH_TEST_POSTGRES_URL=postgresql://...")
    pytest.importorskip("psycopg", reason="PostgreSQL storage needs a driver: pip install 'psycopg[binary]'")
    return url, f"test_{os.getpid()}_{time.time_ns()}"


def _states(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def test_sweep_nests_trials_and_writes_a_tuned_config(workdir, tiny_synface, capsys):
    from benchmark.cli import main
    from benchmark.config import CONFIG_DIR, compose

    best = workdir / "best.yaml"
    assert main(["sweep", *SWEEP, *tiny_overrides(tiny_synface), "sweep.n_trials=4", f"sweep.best_config={best}"]) == 0
    study = _study(workdir)
    assert _states(study).get("COMPLETE", 0) + _states(study).get("PRUNED", 0) == 4
    runs = _runs(workdir)
    parents = [r for r in runs if "sweep.parent" in r.data.tags]
    children = [r for r in runs if "sweep.parent" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4 and {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    by_trial = {int(r.data.tags["optuna.trial"]): r for r in children}
    for trial in study.trials:  # each trial's run holds its objective value and its sampled parameters
        run = by_trial[trial.number]
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        if trial.state.name == "COMPLETE":
            assert run.data.metrics["side_mean"] == pytest.approx(trial.value)
        for key, value in trial.params.items():
            assert float(run.data.params[key]) == pytest.approx(value)
    assert parents[0].data.metrics["best_side_mean"] == pytest.approx(study.best_value)
    # the tuned config composes into a run with the best parameters
    target = CONFIG_DIR / "tuned" / "_test_sweep_best.yaml"
    target.write_text(best.read_text())
    try:
        cfg = compose(["tuned=_test_sweep_best"])
    finally:
        target.unlink()
    assert cfg.method.name == "ellipsoid"
    for key, value in study.best_params.items():
        assert cfg.method.shape_prior[key.rsplit(".", 1)[1]] == pytest.approx(value)
    # a rerun of the finished study runs no trial
    assert main(["sweep", *SWEEP, *tiny_overrides(tiny_synface), "sweep.n_trials=4", f"sweep.best_config={best}"]) == 0
    assert len(_study(workdir).trials) == 4 and len(_runs(workdir)) == 5


def test_pruned_trials_end_killed_in_mlflow(workdir, tiny_synface):
    """Median pruning on the running SIDE: a far-off prior is stopped early and its run ends KILLED."""
    from benchmark.cli import main

    args = [*SWEEP, *tiny_overrides(tiny_synface), "sweep.n_trials=6", "sweep.sampler=random", "sweep.seed=3",
            "sweep.n_startup_trials=1", "sweep.n_warmup_steps=0", f"sweep.best_config={workdir / 'b.yaml'}",
            "sweep.params={method.shape_prior.scale: {type: float, low: 0.2, high: 3.0}}"]
    assert main(["sweep", *args]) == 0
    study = _study(workdir)
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned, "expected the median pruner to stop at least one trial"
    status = {r.info.run_id: r.info.status for r in _runs(workdir)}
    assert all(status[t.user_attrs["mlflow_run_id"]] == "KILLED" for t in pruned)
    assert all(len(t.intermediate_values) < 6 for t in pruned)  # stopped before its last batch


def _wait_for(predicate, timeout: float, what: str, worker: subprocess.Popen | None = None):
    """Poll ``predicate`` until it returns something; fail at once, with the worker's output, if it ended first."""
    end = time.time() + timeout
    while time.time() < end:
        got = predicate()
        if got:
            return got
        if worker is not None and worker.poll() is not None:
            raise AssertionError(f"the worker ended (exit {worker.returncode}) before {what}:\n"
                                 f"{worker.stdout.read()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _running_trial_with_run(url: str, name: str):
    """A poll: (number of finished trials, a RUNNING trial's number) once a trial runs and another has finished.
    Each call closes its connections (polling a server every 0.2 s must not pile up clients)."""
    import optuna

    def poll():
        if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
            return None
        storage = None
        try:
            storage = optuna.storages.RDBStorage(url)
            trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        except Exception:  # the study or its tables do not exist yet
            return None
        finally:
            if storage is not None:
                storage.engine.dispose()
        done = sum(t.state.name == "COMPLETE" for t in trials)
        running = [t.number for t in trials if t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs]
        return (done, running[0]) if done >= 1 and running else None

    return poll


def _frozen_between_slices(worker: subprocess.Popen, poll, slice_s: float = 0.05):
    """A poll that lets ``worker`` run for ``slice_s`` seconds, freezes it (SIGSTOP) and then calls ``poll``: what
    ``poll`` sees stays true until the worker is let go again. It stays frozen once ``poll`` returns something.
    A poll that fails (a worker frozen inside a sqlite write locks the file) counts as nothing seen yet."""
    def step():
        worker.send_signal(signal.SIGCONT)
        time.sleep(slice_s)
        worker.send_signal(signal.SIGSTOP)
        try:
            return poll()
        except Exception:  # noqa: BLE001
            return None

    return step


def _popen(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    return subprocess.Popen([sys.executable, "-m", "benchmark.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_sigkill_mid_trial_then_restart_continues_the_study(workdir, tiny_synface, store):
    """Finished trials are kept, the killed one is FAIL (its MLflow run FAILED) and retried, nothing stays RUNNING."""
    url, name = store
    args = ["sweep", *SWEEP, *tiny_overrides(tiny_synface), "eval.batch_size=1", "sweep.n_trials=3",
            "sweep.heartbeat_s=1", "sweep.grace_s=2", f"sweep.best_config={workdir / 'b.yaml'}",
            f"sweep.storage='{url}'", f"sweep.name={name}"]
    worker = _popen(args, workdir)
    try:  # the worker runs in 0.05 s slices and is looked at only while frozen, so a short trial cannot slip by
        done, number = _wait_for(_frozen_between_slices(worker, _running_trial_with_run(url, name)), 300,
                                 "a trial mid-run", worker)
        assert _study(workdir, name, url).trials[number].state.name == "RUNNING"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    before = {t.number: t.value for t in _study(workdir, name, url).trials if t.state.name == "COMPLETE"}
    assert len(before) == done >= 1
    time.sleep(3)  # past the grace period: the killed worker's trial is stale
    result = bench(*args, cwd=workdir, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    study = _study(workdir, name, url)
    states = _states(study)
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == 3 and states.get("FAIL") == 1
    after = {t.number: t.value for t in study.trials if t.state.name == "COMPLETE"}
    assert all(after[n] == v for n, v in before.items())  # finished trials were kept, not redone
    failed = next(t for t in study.trials if t.state.name == "FAIL")
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == failed.number]
    assert len(retried) == 1 and retried[0].params == failed.params
    runs = {r.info.run_id: r for r in _runs(workdir)}
    assert runs[failed.user_attrs["mlflow_run_id"]].info.status == "FAILED"
    error = runs[failed.user_attrs["mlflow_run_id"]].data.tags["error"]  # closed by whichever noticed first:
    assert "worker lost" in error or "ended without closing the run" in error  # the stale trial, or the host's pid
    assert not [r for r in runs.values() if r.info.status == "RUNNING"]
    assert len([r for r in runs.values() if "sweep.parent" in r.data.tags]) == 1


@pytest.mark.slow
def test_two_workers_share_one_study(workdir, tiny_synface, store):
    """Two processes on one study finish exactly N trials, each with one MLflow run, under one parent."""
    url, name = store
    n = 6
    args = ["sweep", *SWEEP, *tiny_overrides(tiny_synface), f"sweep.n_trials={n}",
            f"sweep.best_config={workdir / 'b.yaml'}", f"sweep.storage='{url}'", f"sweep.name={name}"]
    workers = [_popen([*args, f"sweep.seed={seed}"], workdir) for seed in (0, 100)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    study = _study(workdir, name, url)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    surplus = [t for t in study.trials if t.user_attrs.get("surplus")]
    assert len(finished) == n and len(study.trials) == n + len(surplus)
    runs = _runs(workdir)
    children = [r for r in runs if "sweep.parent" not in r.data.tags]
    assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == sorted(t.number for t in finished)
    assert len({t.user_attrs["mlflow_run_id"] for t in finished}) == n
    # one parent (workers racing on a server store may each open one: the later is ended and deleted)
    assert len([r for r in runs if "sweep.parent" in r.data.tags and r.info.lifecycle_stage == "active"]) == 1
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_bad_sweep_input_is_a_clear_error(workdir, tiny_synface, capsys):
    from benchmark.cli import main

    assert main(["sweep", *tiny_overrides(tiny_synface)]) == 2
    assert "needs a search space: sweep=<name>" in capsys.readouterr().err
    assert main(["sweep", *SWEEP, *tiny_overrides(tiny_synface), "sweep.storage=nosuchdb://x"]) == 2
    assert "cannot open Optuna storage" in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("sweep.metric=nope", "sweep.metric nope is not a summary metric of experiment shape_recon; choose one of"),
    ("+sweep.params.method.shape_prior.near={type:cube}", "type must be float, int or categorical, got 'cube'"),
    ("+sweep.params.method.shape_prior.near={type:float,low:0.95,high:0.9}", "low 0.95 is above high 0.9; swap"),
    ("+sweep.params.method.shape_prior.near={type:float,low:0,high:1,log:true}", "a log scale needs low > 0"),
    ("+sweep.params.method.shape_prior.near={type:float,low:a,high:1}", "needs numeric low and high"),
    ("+sweep.params.method.shape_prior.skale={type:float,low:0.5,high:1}", "did you mean 'method.shape_prior.scale'"),
    ("+sweep.params.method.shape_prior.kind={type:categorical,choices:[]}", "non-empty list of choices"),
])
def test_wrong_search_space_fails_before_the_first_trial(workdir, tiny_synface, capsys, override, message):
    """Caught up front: no trial, no study, no MLflow run (so none left RUNNING)."""
    from benchmark.cli import main

    assert main(["sweep", *SWEEP, *tiny_overrides(tiny_synface), override, "sweep.n_trials=1",
                 f"sweep.best_config={workdir / 'b.yaml'}"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (workdir / "optuna.db").exists() and not _runs(workdir)


@pytest.mark.slow
def test_joblib_launcher_runs_two_jobs_in_parallel(workdir, tiny_synface):
    """Hydra's joblib launcher (local parallel runs): two methods, two processes, two finished MLflow runs."""
    result = bench("run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "method=const_depth,ellipsoid",
                   "eval.limit=5", *tiny_overrides(tiny_synface), cwd=workdir, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    runs = _runs(workdir, "shape_recon")
    assert sorted((r.data.tags["method"], r.info.status) for r in runs) == [("const_depth", "FINISHED"),
                                                                           ("ellipsoid", "FINISHED")]


@pytest.mark.slow
def test_submitit_local_launcher_runs_two_jobs(workdir, tiny_synface):
    """Hydra's submitit launcher in its local mode: the SLURM path (job pickling, submission folders, result
    collection) up to the scheduler. Two methods, two submitit jobs, two finished MLflow runs."""
    result = bench("run", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                   "hydra.launcher.cpus_per_task=1", "method=const_depth,ellipsoid", "eval.limit=5",
                   *tiny_overrides(tiny_synface), cwd=workdir, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Submitit 'local' sweep output dir" in result.stdout + result.stderr
    assert len(list(workdir.rglob(".submitit/*/*_submitted.pkl"))) == 2
    runs = _runs(workdir, "shape_recon")
    assert sorted((r.data.tags["method"], r.info.status) for r in runs) == [("const_depth", "FINISHED"),
                                                                           ("ellipsoid", "FINISHED")]
