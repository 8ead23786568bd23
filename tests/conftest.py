"""Shared fixtures: a small synface_proc dataset generated once per session, and isolated working directories."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Small enough for CI on 2 cores (about 10 s to generate), with a training split large enough for the per-pixel
# average depth to be a stable estimate.
TINY = {"train_size": 800, "val_size": 30, "test_size": 30, "image_size": 64, "seed": 0, "images_per_identity": 10,
        "asymmetry": 0.05}


def tiny_overrides(root) -> list[str]:
    return [f"dataset.root={root}"] + [f"dataset.generate.{k}={v}" for k, v in TINY.items()]


@pytest.fixture(scope="session")
def tiny_synface(tmp_path_factory) -> Path:
    """A synface_proc folder made through the real `bench data` code path."""
    from benchmark.cli import main

    root = tmp_path_factory.mktemp("data") / "synface_proc"
    assert main(["data", "dataset=synface_proc", *tiny_overrides(root)]) == 0
    return root


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """Run in a fresh directory with no inherited tracking URI, so default stores land in tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def bench(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the `bench` console entry point in a subprocess, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update({"PYTHONPATH": str(REPO), **(env or {})})
    return subprocess.run([sys.executable, "-m", "benchmark.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)
