"""Unsup3d training: the loss decreases, a resumed run reaches the same state, weights round-trip."""

import pytest
import torch

from core.errors import BenchError
from methods.unsup3d import training
from methods.unsup3d.model import Unsup3dConfig
from methods.unsup3d.training import TrainConfig

TINY = Unsup3dConfig(nf_depth_albedo=8, nf_view_light=8, zdim=16, gn_base=2, conf_nf=8, conf_zdim=16)


def _data(n=4):
    """A few 64x64 uint8 images: shaded discs of varied colour and position on a dark background."""
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    imgs = []
    for i in range(n):
        r2 = (yy - 32 - 2 * i) ** 2 + (xx - 30 - i) ** 2
        disc = (r2 < 20**2).float() * (1 - r2 / 800).clamp(0, 1)
        color = torch.tensor([0.9, 0.6 + 0.05 * i, 0.4])[:, None, None]
        imgs.append((disc * color * 255 + 20).clamp(0, 255).to(torch.uint8))
    return torch.stack(imgs)


def _state(**kw):
    return training.create_state(TINY, TrainConfig(**{"batch_size": 4, "lr": 1e-3, **kw}), seed=0)


def _loss(state, data):
    from methods.unsup3d.losses import unsup3d_loss

    with torch.no_grad():
        return float(unsup3d_loss(state.net(training.as_float_images(data))).total)


def _train(state, data, iterations, on_step=None):
    while state.step < iterations:
        logs = training.train_step(state, data)
        if on_step is not None:
            on_step(state, logs)


def test_training_a_few_iterations_decreases_the_loss():
    data = _data()
    state = _state()
    before = _loss(state, data)
    logs = []
    _train(state, data, 15, on_step=lambda st, l: logs.append(l))
    assert state.step == 15 and len(logs) == 15
    assert {"loss", "loss_l1", "loss_l1_flip", "loss_perc", "epoch"} <= set(logs[-1])
    assert _loss(state, data) < before - 0.1


def test_resumed_training_reaches_the_same_state(tmp_path):
    data = _data(8)
    straight = _state(batch_size=2)
    _train(straight, data, 6)

    first = _state(batch_size=2)
    _train(first, data, 3)
    training.save_checkpoint(tmp_path / "ckpt.pt", first)
    resumed = training.load_checkpoint(tmp_path / "ckpt.pt")
    assert resumed.step == 3
    _train(resumed, data, 6)

    a, b = straight.net.state_dict(), resumed.net.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa, sb = straight.optim.state_dict()["state"], resumed.optim.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)


def test_depth_prior_phase_fits_the_ellipsoid_and_leaves_the_other_networks_alone():
    data = _data()
    state = _state(depth_prior_steps=30, depth_prior_lr=3e-3)
    target = training.depth_prior(state.cfg, 64)
    images = training.as_float_images(data)

    def gap():
        with torch.no_grad():
            return float((state.net.canonical_depth(images)[0] - target).abs().mean())

    before, others = gap(), {k: v.clone() for k, v in state.net.state_dict().items() if not k.startswith("netD")}
    logs = []
    _train(state, data, 30, on_step=lambda st, l: logs.append(l))
    assert gap() < 0.7 * before and set(logs[-1]) == {"depth_prior", "epoch"}
    assert all(torch.equal(v, state.net.state_dict()[k]) for k, v in others.items())
    _train(state, data, 31)  # the photometric phase starts with a fresh Adam at the training lr
    assert state.optim.param_groups[0]["lr"] == state.cfg.lr
    assert all(s["step"] == 1 for s in state.optim.state.values())


def test_resume_across_the_depth_prior_phase_is_exact(tmp_path):
    data = _data(8)
    straight = _state(batch_size=2, depth_prior_steps=3)
    _train(straight, data, 6)
    first = _state(batch_size=2, depth_prior_steps=3)
    _train(first, data, 2)
    training.save_checkpoint(tmp_path / "ckpt.pt", first)
    resumed = training.load_checkpoint(tmp_path / "ckpt.pt")
    _train(resumed, data, 6)
    a, b = straight.net.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_view_spread_prior_follows_its_schedule_and_survives_export(tmp_path):
    from dataclasses import replace

    data = _data(8)
    state = training.create_state(replace(TINY, view_spread=True), TrainConfig(
        batch_size=8, lr=1e-3, view_spread_schedule=[[2, 10.0], [4, 20.0]]), seed=0)
    images = training.as_float_images(data)
    _train(state, data, 2)  # before its first step the prior is off: raw yaw, no running statistics
    assert state.net.view_spread.tolist() == [0.0, 1.0, 0.0]
    raw = state.net.netV(images)[:, 1]
    assert torch.equal(state.net(images).view[:, 1], raw)
    _train(state, data, 4)
    assert float(state.net.view_spread[2]) == 15.0 and float(state.net.view_spread[1]) != 1.0  # half-way: 15
    _train(state, data, 5)
    state.net.train()
    yaw_deg = state.net(images).view[:, 1] * TINY.rot_range_deg
    assert abs(float(yaw_deg.std()) - 20.0) < 0.1 and abs(float(yaw_deg.mean())) < 1e-3  # std has a 1e-6 floor
    raw = state.net.netV(images)[:, 1].detach()
    path = training.save_weights(tmp_path / "u.safetensors", state.net, {})
    net, _ = training.load_weights(path)  # evaluation: the running statistics and the last spread
    mean, std = state.net.view_spread[0], state.net.view_spread[1]
    assert torch.allclose(net(images).view[:, 1], (raw - mean) / std * 20.0 / TINY.rot_range_deg, atol=1e-6)
    assert "view_spread" not in training.create_state(TINY, TrainConfig()).net.state_dict()  # published keys
    with pytest.raises(BenchError, match="go together"):
        training.split_settings({"view_spread": True})
    with pytest.raises(BenchError, match="increasing steps"):
        TrainConfig(view_spread_schedule=[[5, 10.0], [5, 20.0]])


def test_view_spread_pitch_standardises_the_pitch_too(tmp_path):
    from dataclasses import replace

    data = _data(8)
    cfg = replace(TINY, view_spread=True, view_spread_pitch=0.5)
    state = training.create_state(cfg, TrainConfig(batch_size=8, lr=1e-3, view_spread_schedule=[[0, 20.0]]), seed=0)
    _train(state, data, 2)
    images = training.as_float_images(data)
    state.net.train()
    view = state.net(images).view * TINY.rot_range_deg
    assert abs(float(view[:, 1].std()) - 20.0) < 0.1 and abs(float(view[:, 0].std()) - 10.0) < 0.1  # yaw, pitch
    assert torch.equal(view[:, 2:], state.net.netV(images)[:, 2:] * TINY.rot_range_deg)  # roll, translation free
    path = training.save_weights(tmp_path / "u.safetensors", state.net, {})
    net, _ = training.load_weights(path)
    assert net.view_spread.shape == (5,) and torch.equal(net.view_spread, state.net.view_spread)
    with pytest.raises(BenchError, match="needs view_spread"):
        training.split_settings({"view_spread_pitch": 0.5})

def test_lr_schedule_sets_the_photometric_lr_after_the_depth_prior():
    data, used = _data(), []
    state = _state(lam_perc=0.0, depth_prior_steps=2, depth_prior_lr=5e-3, lr_schedule=[[3, 1.0], [5, 0.1]])
    _train(state, data, 6, on_step=lambda s, _: used.append(s.optim.param_groups[0]["lr"]))
    assert used == pytest.approx([5e-3, 5e-3, 1e-3, 1e-3, 5.5e-4, 1e-4])
    with pytest.raises(BenchError, match="lr_schedule must be"):
        TrainConfig(lr_schedule=[[5, "fast"]])


def test_batch_order_is_shuffled_epochs():
    seen = torch.cat([training.batch_indices(10, 3, s, seed=1) for s in range(3)])
    assert sorted(seen.tolist()) == sorted(set(seen.tolist())) and len(seen) == 9  # no repeats within an epoch
    assert not torch.equal(training.batch_indices(10, 3, 0, seed=1), training.batch_indices(10, 3, 3, seed=1))


def test_weights_round_trip_and_card(tmp_path):
    state = _state()
    path = training.save_weights(tmp_path / "u.safetensors", state.net, {"note": "test"})
    net, meta = training.load_weights(path)
    assert meta["training"] == {"note": "test"} and meta["model"]["nf_depth_albedo"] == 8
    for k, v in state.net.state_dict().items():
        assert torch.equal(net.state_dict()[k], v)
    with pytest.raises(BenchError, match="not found"):
        training.load_weights(tmp_path / "missing.safetensors")


def test_validation_scores_are_finite():
    data = _data()
    depth = torch.full((4, 64, 64), 1.1)
    depth[:, 16:48, 16:48] = 1.0
    scores = training.evaluate_shape(_state().net, data, depth)
    assert scores["n_images"] == 4 and all(torch.isfinite(torch.tensor(v)) for v in scores.values())


def test_split_settings_rejects_unknown_keys():
    with pytest.raises(BenchError, match="lam_fllip"):
        training.split_settings({"lam_fllip": 0.5})
