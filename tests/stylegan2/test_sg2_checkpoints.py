"""rosinality .pt files, our .safetensors format, latent files and their user-facing errors (tiny models)."""

import argparse
import json
import pathlib

import pytest
import torch

from core.errors import BenchError
from methods.stylegan2.checkpoints import (convert_checkpoint, infer_discriminator_config, infer_generator_config,
                                           load_discriminator, load_generator, load_latent, read_checkpoint)
from methods.stylegan2.model import Discriminator, Generator

STYLE = 16


def randomise(module):
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias") or name.endswith("noise.weight"):
                p.normal_(0, 0.2)
    return module


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    g = randomise(Generator(16, style_dim=STYLE, n_mlp=2, channels={4: 16, 8: 12, 16: 8})).eval()
    d = randomise(Discriminator(16, max_channels=16)).eval()
    return g, d


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, STYLE, generator=g), torch.randn(4, 3, 16, 16, generator=g)


@pytest.fixture(scope="module")
def pt_file(nets, tmp_path_factory):
    g, d = nets
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save({"g_ema": g.state_dict(), "d": d.state_dict(), "latent_avg": torch.randn(STYLE)}, path)
    return path


def same_outputs(g2, d2, nets, inputs):
    g, d = nets
    z, x = inputs
    with torch.no_grad():
        torch.testing.assert_close(g2([z])[0], g([z])[0], rtol=0, atol=0)
        if d2 is not None:
            torch.testing.assert_close(d2(x), d(x), rtol=0, atol=0)
            torch.testing.assert_close(d2(x, ftr_num=2)[1], d(x, ftr_num=2)[1], rtol=0, atol=0)


def test_rosinality_pt_round_trip(pt_file, nets, inputs):
    ckpt = read_checkpoint(pt_file)
    assert ckpt.source_format == "rosinality-pt"
    assert ckpt.g_config["size"] == 16 and ckpt.g_config["n_mlp"] == 2 and ckpt.g_config["style_dim"] == STYLE
    assert ckpt.g_config["channels"] == {"4": 16, "8": 12, "16": 8} and ckpt.g_config["channel_multiplier"] is None
    assert ckpt.d_config["channels"] == {"4": 16, "8": 16, "16": 16} and ckpt.d_config["stddev_feat"] == 1
    assert ckpt.latent_avg.shape == (STYLE,)
    same_outputs(load_generator(pt_file), load_discriminator(pt_file), nets, inputs)


def test_legacy_serialization_format(nets, inputs, tmp_path):
    g, d = nets
    path = tmp_path / "legacy.pt"  # pre-1.6 torch.save layout, as in 2020-era releases
    torch.save({"g_ema": g.state_dict(), "d": d.state_dict()}, path, _use_new_zipfile_serialization=False)
    same_outputs(load_generator(path), load_discriminator(path), nets, inputs)


def test_training_checkpoint_with_args_and_optimizers(nets, inputs, tmp_path):
    g, d = nets
    g_optim = torch.optim.Adam(g.parameters(), lr=0.0)
    g(torch.randn(2, STYLE))[0].sum().backward()
    g_optim.step()
    g_optim.zero_grad()
    args = argparse.Namespace(size=16, n_mlp=2, channel_multiplier=2, path="data/lmdb", r1=10.0, augment=False)
    path = tmp_path / "000100.pt"
    torch.save({"g": g.state_dict(), "d": d.state_dict(), "g_ema": g.state_dict(), "g_optim": g_optim.state_dict(),
                "d_optim": torch.optim.Adam(d.parameters()).state_dict(), "args": args, "ada_aug_p": 0.0}, path)
    ckpt = read_checkpoint(path)
    assert ckpt.latent_avg is None and ckpt.d is not None
    same_outputs(load_generator(path), load_discriminator(path), nets, inputs)


def test_inference_at_rosinality_sizes_on_meta():
    for size, cm in [(64, 1), (128, 2), (256, 1)]:
        with torch.device("meta"):
            g, d = Generator(size, channel_multiplier=cm), Discriminator(size, channel_multiplier=cm)
        gc, dc = infer_generator_config(g.state_dict()), infer_discriminator_config(d.state_dict())
        assert (gc["size"], gc["n_mlp"], gc["style_dim"], gc["channel_multiplier"]) == (size, 8, 512, cm)
        assert (dc["size"], dc["channel_multiplier"], dc["stddev_feat"]) == (size, cm, 1)
    with torch.device("meta"):
        small = Generator(32, style_dim=64, n_mlp=4, max_channels=32)
    assert infer_generator_config(small.state_dict())["channel_multiplier"] == 2  # capped default table


def test_wrong_shape_names_key_and_shapes(nets, tmp_path):
    g, d = nets
    sd = dict(g.state_dict())
    sd["convs.1.conv.weight"] = torch.zeros(1, 12, 7, 3, 3)
    path = tmp_path / "bad.pt"
    torch.save({"g_ema": sd, "d": d.state_dict()}, path)
    with pytest.raises(BenchError, match=r"'convs\.1\.conv\.weight' has shape \(1, 12, 7, 3, 3\).*expects "
                                         r"\(1, 12, 12, 3, 3\)"):
        load_generator(path)


def test_missing_and_extra_keys(nets, tmp_path):
    g, _ = nets
    sd = dict(g.state_dict())
    del sd["noises.noise_2"]
    sd["extra.weight"] = torch.zeros(1)
    torch.save({"g_ema": sd}, tmp_path / "keys.pt")
    with pytest.raises(BenchError, match=r"missing \['noises.noise_2'\], unexpected \['extra.weight'\]"):
        load_generator(tmp_path / "keys.pt")


def test_missing_g_ema_and_missing_d(nets, tmp_path):
    g, _ = nets
    torch.save({"g": g.state_dict()}, tmp_path / "no_ema.pt")
    with pytest.raises(BenchError, match="no 'g_ema'"):
        load_generator(tmp_path / "no_ema.pt")
    torch.save(g.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(BenchError, match="bare generator state_dict"):
        load_generator(tmp_path / "bare.pt")
    torch.save({"g_ema": g.state_dict()}, tmp_path / "no_d.pt")
    load_generator(tmp_path / "no_d.pt")
    with pytest.raises(BenchError, match=r"no discriminator \('d'\).*Step 2"):
        load_discriminator(tmp_path / "no_d.pt")


def test_unsafe_and_unreadable_files_are_refused(nets, tmp_path):
    g, _ = nets
    torch.save({"g_ema": g.state_dict(), "extra": pathlib.PurePosixPath("x")}, tmp_path / "unsafe.pt")
    with pytest.raises(BenchError, match="refused by PyTorch's safe loader.*PurePosixPath"):
        load_generator(tmp_path / "unsafe.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BenchError, match="not a readable PyTorch checkpoint"):
        load_generator(tmp_path / "junk.pt")
    with pytest.raises(BenchError, match="unknown checkpoint type"):
        load_generator(tmp_path / "weights.bin")
    with pytest.raises(BenchError, match="not found"):
        load_generator(tmp_path / "absent.pt")


def test_convert_round_trip(pt_file, nets, inputs, tmp_path):
    out = convert_checkpoint(str(pt_file), str(tmp_path / "out" / "tiny.safetensors"))
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["format"] == "gan2shape-bench.stylegan2" and meta["source"]["format"] == "rosinality-pt"
    assert meta["generator"]["size"] == 16 and meta["discriminator"]["stddev_group"] == 4 and meta["has_latent_avg"]
    same_outputs(load_generator(out), load_discriminator(out), nets, inputs)
    torch.testing.assert_close(read_checkpoint(out).latent_avg, read_checkpoint(pt_file).latent_avg)
    again = convert_checkpoint(out, tmp_path / "again.safetensors")  # ours -> ours also works
    same_outputs(load_generator(again), None, nets, inputs)


def test_convert_errors_and_missing_sidecar(pt_file, nets, tmp_path):
    with pytest.raises(BenchError, match="must end in .safetensors"):
        convert_checkpoint(pt_file, tmp_path / "x.pt")
    g, _ = nets
    torch.save({"g_ema": g.state_dict()}, tmp_path / "g_only.pt")
    with pytest.warns(UserWarning, match="no discriminator"):
        out = convert_checkpoint(tmp_path / "g_only.pt", tmp_path / "g_only.safetensors")
    with pytest.raises(BenchError, match="no discriminator"):
        load_discriminator(out)
    out.with_suffix(".json").unlink()
    with pytest.raises(BenchError, match="sidecar"):
        load_generator(out)


def test_load_latent_variants(tmp_path):
    w = torch.randn(512)
    cases = {"flat.pt": w, "row.pt": w[None], "dict.pt": {"latent": w[None], "noise": [torch.zeros(1)]},
             "projector.pt": {"img001.png": {"img": torch.zeros(3, 4, 4), "latent": w, "noise": []}}}
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        latent = load_latent(tmp_path / name)
        assert latent.shape == (1, 512)
        torch.testing.assert_close(latent, w[None])
    torch.save(torch.randn(1, 14, 512), tmp_path / "wplus.pt")
    with pytest.raises(BenchError, match="W\\+ latents"):
        load_latent(tmp_path / "wplus.pt")
    torch.save({"w": w}, tmp_path / "nokey.pt")
    with pytest.raises(BenchError, match="key 'latent'"):
        load_latent(tmp_path / "nokey.pt")
    torch.save(torch.randn(256), tmp_path / "short.pt")
    with pytest.raises(BenchError, match="style_dim is 512"):
        load_latent(tmp_path / "short.pt")


def test_bench_convert_command(pt_file, nets, inputs, tmp_path, capsys):
    from benchmark.cli import main

    dst = tmp_path / "converted.safetensors"
    assert main(["convert", str(pt_file), str(dst)]) == 0
    assert dst.is_file() and dst.with_suffix(".json").is_file()
    z = inputs[0]
    with torch.no_grad():
        assert torch.equal(load_generator(dst)(z)[0], nets[0](z)[0])
    assert main(["convert", str(pt_file)]) == 2
    assert "usage: bench convert" in capsys.readouterr().err
