"""MLflow tracking for runs: where the store is, what every run records, and failure handling.

The store defaults to ``sqlite:///<launch dir>/mlflow.db`` (artifacts under ``<launch dir>/mlruns``);
``MLFLOW_TRACKING_URI`` or ``tracking.uri=`` point elsewhere (another file, a server URL). mlflow is imported
lazily, on first use.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import platform
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from core.errors import BenchError

REPO_ROOT = Path(__file__).resolve().parent.parent


def resolve_uri(uri: str | None) -> str:
    """The tracking URI: ``uri`` if given, else ``$MLFLOW_TRACKING_URI``, else a sqlite file in the launch dir."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    local = _local_path(uri)
    if local is not None:
        folder = local.parent if uri.startswith("sqlite:") else local
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as err:
            raise BenchError(f"tracking location {local} is not writable ({err.strerror}); pass "
                             "tracking.uri=sqlite:///<writable path> or set MLFLOW_TRACKING_URI") from None
        if uri.startswith("sqlite:") and local.is_file() and local.stat().st_size > 0:
            with local.open("rb") as fh:
                if fh.read(16) != b"SQLite format 3\x00":
                    raise BenchError(f"tracking store {local} is not an SQLite database (damaged, or another file); "
                                     "move it aside or pass tracking.uri=sqlite:///<another path>")
    elif uri.startswith(("http://", "https://")):
        _check_server(uri)
    return uri


SERVER_TIMEOUT_S = 5.0


def _check_server(uri: str) -> None:
    """Fail in seconds, not after minutes of MLflow's retries, when a tracking server does not answer."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=SERVER_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return  # it answered: a server (or a proxy in front of one) is there
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise BenchError(f"tracking server {uri} does not answer ({reason}); start it (mlflow server --host ... "
                         f"--port ...) or pass another tracking.uri") from None


def _local_path(uri: str) -> Path | None:
    """The file or folder behind a local store URI; ``None`` for servers."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).absolute()
    if uri.startswith("file://"):
        return Path(uri[len("file://"):]).absolute()
    if "://" not in uri and not uri.startswith("databricks"):
        return Path(uri).absolute()
    return None


def _artifact_root(uri: str) -> str | None:
    """Artifacts of a local sqlite store go to ``mlruns/`` beside the database; others use the store's default."""
    local = _local_path(uri)
    return (local.parent / "mlruns").as_uri() if local is not None and uri.startswith("sqlite:") else None


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialise first access to a local store: two processes creating one sqlite schema at once would clash."""
    local = _local_path(uri)
    if local is None:
        yield
        return
    lock_path = Path(f"{local}.lock") if uri.startswith("sqlite:") else local.parent / f".{local.name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def git_commit() -> str:
    """The repository's commit (with ``-dirty`` if it has uncommitted changes), or ``unknown``."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{head}-dirty" if dirty else head
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys: ``{"a": {"b": 1}} -> {"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class Tracker:
    """An active MLflow run: thin helpers so callers never touch mlflow directly."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step or 0) for k, v in metrics.items()])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_image(self, image, artifact_file: str) -> None:
        """Log an ``(H, W, 3)`` uint8 array as a PNG artifact."""
        self.client.log_image(self.run_id, image, artifact_file=artifact_file)

    def log_file(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def artifact_path(self, artifact_file: str) -> str:
        """Where a logged artifact lives (a local path for file stores, else its URI)."""
        root = self.client.get_run(self.run_id).info.artifact_uri
        return (root[len("file://"):] if root.startswith("file://") else root).rstrip("/") + "/" + artifact_file

    def log_dir(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log every file under a folder, keeping its layout, under ``artifact_path``."""
        self.client.log_artifacts(self.run_id, str(path), artifact_path)


def client(uri: str | None):
    """An ``MlflowClient`` for the store, whose first access (creating a new sqlite schema) is serialised."""
    uri = resolve_uri(uri)
    from mlflow.tracking import MlflowClient

    with store_lock(uri), contextlib.redirect_stderr(io.StringIO()):
        found = MlflowClient(tracking_uri=uri)
        found.search_experiments(max_results=1)
    close_orphans(found)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def close_orphans(client) -> list[str]:
    """End FAILED the RUNNING runs of this host, in every experiment of the store, whose process is gone (killed
    with SIGKILL, out of memory, ...), so no run stays RUNNING for ever; sweep parent runs, which belong to a study
    rather than a process, are left. Every ``bench`` command that opens the store calls it. Returns the closed ids."""
    host = socket.gethostname()
    closed = []
    ids = [e.experiment_id for e in client.search_experiments(max_results=50000)]
    runs = client.search_runs(ids, filter_string=f"attributes.status = 'RUNNING' and tags.host = '{host}'",
                              max_results=5000) if ids else []
    for run in runs:
        pid = run.data.tags.get("pid", "")
        if not pid.isdigit() or "sweep.parent" in run.data.tags or _alive(int(pid)):
            continue
        client.set_tag(run.info.run_id, "error", f"process {pid} on {host} ended without closing the run (killed)")
        client.set_terminated(run.info.run_id, status="FAILED")
        closed.append(run.info.run_id)
    return closed


def open_run(uri: str | None, experiment: str, run_name: str, params: Mapping[str, Any],
             tags: Mapping[str, Any]) -> Tracker:
    """Create an MLflow run (status RUNNING) that records ``params``, ``tags``, the git commit, host, Python and
    torch versions; the caller ends it (:func:`start_run` does, or ``tracker.client.set_terminated``)."""
    uri = resolve_uri(uri)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    with store_lock(uri), contextlib.redirect_stderr(io.StringIO()):
        try:
            client = MlflowClient(tracking_uri=uri)
            found = client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else client.create_experiment(
                experiment, artifact_location=_artifact_root(uri))
            run = client.create_run(experiment_id, run_name=run_name)
        except MlflowException as err:
            raise BenchError(f"cannot use MLflow store {uri}: {err.message.splitlines()[0]}; check tracking.uri "
                             "or MLFLOW_TRACKING_URI") from None
    tracker = Tracker(client, run.info.run_id)
    try:
        close_orphans(client)
        import torch
        from mlflow.entities import Param

        base_tags = {"git_commit": git_commit(), "host": socket.gethostname(), "pid": os.getpid(),
                     "python": platform.python_version(), "torch": torch.__version__, "mlflow.runName": run_name}
        tracker.set_tags({**base_tags, **tags})
        flat = {k: ("null" if v is None else str(v)[:6000]) for k, v in params.items()}
        items = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            client.log_batch(run.info.run_id, params=items[i:i + 100])
    except BaseException as err:  # a run that fails while opening ends FAILED with its real error
        with contextlib.suppress(Exception):
            client.set_tag(run.info.run_id, "error", f"{type(err).__name__} while opening the run: {err}"[:5000])
            client.set_terminated(run.info.run_id, status="FAILED")
        raise
    return tracker


@contextlib.contextmanager
def start_run(uri: str | None, experiment: str, run_name: str, params: Mapping[str, Any],
              tags: Mapping[str, Any]) -> Iterator[Tracker]:
    """:func:`open_run` as a context: the run ends FINISHED, or FAILED with an ``error`` tag (or the end state an
    exception names in ``run_status``: a pruned sweep trial ends KILLED), and records its wall time."""
    tracker = open_run(uri, experiment, run_name, params, tags)
    start = time.time()
    try:
        yield tracker
    except BaseException as err:
        tracker.set_tags({"error": f"{type(err).__name__}: {err}"})
        tracker.log_metrics({"wall_time_s": time.time() - start})
        tracker.client.set_terminated(tracker.run_id, status=getattr(err, "run_status", "FAILED"))
        raise
    tracker.log_metrics({"wall_time_s": time.time() - start})
    tracker.client.set_terminated(tracker.run_id, status="FINISHED")
