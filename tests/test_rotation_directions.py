"""The shared yaw regressor, direction selection and calibration, and the GANSpace / SeFa rotation methods."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from core.errors import BenchError
from methods.base import PrepareContext
from methods.common.w_directions import LatentEditor, layer_modulations, scale_to_spread
from methods.common.yaw import (DEFAULT_WEIGHTS, YawRegressor, calibrate, fit_line, load_yaw_regressor, predict_yaw,
                                select_direction)
from methods.ganspace import GANSpace, pca_directions
from methods.sefa import SeFa, sefa_directions
from methods.stylegan2.model import Generator

REPO = Path(__file__).resolve().parent.parent
GAN = REPO / "weights/stylegan2_synface_proc_32.safetensors"
REGRESSOR = REPO / DEFAULT_WEIGHTS


class MeanReader(nn.Module):
    """A stand-in regressor: 'yaw' (B,) = 100 x the mean of the red channel."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, images):
        return images[:, 0].flatten(1).mean(1) * 100


def _flat(value):
    """Images (K, 3, 8, 8) whose red channel is ``value`` (K,) / 100."""
    return (value / 100)[:, None, None, None].expand(-1, 3, 8, 8).clone()


# ------------------------------------------------------------------------------------------------ the regressor
def test_regressor_shape_and_resolution_independence():
    torch.manual_seed(0)
    net = YawRegressor(width=8).eval()
    small = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        out = net.predict(small)
        assert out.shape == (2, 2) and torch.equal(net(small), out[:, 0])
        big = small.repeat_interleave(2, -1).repeat_interleave(2, -2)  # 64 px, area-downsamples back exactly
        assert torch.allclose(net.predict(big), out, atol=1e-5)
        assert net(torch.zeros(3, 3, 20, 24)).shape == (3,)
    assert predict_yaw(net, small).shape == (2,)


def test_missing_regressor_weights_name_the_fix(tmp_path):
    with pytest.raises(BenchError, match="bench train model=yaw_regressor"):
        load_yaw_regressor(tmp_path / "nope.safetensors")


def test_shipped_regressor_reads_test_split_yaw():
    card = json.loads(REGRESSOR.with_suffix(".json").read_text())["training"]
    assert card["held_out"]["split"] == "test" and card["held_out"]["mae_yaw_deg"] < 3.0
    assert load_yaw_regressor()(torch.rand(1, 3, 32, 32)).shape == (1,)


@pytest.mark.slow
def test_bench_train_yaw_regressor_resumes_and_exports(tiny_synface, workdir):
    from benchmark.cli import main

    args = ["train", "model=yaw_regressor", "dataset=synface_proc", f"dataset.root={tiny_synface}", "device=cpu",
            "model.width=8", "model.batch_size=8", "model.val_images=16", "train.limit=64", "train.progress=false",
            "train.checkpoint_every=2", f"train.export={workdir}/yaw.safetensors", f"train.out_dir={workdir}/out"]
    assert main([*args, "model.iterations=2"]) == 0
    assert main([*args, "model.iterations=3"]) == 0
    card = json.loads((workdir / "yaw.json").read_text())["training"]
    assert card["iterations"] == 3 and card["dataset"]["generation_seed"] == 0
    assert 0 < card["held_out"]["mae_yaw_deg"] < 90 and card["held_out"]["images"] == 16
    assert torch.load(workdir / "out/checkpoint.pt", weights_only=True)["step"] == 3
    assert load_yaw_regressor(workdir / "yaw.safetensors").width == 8


# ------------------------------------------------------------------------------- selection and calibration
def test_calibration_recovers_a_known_slope():
    base = torch.linspace(-10, 10, 6)
    cal = calibrate(lambda b, s: _flat(b + 2.5 * s), base, [-3, -1, 0, 1, 3], MeanReader())
    assert cal.deg_per_unit == pytest.approx(2.5, abs=1e-3) and cal.r2 == pytest.approx(1.0, abs=1e-6)
    noise = torch.randn(6, generator=torch.Generator().manual_seed(0))
    noisy = calibrate(lambda b, s: _flat(b + 2.5 * s + s * s * noise), base, [-2, -1, 1, 2], MeanReader())
    assert 1.5 < noisy.deg_per_unit < 3.5 and noisy.r2 < 0.999
    with pytest.raises(BenchError, match="no yaw response"):
        calibrate(lambda b, s: _flat(b), base, [-1, 1], MeanReader())


def test_fit_line_matches_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    cal = fit_line(torch.from_numpy(x), torch.from_numpy(y))
    slope, intercept = np.polyfit(x, y, 1)
    r2 = np.corrcoef(x, y)[0, 1] ** 2
    assert (cal.deg_per_unit, cal.intercept, cal.r2) == pytest.approx((slope, intercept, r2), abs=1e-9)


def test_select_direction_picks_the_turning_candidate_and_its_sign():
    gains = [0.0, 0.3, -4.0, 1.0]  # candidate 2 turns most consistently, the wrong way
    jitter = torch.randn(5, generator=torch.Generator().manual_seed(1))
    make = lambda i: (lambda b, s: _flat(b + gains[i] * s + (0.5 * s * jitter if i != 2 else 0)))  # noqa: E731
    choice = select_direction(make, 4, torch.zeros(5), [-2, -1, 0, 1, 2], MeanReader())
    assert choice.index == 2 and choice.sign == -1.0 and choice.corr == pytest.approx(-1.0)
    assert abs(choice.scores[0]) < 0.9 and choice.turns_deg[2] == pytest.approx(8.0, abs=1e-4)


# --------------------------------------------------------------------------------------- GANSpace and SeFa maths
def test_pca_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 3.0
    comp, std, mean = pca_directions(torch.from_numpy(x))
    _, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    np.testing.assert_allclose(std.numpy(), s / np.sqrt(len(x) - 1), rtol=1e-5)
    np.testing.assert_allclose(np.abs((comp.double().numpy() * vt).sum(1)), np.ones(6), atol=1e-5)
    np.testing.assert_allclose(mean.numpy(), x.mean(0), rtol=1e-5)


def test_sefa_matches_a_hand_computation():
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=(5, 4)), rng.normal(size=(3, 4)) * 7]
    a = np.concatenate(weights)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    values, vectors = np.linalg.eigh(a.T @ a)
    order = np.argsort(values)[::-1]
    vec, val = sefa_directions([torch.from_numpy(w) for w in weights])
    np.testing.assert_allclose(val.numpy(), values[order], rtol=1e-5)
    np.testing.assert_allclose(np.abs((vec.double().numpy() * vectors[:, order].T).sum(1)), np.ones(4), atol=1e-5)


def test_layer_modulations_are_those_forward_feeds():
    torch.manual_seed(0)
    g = Generator(16, style_dim=8, n_mlp=2, max_channels=8).eval()
    mapping = layer_modulations(g)
    mods = [m for m in g.modules() if type(m).__name__ == "StyledConv"]
    seen: dict[int, torch.Tensor] = {}
    hooks = [s.conv.modulation.register_forward_hook(lambda m, i, o: seen.__setitem__(id(m), i[0].clone()))
             for s in mods]
    w = torch.randn(1, 8)
    plus = w[:, None].repeat(1, g.n_latent, 1)
    with torch.no_grad():
        g([plus], input_is_w=True)
        before = dict(seen)
        for i in range(g.n_latent):
            moved = plus.clone()
            moved[:, i] += 1
            g([moved], input_is_w=True)
            changed = {k for k in seen if not torch.equal(seen[k], before[k])}
            assert changed == {id(m) for m in mapping[i]}
    for h in hooks:
        h.remove()
    assert sum(map(len, mapping)) == len(mods)


def test_editor_edits_only_the_chosen_layers():
    torch.manual_seed(0)
    g = Generator(16, style_dim=8, n_mlp=2, max_channels=8).eval()
    editor = LatentEditor(g, [1, 3])
    w, d = torch.randn(2, 8), torch.randn(8)
    plus = w[:, None].repeat(1, g.n_latent, 1)
    plus[:, 1:3] += 0.7 * d
    with torch.no_grad():
        want = g([plus], input_is_w=True)[0].clamp(-1, 1)
    assert torch.allclose(editor.edit_fn(d)(w, 0.7), want, atol=1e-5)
    with pytest.raises(BenchError, match="layers"):
        LatentEditor(g, [0, 99])
    scaled = scale_to_spread(torch.eye(8)[:2] * 5, torch.randn(500, 8) * 2)
    assert scaled.norm(dim=1).sub(2).abs().max() < 0.3


# ------------------------------------------------------------------------------- the methods on our GAN
FAST = {"n_components": 6, "spread_samples": 2000, "select": {"samples": 12, "max_strength": 2.0, "points": 3},
        "calibration": {"samples": 24, "points": 5, "range_deg": 20.0}}


@pytest.mark.parametrize("cls,extra", [(GANSpace, {"n_samples": 3000}), (SeFa, {})])
def test_found_direction_turns_heads_monotonically_by_the_requested_yaw(cls, extra, tmp_path):
    method = cls(gan=str(GAN), **FAST, **extra)
    ctx = PrepareContext(torch.device("cpu"), 0, tmp_path, lambda split: None, "synface_proc")
    method.prepare(ctx)
    assert abs(method.info["corr"]) > 0.6 and method.info["calibration"]["r2"] > 0.3
    yaw = torch.tensor([-20.0, -10.0, 0.0, 10.0, 20.0])
    rot = method.rotate(list(range(8)), yaw)
    assert rot.source.shape == (8, 3, 32, 32) and rot.rotated.shape == (8, 5, 3, 32, 32)
    assert rot.source.min() >= -1 and rot.source.max() <= 1
    assert torch.allclose(rot.rotated[:, 2], rot.source, atol=1e-5)
    regressor = load_yaw_regressor()
    change = torch.stack([predict_yaw(regressor, rot.rotated[:, a]) for a in range(5)], 1)
    change = (change - predict_yaw(regressor, rot.source)[:, None]).mean(0)
    print(cls.name, method.info["component"], method.info["corr"], method.info["calibration"], change)
    assert (change.diff() > 0).all(), change
    assert (change - yaw).abs().max() < 8, change
    cached = cls(gan=str(GAN), **FAST, **extra)
    cached.prepare(ctx)  # from <work_dir>/<name>/<key>.safetensors
    assert torch.equal(cached.direction, method.direction) and len(list((tmp_path / cls.name).iterdir())) == 2
