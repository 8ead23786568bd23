import json

import pytest
import torch

from methods.stylegan2 import training
from methods.stylegan2.training import TrainConfig

CH = {4: 16, 8: 16, 16: 8}
G_CFG = {"size": 16, "style_dim": 16, "n_mlp": 8, "channels": CH}
D_CFG = {"size": 16, "channels": CH}


def _data(n=8):
    """A handful of synthetic 16x16 uint8 images: coloured discs on a dark background."""
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    imgs = []
    for i in range(n):
        disc = ((yy - 8 - i % 3) ** 2 + (xx - 8 + i % 2) ** 2 < 20).float()
        color = torch.tensor([0.9, 0.5 + 0.05 * i, 0.3])[:, None, None]
        imgs.append((disc * color * 255).to(torch.uint8))
    return torch.stack(imgs)


def _cfg(**kw):
    base = {"batch_size": 4, "r1_gamma": 1.0, "d_reg_every": 4, "path_regularize": 1.0, "g_reg_every": 2,
            "ema_half_life_kimg": 0.01}
    return TrainConfig(**{**base, **kw})


def _train(state, data, iterations):
    while state.step < iterations:
        training.train_step(state, data)


def _assert_same(a, b):
    assert a.step == b.step
    for name in ("g", "d", "g_ema"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"{name}.{k} differs"
    assert torch.equal(a.rng.get_state(), b.rng.get_state())
    assert a.mean_path_length == b.mean_path_length


def test_d_loss_on_fixed_batch_decreases():
    state = training.create_state(G_CFG, D_CFG, _cfg(lr=0.002), seed=0)
    data = _data()
    real = training.as_float_images(data[:4])
    fake_z = torch.randn(4, 16, generator=torch.Generator().manual_seed(3))

    def d_loss():
        with torch.no_grad():
            fake = state.g([fake_z])[0]
            return float(training.d_logistic_loss(state.d(real), state.d(fake)))

    before = d_loss()
    logs = [training.train_step(state, data) for _ in range(12)]
    assert state.step == 12
    assert {"loss_d", "loss_g", "r1", "path_loss"} <= set().union(*logs)
    assert all(torch.isfinite(torch.tensor(list(l.values()))).all() for l in logs)
    # training must move D toward separating real from the current fakes (2 log 2 = 1.386 at chance)
    assert d_loss() < before - 0.05


def test_resume_is_bit_exact(tmp_path):
    data = _data()
    one = training.create_state(G_CFG, D_CFG, _cfg(), seed=1)
    _train(one, data, 7)

    two = training.create_state(G_CFG, D_CFG, _cfg(), seed=1)
    _train(two, data, 4)
    path = training.save_checkpoint(tmp_path / "ckpt.pt", two)
    assert not list(tmp_path.glob("*.tmp"))
    resumed = training.load_checkpoint(path)
    _train(resumed, data, 7)
    _assert_same(one, resumed)
    for a, b in zip(one.g_optim.state_dict()["state"].values(), resumed.g_optim.state_dict()["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"])


def test_checkpoint_loads_with_weights_only(tmp_path):
    state = training.create_state(G_CFG, D_CFG, _cfg(), seed=0)
    state.extra = {"dataset": "x", "model": {"size": 16}}
    training.train_step(state, _data())
    path = training.save_checkpoint(tmp_path / "c.pt", state)
    payload = torch.load(path, weights_only=True)
    assert payload["step"] == 1 and set(payload) >= {"g", "d", "g_ema", "g_optim", "d_optim", "rng"}
    back = training.load_checkpoint(path)
    _assert_same(state, back)
    assert back.extra == state.extra and back.cfg == state.cfg


def test_ema_decay_and_lazy_ratio():
    cfg = TrainConfig(batch_size=32, ema_half_life_kimg=10)
    assert training.ema_decay(cfg) == pytest.approx(0.5 ** (32 / 10000))
    state = training.create_state(G_CFG, D_CFG, _cfg(path_regularize=0.0, lr=0.002), seed=0)
    d_group = state.d_optim.param_groups[0]
    assert d_group["lr"] == pytest.approx(0.002 * 4 / 5) and d_group["betas"][1] == pytest.approx(0.99 ** 0.8)
    assert state.g_optim.param_groups[0]["lr"] == pytest.approx(0.002)  # no path regulariser, no correction


def test_grown_gan_starts_as_the_upsampled_source():
    src = training.create_state(G_CFG, D_CFG, _cfg(), seed=1)
    _train(src, _data(), 2)
    for p in src.g_ema.parameters():  # non-trivial weights everywhere (a trained GAN's are)
        p.data.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    ch32 = {**CH, 32: 8}
    big = training.create_state({**G_CFG, "size": 32, "channels": ch32}, {"size": 32, "channels": ch32}, _cfg(), seed=0)
    fresh = training.grow_state(big, src.g_ema.state_dict(), src.d.state_dict(), 16)
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(5))
    noise = src.g_ema.make_noise(torch.Generator().manual_seed(6))
    small = src.g_ema([z], noise=noise)[0]
    for g in (big.g, big.g_ema):
        grown = g([z], noise=noise + [None, None])[0]  # the 32 px layers' noise only reaches the zeroed ToRGB
        assert grown.shape == (3, 3, 32, 32)
        torch.testing.assert_close(grown, g.to_rgbs[-1].upsample(small), rtol=0, atol=1e-6)
    # the discriminator's blocks below 32 px, its final layers and every shared generator tensor carry over
    for j in (1, 2):
        for k, v in src.d.convs[j].state_dict().items():
            assert torch.equal(big.d.convs[j + 1].state_dict()[k], v), f"d.convs.{j + 1}.{k}"
    assert torch.equal(big.d.final_linear[1].weight, src.d.final_linear[1].weight)
    assert "g.to_rgbs.2.conv.weight" in fresh and "d.convs.0.0.weight" in fresh and "g.style.1.weight" not in fresh
    # training moves the new layer off zero
    _train(big, training.as_float_images(_data()).repeat_interleave(2, -1).repeat_interleave(2, -2), 1)
    assert big.g.to_rgbs[-1].conv.weight.abs().sum() > 0
    with pytest.raises(ValueError, match="larger power-of-two"):
        training.grown_state_dicts(src.g.state_dict(), None, src.g, src.d, 16)
    with pytest.raises(ValueError, match="fit no layer"):
        other = training.create_state({**G_CFG, "style_dim": 8}, D_CFG, _cfg(), seed=0)
        training.grown_state_dicts(other.g.state_dict(), None, big.g, big.d, 16)


def test_train_command_exports_and_tracks(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from benchmark.datasets.synface_proc import generate
    from benchmark.train import train_command
    from core.errors import BenchError
    from methods.stylegan2.checkpoints import load_discriminator, load_generator

    root = tmp_path / "synface"
    generate(root, train_size=16, val_size=0, test_size=4, image_size=32, seed=0, shard_size=16, images_per_identity=2,
             progress=False)
    export = tmp_path / "w" / "sg2.safetensors"
    overrides = [
        "model=stylegan2_32", f"dataset.root={root}", "device=cpu", f"tracking.uri=sqlite:///{tmp_path}/m.db",
        "model.size=16", "model.style_dim=16", "model.channels={4: 8, 8: 8, 16: 8}", "model.batch_size=4",
        "train.iterations=3", "train.log_every=1", "train.eval_every=2", "train.checkpoint_every=2",
        f"train.out_dir={tmp_path}/run", f"train.export={export}", "train.progress=false",
        "eval.swd_images=4", "eval.swd_patches=4", "tracking.samples=4",
    ]
    assert train_command(overrides) == 0
    card = json.loads(export.with_suffix(".json").read_text())["training"]
    assert card["iterations"] == 3 and card["batch_size"] == 4
    assert card["dataset"]["generation_seed"] == 0 and card["command"].startswith("bench train")
    assert {"swd_mean", "swd_16"} <= set(card["swd"]) and "swd_mean" in card["swd_real_floor"]
    assert "loss_d" in card["losses"] and card["wall_time_s"] > 0
    g, d = load_generator(export), load_discriminator(export)
    assert g([torch.randn(2, 16)])[0].shape == (2, 3, 16, 16) and d.size == 16
    assert (tmp_path / "run" / "checkpoint.pt").is_file()

    # rerun with more iterations resumes from the checkpoint
    assert train_command([o if not o.startswith("train.iterations") else "train.iterations=4" for o in overrides]) == 0
    assert json.loads(export.with_suffix(".json").read_text())["training"]["iterations"] == 4

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/m.db")
    exp = client.get_experiment_by_name("train_stylegan2")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    first = min(runs, key=lambda r: r.info.start_time)
    assert "loss_d" in first.data.metrics and "val_swd_mean" in first.data.metrics
    assert "floor_swd_mean" in first.data.metrics
    assert sorted(r.data.tags["resumed_from"] for r in runs) == ["0", "3"]

    # a 32 px GAN grown from that export: trains from it; a source that does not fit fails with one line
    grow = [o for o in overrides if not o.startswith(("model.size", "model.channels", "train.out_dir", "train.export",
                                                      "train.iterations"))]
    grow += ["model.size=32", "model.channels={4: 8, 8: 8, 16: 8, 32: 8}", f"+model.grow_from={export}",
             f"train.out_dir={tmp_path}/grown", f"train.export={tmp_path}/w/grown.safetensors", "train.iterations=1"]
    assert train_command(grow) == 0
    assert load_generator(tmp_path / "w" / "grown.safetensors").size == 32
    bad = [o for o in grow if not o.startswith("train.out_dir")]
    bad += [f"train.out_dir={tmp_path}/bad", "model.style_dim=8"]
    with pytest.raises(BenchError, match="model.grow_from=.*fit no layer"):
        train_command(bad)
