"""experiment=face_rotation: the identity score of a tiny case against a hand computation, the plumbing through
insightface's ArcFace runner, and that every registered rotation method runs through the experiment."""

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from benchmark import runner
from benchmark.config import compose
from core.errors import BenchError
from core.registry import METHODS
from methods.base import Rotation, RotationMethod
from tests.conftest import tiny_overrides

YAW = (-20.0, 0.0, 20.0)


class MeanColour(nn.Module):
    """An 'embedding network' whose embedding is the image's mean colour: a 1x1 identity conv, then the mean."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3)[:, :, None, None])

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def colour(seed: int, yaw: float) -> list[float]:
    """The flat colour the fake rotator paints for ``seed`` turned by ``yaw``."""
    return [0.5 - yaw / 50.0, -0.4 + 0.1 * seed, 0.3]


class ColourRotator(RotationMethod):
    """Flat images whose colour drifts with yaw: identity is the cosine of the (quantised) colours."""

    def rotate(self, seeds, yaw_deg):
        def flat(c):
            return torch.tensor(c).view(3, 1, 1).expand(3, 8, 8)

        source = torch.stack([flat(colour(s, 0.0)) for s in seeds])
        rotated = torch.stack([torch.stack([flat(colour(s, float(y))) for y in yaw_deg]) for s in seeds])
        return Rotation(source=source, rotated=rotated)


def quantised(c: list[float]) -> np.ndarray:
    """What insightface's runner sees: uint8 pixels, then (u - 127.5) / 127.5."""
    u = np.round((np.clip(c, -1, 1) + 1) * 127.5)
    return (u - 127.5) / 127.5


def by_hand(seeds: list[int]) -> tuple[float, float]:
    """identity_mean (all pairs) and identity_std (population std over sources of their mean over angles)."""
    per_source = []
    for s in seeds:
        a = quantised(colour(s, 0.0))
        cos = [float(a @ (b := quantised(colour(s, y))) / (np.linalg.norm(a) * np.linalg.norm(b))) for y in YAW]
        per_source.append(sum(cos) / len(cos))
    mean = sum(per_source) / len(per_source)
    return mean, math.sqrt(sum((m - mean) ** 2 for m in per_source) / len(per_source))


@pytest.fixture(scope="module")
def mean_colour_onnx(tmp_path_factory):
    from metrics.identity_net import export_onnx

    return export_onnx(MeanColour(), tmp_path_factory.mktemp("onnx") / "mean_colour.onnx", image_size=8)


@pytest.fixture
def colour_rotator(monkeypatch):
    """``_test_colour_rotator`` in the method registry for one test only."""
    METHODS.names()  # load the built-ins first
    monkeypatch.setitem(METHODS._entries, "_test_colour_rotator", ColourRotator)


def test_face_rotation_score_matches_a_hand_computation(workdir, tiny_synface, mean_colour_onnx, colour_rotator):
    from mlflow.tracking import MlflowClient

    cfg = compose(["experiment=face_rotation", "experiment.sources=3", "experiment.angles=3",
                   "experiment.batch_size=2", "experiment.yaw_regressor=null",
                   f"metrics.identity.model_path={mean_colour_onnx}", *tiny_overrides(tiny_synface)])
    cfg.method = OmegaConf.create({"name": "_test_colour_rotator"})
    summary = runner.run(cfg)
    mean, std = by_hand([0, 1, 2])
    assert summary["identity_mean"] == pytest.approx(mean, abs=1e-5)
    assert summary["identity_std"] == pytest.approx(std, abs=1e-5)
    assert summary["n_sources"] == 3 and summary["n_angles"] == 3
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("face_rotation").experiment_id])
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"per_angle.csv", "per_source.csv", "identity_vs_angle.png", "samples"} <= names
    per_angle = open(client.download_artifacts(run.info.run_id, "per_angle.csv")).read().splitlines()
    assert per_angle[0].startswith("yaw_deg,identity_mean") and len(per_angle) == 4
    assert float(per_angle[2].split(",")[1]) == pytest.approx(1.0, abs=1e-6)  # yaw 0: the source itself

    # bench report: the identity table and the first 2 sources' rotation strips (source + 3 angles, one a line)
    from PIL import Image

    from benchmark.report_study import build

    report = compose(["report.faces=2", f"report.out_dir={workdir / 'rep'}", "tracking.experiment=none",
                      f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}"])
    build(report)
    table = (workdir / "rep" / "identity.md").read_text()
    assert "| _test_colour_rotator |" in table and "rotations/test_colour_rotator.png" in table
    strip = np.asarray(Image.open(workdir / "rep" / "rotations" / "test_colour_rotator.png"))
    logged = np.asarray(Image.open(client.download_artifacts(run.info.run_id, "samples/source_then_rotations.png")))
    tile = (logged.shape[1] - 2) // 4
    assert logged.shape[0] == 2 + 3 * tile and strip.shape == (2 + 2 * tile, logged.shape[1], 3)
    assert np.array_equal(strip, logged[:2 + 2 * tile, :, :3])


def test_shape_only_methods_are_refused(workdir, tiny_synface, mean_colour_onnx):
    cfg = compose(["experiment=face_rotation", "method=ellipsoid", f"metrics.identity.model_path={mean_colour_onnx}",
                   *tiny_overrides(tiny_synface)])
    with pytest.raises(BenchError, match="cannot rotate faces; experiment=face_rotation takes method="):
        runner.run(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ganspace", "sefa", "hologan"])
def test_rotation_methods_run_the_experiment(workdir, tiny_synface, method):
    """The shipped weights, 2 sources x 3 angles through the shipped identity model and yaw regressor."""
    cfg = compose(["experiment=face_rotation", f"method={method}", "experiment.sources=2", "experiment.angles=3",
                   *tiny_overrides(tiny_synface)])
    summary = runner.run(cfg)
    assert -1.0 <= summary["identity_mean"] <= 1.0 and summary["n_sources"] == 2
    assert "yaw_slope" in summary and math.isfinite(summary["yaw_error_mean_deg"])
