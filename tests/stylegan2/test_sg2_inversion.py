"""GAN inversion (methods.stylegan2.inversion) and the `bench sample` / `bench invert` commands, on a tiny GAN."""

import doctest

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from core.errors import BenchError
from benchmark.sampling import invert_command, sample_command
from methods.stylegan2 import inversion
from methods.stylegan2.checkpoints import load_latent
from methods.stylegan2.model import Discriminator, Generator

STYLE = 32
CHANNELS = {4: 16, 8: 16, 16: 8}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions on shared cores run far faster single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    g = Generator(16, style_dim=STYLE, n_mlp=2, channels=CHANNELS).eval()
    d = Discriminator(16, channels=CHANNELS).eval()
    with torch.no_grad():  # make the stored noise matter
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.1)
    return g, d


@pytest.fixture(scope="module")
def ckpt(nets, tmp_path_factory):
    """A rosinality-style .pt file (g_ema + d) written by the test."""
    g, d = nets
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save({"g_ema": g.state_dict(), "d": d.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def gan_sample(nets):
    g, _ = nets
    with torch.no_grad():
        w_true = g.get_latent(torch.randn(2, STYLE, generator=torch.Generator().manual_seed(5)))
        target, _ = g(w_true, input_is_w=True)  # stored noise
    return w_true, target


def read_png(path):
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1


def test_doctests():
    assert doctest.testmod(inversion).failed == 0


def test_projection_beats_mean_latent(nets, gan_sample):
    g, d = nets
    _, target = gan_sample
    params_before = [p.clone() for p in g.parameters()]
    with torch.no_grad():
        mean_image, _ = g(g.mean_latent(500).repeat(2, 1), input_is_w=True)
    base = (mean_image - target).abs().mean(dim=(1, 2, 3))
    steps = []
    result = inversion.project(g, target, D=d, steps=40, w_avg_samples=500, seed=1,
                               on_step=lambda s, info: steps.append(info))
    assert result.w.shape == (2, STYLE) and result.images.shape == target.shape
    assert [n.shape for n in result.noises] == [(2, *n.shape[1:]) for n in g.stored_noise()]
    assert result.l1.shape == result.mse.shape == result.loss.shape == (2,)
    assert (result.l1 < 0.6 * base).all(), (result.l1, base)
    assert len(steps) == 40 and steps[0]["lr"] == 0.0 and steps[-1]["w_noise"] == 0.0
    # the reported images and errors are what the returned w and noises produce
    with torch.no_grad():
        again, _ = g(result.w, input_is_w=True, noise=list(result.noises))
    torch.testing.assert_close(again, result.images)
    torch.testing.assert_close((again - target).abs().mean(dim=(1, 2, 3)), result.l1)
    assert all(torch.equal(a, b) for a, b in zip(params_before, g.parameters()))  # G untouched
    assert all(p.requires_grad for p in g.parameters())  # and its flags restored


def test_projection_repeats_with_seed(nets, gan_sample):
    g, d = nets
    _, target = gan_sample
    kw = dict(D=d, steps=4, w_avg_samples=200, noise_ramp=1.0)
    a = inversion.project(g, target, seed=3, **kw)
    b = inversion.project(g, target, seed=3, **kw)
    c = inversion.project(g, target, seed=4, **kw)
    assert torch.equal(a.w, b.w) and torch.equal(a.images, b.images)
    assert all(torch.equal(x, y) for x, y in zip(a.noises, b.noises))
    assert not torch.equal(a.w, c.w)


def test_sample_command_writes_regenerating_latents(nets, ckpt, tmp_path, capsys):
    g, _ = nets
    out = tmp_path / "samples"
    assert sample_command([f"gan.checkpoint={ckpt}", "n=3", "batch_size=2", "device=cpu", f"out_dir={out}"]) == 0
    assert (out / "grid.png").is_file()
    for i in range(3):
        raw = torch.load(out / f"sample_{i:04d}.pt", weights_only=True)
        assert set(raw) == {"latent"} and raw["latent"].shape == (1, STYLE)
        w = load_latent(out / f"sample_{i:04d}.pt", style_dim=STYLE)
        with torch.no_grad():
            image, _ = g(w, input_is_w=True)
        assert (image[0].clamp(-1, 1) - read_png(out / f"sample_{i:04d}.png")).abs().max() <= 1.01 / 127.5
    assert "wrote 3 samples" in capsys.readouterr().out


def test_invert_command_writes_latents_and_mlflow_run(nets, ckpt, gan_sample, tmp_path, capsys):
    g, _ = nets
    _, target = gan_sample
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        arr = ((target[i].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(arr).save(images / f"face{i}.png")
    out, uri = tmp_path / "inv", f"sqlite:///{tmp_path / 'm.db'}"
    assert invert_command([f"input={images}", f"gan.checkpoint={ckpt}", "steps=4", "w_avg_samples=200",
                           "device=cpu", f"out_dir={out}", f"tracking.uri={uri}", "log_every=2"]) == 0
    printed = capsys.readouterr().out
    for i in range(2):
        assert f"face{i}: l1=" in printed
        w = load_latent(out / f"face{i}.pt", style_dim=STYLE)
        with torch.no_grad():  # default: W only, so the latent alone regenerates the projection (stored noise)
            image, _ = g(w, input_is_w=True)
        assert (image[0].clamp(-1, 1) - read_png(out / f"face{i}_projected.png")).abs().max() <= 1.01 / 127.5
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("invert").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["steps"] == "4" and run.data.metrics["n_images"] == 2
    assert 0 < run.data.metrics["recon_l1_mean"] < 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"target_vs_projection.png", "errors.csv", "config.yaml"} <= artifacts


def test_missing_checkpoint_and_bad_input_are_bench_errors(ckpt, tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(BenchError, match="bench train model=stylegan2_32 dataset=synface_proc") as err:
        sample_command([f"gan.checkpoint={missing}", f"out_dir={tmp_path}"])
    assert str(missing) in str(err.value) and "bench convert" in str(err.value)
    with pytest.raises(BenchError, match="no value for input"):
        invert_command([f"gan.checkpoint={ckpt}"])
    with pytest.raises(BenchError, match="does not exist"):
        invert_command([f"input={tmp_path / 'none.png'}", f"gan.checkpoint={ckpt}"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BenchError, match="not an image file"):
        invert_command([f"input={tmp_path / 'notes.txt'}", f"gan.checkpoint={ckpt}"])
    (tmp_path / "broken.png").write_text("not a png")
    with pytest.raises(BenchError, match="cannot read image"):
        invert_command([f"input={tmp_path / 'broken.png'}", f"gan.checkpoint={ckpt}", f"out_dir={tmp_path}/o"])
    assert not (tmp_path / "o").exists()
    with pytest.raises(BenchError, match="unknown device"):
        sample_command([f"gan.checkpoint={ckpt}", "device=tpu", f"out_dir={tmp_path}"])
