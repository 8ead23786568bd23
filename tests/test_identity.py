"""Identity metric: ONNX export through insightface's ArcFace runner, score maths, ArcFace loss, shipped model."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import BenchError
from metrics.identity import (DEFAULT_WEIGHTS, IdentityModel, identity_curve, identity_scores, identity_summary,
                              load_identity_model)
from metrics.identity_net import EmbeddingNet, arcface_logits, arcface_loss, export_onnx, normalise_uint8

REPO = Path(__file__).resolve().parent.parent


def _tiny_net(seed: int = 0) -> EmbeddingNet:
    torch.manual_seed(seed)
    net = EmbeddingNet(16, (8, 8, 16), 8)
    net.train()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for _ in range(3):
            net(torch.randn(8, 3, 16, 16) * 0.7 + 0.2)
    return net.eval()


def _uint8_images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_onnx_through_insightface_runner_matches_torch(tmp_path):
    net = _tiny_net()
    path = export_onnx(net, tmp_path / "tiny.onnx", 16)
    model = load_identity_model(path, num_threads=1)
    assert model.input_size == (16, 16)
    assert (model.runner.input_mean, model.runner.input_std) == (127.5, 127.5)
    pixels = _uint8_images(5, 16)
    images = pixels.float() / 127.5 - 1.0  # exactly representable as uint8 again
    got = model.embed(images)
    with torch.no_grad():
        want = torch.nn.functional.normalize(net(normalise_uint8(pixels)), dim=1)
        swapped = torch.nn.functional.normalize(net(normalise_uint8(pixels.flip(1))), dim=1)
    assert got.shape == (5, 8)
    assert torch.allclose(got.norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    assert (got - swapped).abs().max() > 1e-2  # the channel order is checked, not ignored
    # other sizes are resized to the model's input; a batch dimension of any length goes through
    big = torch.nn.functional.interpolate(images, scale_factor=2, mode="nearest")
    assert model.embed(big).shape == (5, 8)
    assert torch.allclose(model.embed(images[:1]), got[:1], atol=1e-5)


def test_identity_scores_and_summary_by_hand():
    source = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # N=2, D=2
    rotated = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]],
                            [[0.0, 1.0], [-1.0, 0.0], [3.0, 3.0]]])  # N=2, A=3
    scores = identity_scores(source, rotated)
    r = 1 / math.sqrt(2)
    want = torch.tensor([[1.0, r, 0.0], [1.0, 0.0, r]])
    assert torch.allclose(scores, want, atol=1e-6)
    s = identity_summary(scores)
    mean = (2 + 2 * r) / 6
    assert s["identity_mean"] == pytest.approx(mean)
    assert s["identity_std"] == pytest.approx(0.0, abs=1e-6)  # both sources average (1 + r) / 3
    assert s["identity_min"] == pytest.approx(0.0, abs=1e-6) and (s["identity_sources"], s["identity_angles"]) == (2, 3)
    assert torch.allclose(identity_curve(scores), torch.tensor([1.0, r / 2, r / 2]))
    s2 = identity_summary(torch.tensor([[0.9, 0.7], [0.2, 0.4], [0.6, 0.6]]))
    assert s2["identity_mean"] == pytest.approx(3.4 / 6)
    assert s2["identity_std"] == pytest.approx(math.sqrt(((0.8 - 3.4 / 6) ** 2 + (0.3 - 3.4 / 6) ** 2
                                                          + (0.6 - 3.4 / 6) ** 2) / 3))
    with pytest.raises(ValueError):
        identity_scores(source, rotated[:1])


def test_arcface_loss_by_hand():
    s, m = 30.0, 0.5
    cos = torch.tensor([[0.8, 0.3, -0.2], [0.1, -0.95, 0.4]])
    labels = torch.tensor([0, 1])
    logits = arcface_logits(cos, labels, s, m)
    t0 = math.cos(math.acos(0.8) + m)  # theta + m < pi: the margin applies
    t1 = -0.95 - m * math.sin(m)  # theta = acos(-0.95) > pi - m: the linear continuation
    assert torch.allclose(logits, torch.tensor([[s * t0, s * 0.3, s * -0.2], [s * 0.1, s * t1, s * 0.4]]), atol=1e-4)

    def ce(row, y):
        return -row[y] + math.log(sum(math.exp(v) for v in row))

    want = (ce([s * t0, s * 0.3, s * -0.2], 0) + ce([s * 0.1, s * t1, s * 0.4], 1)) / 2
    # arcface_loss normalises: build embeddings/centres with exactly these cosines in 3-D
    centres = torch.eye(3)
    emb = cos / cos.norm(dim=1, keepdim=True) * 5.0  # cosines with the axes, up to the row norm
    loss, acc = arcface_loss(emb, centres, labels, s, m)
    want_cos = cos / cos.norm(dim=1, keepdim=True)
    want_logits = arcface_logits(want_cos, labels, s, m)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(want_logits, labels).item(), rel=1e-5)
    assert acc.item() == pytest.approx(0.5)  # row 0 picks class 0, row 1 picks class 2
    assert torch.nn.functional.cross_entropy(logits, labels).item() == pytest.approx(want, rel=1e-5)


def test_missing_model_file_error(tmp_path):
    with pytest.raises(BenchError, match="bench train model=identity dataset=synface_proc") as err:
        IdentityModel(tmp_path / "nope.onnx")
    assert "nope.onnx" in str(err.value) and "path" in str(err.value)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(BenchError, match="cannot load identity model"):
        IdentityModel(bad)


def test_shipped_model_separates_identities_across_views(tiny_synface):
    from benchmark.datasets.synface_proc import SynfaceProc

    ds = SynfaceProc(tiny_synface, "test")  # 3 test identities (none seen in training), 10 views each
    images = torch.from_numpy(ds.array("image")).permute(0, 3, 1, 2).float() / 127.5 - 1
    identity = torch.from_numpy(ds.array("identity"))
    emb = load_identity_model(num_threads=1).embed(images)
    sim = emb @ emb.t()
    same = identity[:, None] == identity[None, :]
    off = ~torch.eye(len(identity), dtype=torch.bool)
    same_mean, diff_mean = sim[same & off].mean().item(), sim[~same].mean().item()
    assert same_mean > diff_mean + 0.5, (same_mean, diff_mean)
    card = json.loads((REPO / DEFAULT_WEIGHTS).with_suffix(".json").read_text())
    assert card["training"]["verification"]["accuracy"] > 0.95


@pytest.mark.slow
def test_train_identity_resumes_and_exports(tiny_synface, workdir):
    from benchmark.cli import main

    args = ["train", "model=identity", "dataset=synface_proc", f"dataset.root={tiny_synface}", "device=cpu",
            "model.batch_size=16", "model.widths=[8,16]", "model.embedding_dim=16", "model.negative_pairs=50",
            "train.checkpoint_every=2", "train.progress=false", f"train.export={workdir}/id.onnx",
            f"train.out_dir={workdir}/out"]
    assert main([*args, "train.iterations=2"]) == 0
    assert main([*args, "train.iterations=3"]) == 0
    card = json.loads((workdir / "id.json").read_text())
    assert card["training"]["iterations"] == 3
    assert 0 <= card["training"]["verification"]["accuracy"] <= 1
    state = torch.load(workdir / "out/checkpoint.pt", weights_only=True)
    assert state["step"] == 3 and np.isfinite(card["training"]["losses"]["loss"])
