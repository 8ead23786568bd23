"""HoloGAN: volume rotation geometry, generator determinism, a training step, resume, and the method's errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from core.errors import BenchError
from methods.base import PrepareContext
from methods.common.yaw import Calibration
from methods.hologan import training
from methods.hologan.method import HoloGANRotation
from methods.hologan.model import Discriminator, Generator, init_seed_latent, rotate_volume

TINY_G = {"z_dim": 8, "c0": 4, "c3d": [4, 4], "c_rot": 2, "c_proj": 8, "c2d": [8, 4]}
TINY_D = {"z_dim": 8, "channels": [4, 8, 8]}


def _angles(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# ------------------------------------------------------------------------------------------------ geometry
def test_zero_rotation_is_identity():
    v = torch.randn(2, 3, 6, 6, 6)
    out = rotate_volume(v, _angles(0, 0), _angles(0, 0))
    assert torch.allclose(out, v, atol=1e-6, rtol=0)


def test_azimuth_90_matches_hand_permutation():
    n = 5
    v = torch.randn(1, 2, n, n, n)
    # R = Ry(90) moves x -> -z and z -> x; the output at (x, y, z) samples the input at R^T (x, y, z) = (-z, y, x):
    # voxel [d, h, w] (z, y, x) reads input voxel [w, h, n - 1 - d].
    ref = torch.empty_like(v)
    for d in range(n):
        for h in range(n):
            for w in range(n):
                ref[..., d, h, w] = v[..., w, h, n - 1 - d]
    out = rotate_volume(v, _angles(90), _angles(0))
    assert torch.allclose(out, ref, atol=1e-5, rtol=0)
    assert not torch.allclose(rotate_volume(v, _angles(-90), _angles(0)), ref, atol=1e-3)  # the sign matters


def test_elevation_90_matches_hand_permutation():
    n = 4
    v = torch.randn(1, 1, n, n, n)
    # Rx(90): the output at (x, y, z) samples (x, z, -y): voxel [d, h, w] reads [n - 1 - h, d, w].
    ref = torch.empty_like(v)
    for d in range(n):
        for h in range(n):
            ref[..., d, h, :] = v[..., n - 1 - h, d, :]
    assert torch.allclose(rotate_volume(v, _angles(0), _angles(90)), ref, atol=1e-5, rtol=0)


def test_rotation_there_and_back_recovers_interior():
    n = 16
    c = (torch.arange(n) + 0.5) / n * 2 - 1
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    v = torch.stack([torch.sin(2 * x + y) * torch.cos(z), torch.exp(-(x**2 + 2 * y**2 + z**2))])[None]
    back = rotate_volume(rotate_volume(v, _angles(30), _angles(0)), _angles(-30), _angles(0))
    inside = (x**2 + y**2 + z**2).sqrt() < 0.6
    err = (back - v)[..., inside].abs()
    assert float(err.max()) < 0.05, float(err.max())
    moved = rotate_volume(v, _angles(30), _angles(0))
    assert float((moved - v)[..., inside].abs().max()) > 0.2  # a real rotation happened in between


def test_rotate_volume_rejects_non_cubic():
    with pytest.raises(ValueError, match="N, N, N"):
        rotate_volume(torch.zeros(1, 1, 4, 4, 8), _angles(0), _angles(0))


# ----------------------------------------------------------------------------------------------- generator
def test_generator_shape_and_seed_determinism():
    torch.manual_seed(0)
    g = Generator(**TINY_G).eval()
    z = torch.cat([init_seed_latent(3, 8), init_seed_latent(3, 8), init_seed_latent(4, 8)])
    with torch.no_grad():
        out = g(z, _angles(10, 10, 10))
    assert out.shape == (3, 3, 32, 32)
    assert float(out.abs().max()) <= 1
    assert torch.equal(out[0], out[1]) and not torch.equal(out[0], out[2])
    with torch.no_grad():
        turned = g(z[:1], _angles(40))
    assert not torch.allclose(turned, out[:1], atol=1e-4)  # the azimuth changes the image


# ----------------------------------------------------------------------------------------- training, resume
def _state(seed: int = 0) -> training.HoloTrainState:
    cfg = training.HoloTrainConfig(batch_size=4, d_reg_every=2)
    return training.create_state(TINY_G, TINY_D, cfg, "cpu", seed=seed)


def test_train_step_finite_and_resume_bit_exact(tmp_path: Path):
    data = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    state = _state()
    logs = training.train_step(state, data)
    assert {"loss_d", "loss_g", "id_d", "id_g", "r1"} <= set(logs)
    assert all(math.isfinite(v) for v in logs.values())
    assert all(torch.isfinite(p).all() for p in state.g.parameters())
    training.save_checkpoint(tmp_path / "checkpoint.pt", state)
    logs_a = training.train_step(state, data)

    resumed = training.load_checkpoint(tmp_path / "checkpoint.pt", "cpu")
    assert resumed.step == 1
    logs_b = training.train_step(resumed, data)
    assert logs_a == logs_b
    for a, b in [(state.g, resumed.g), (state.d, resumed.d), (state.g_ema, resumed.g_ema)]:
        for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(pa, pb), name


# ------------------------------------------------------------------------------------------------- method
def _ctx(tmp_path: Path) -> PrepareContext:
    return PrepareContext(device=torch.device("cpu"), seed=0, work_dir=tmp_path, load_split=lambda s: [],
                          dataset_name="synface_proc")


def test_missing_weights_names_the_fix(tmp_path: Path):
    method = HoloGANRotation(weights=str(tmp_path / "absent.safetensors"))
    with pytest.raises(BenchError, match="bench train model=hologan"):
        method.prepare(_ctx(tmp_path))


def test_rotate_shapes_and_source_is_canonical(tmp_path: Path):
    torch.manual_seed(0)
    g, d = Generator(**TINY_G), Discriminator(**TINY_D)
    path = training.export_weights(tmp_path / "h.safetensors", g, d, {"train_config": {"azimuth_range": 45.0}})
    method = HoloGANRotation(weights=str(path))
    method.load("cpu")
    method.calibration = Calibration(deg_per_unit=-0.5, intercept=0.0, r2=1.0, n=1)  # as prepare would set it
    rot = method.rotate([3, 4], _angles(-10, 0, 10))
    assert rot.source.shape == (2, 3, 32, 32) and rot.rotated.shape == (2, 3, 3, 32, 32)
    assert rot.extras["azimuth_deg"] == [20.0, 0.0, -20.0]
    assert torch.allclose(rot.rotated[:, 1], rot.source, atol=1e-5)  # yaw 0 is the source (batching aside)
    with torch.no_grad():
        assert torch.allclose(rot.source[0], g.eval()(init_seed_latent(3, 8), _angles(0))[0], atol=1e-5)
    again = method.rotate([3, 4], _angles(-10, 0, 10))
    assert torch.equal(again.rotated, rot.rotated)


def test_registered_as_rotation_method():
    from core.registry import METHODS
    from methods.base import RotationMethod

    assert issubclass(METHODS.get("hologan"), RotationMethod)
