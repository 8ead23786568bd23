"""Tests of the procedural ``synface_proc`` dataset and its sphere tracer (tiny sizes, a few seconds)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.datasets import sdf_faces
from benchmark.datasets.sdf_faces import FAR_DEPTH, render_faces, sample_identities, sphere_trace
from benchmark.datasets.synface_proc import FORMAT_VERSION, SynfaceProc, _open_npz, generate, sample_shard
from core.errors import BenchError, DatasetMissingError
from core.registry import DATASETS
from methods.renderer.camera import intrinsics
from tests.conftest import REPO

TINY = dict(train_size=12, val_size=6, test_size=8, image_size=32, shard_size=8, images_per_identity=3, progress=False)


def _read_split(root, split):
    files = sorted((root / split).glob("shard_*.npz"))
    return [{k: np.array(v) for k, v in _open_npz(f).items()} for f in files]


def _assert_same(a, b):
    assert len(a) == len(b)
    for sa, sb in zip(a, b):
        assert sa.keys() == sb.keys()
        for k in sa:
            assert sa[k].dtype == sb[k].dtype and np.array_equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synface") / "data"
    meta = generate(root, seed=3, **TINY)
    return root, meta


# ------------------------------------------------------------------------------------------------ sphere tracer
def _analytic_sphere_depth(S, centre, radius):
    K = intrinsics(S, dtype=torch.float64)
    v, u = torch.meshgrid(torch.arange(S, dtype=torch.float64), torch.arange(S, dtype=torch.float64), indexing="ij")
    d = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], -1)  # z = 1 rays
    c = torch.tensor(centre, dtype=torch.float64)
    a = (d * d).sum(-1)
    b = -2.0 * (d * c).sum(-1)
    disc = b * b - 4 * a * ((c * c).sum() - radius**2)
    z = (-b - disc.clamp_min(0).sqrt()) / (2 * a)  # the ray parameter along a z = 1 direction is the depth
    return z, disc > 0


@pytest.mark.parametrize("S", [32, 64])
def test_sphere_trace_matches_analytic_depth(S):
    centre, radius = (0.012, -0.007, 1.0), 0.06
    c = torch.tensor(centre)
    depth, mask = sphere_trace(lambda p: (p - c).norm(dim=-1) - radius, intrinsics(S), S, background=FAR_DEPTH)
    z, inside = _analytic_sphere_depth(S, centre, radius)
    assert depth.shape == (1, S, S) and mask.dtype == torch.bool
    assert torch.all(depth[0][~mask[0]] == torch.tensor(FAR_DEPTH, dtype=torch.float32))
    # masks agree away from the silhouette; depth agrees to < 1e-4 there
    m = inside.float().view(1, 1, S, S)
    interior = (-torch.nn.functional.max_pool2d(-m, 3, 1, 1) > 0)[0, 0]
    exterior = (torch.nn.functional.max_pool2d(m, 3, 1, 1) == 0)[0, 0]
    assert mask[0][interior].all() and not mask[0][exterior].any()
    err = (depth[0].double() - z).abs()[interior]
    assert interior.sum() > 0.2 * S * S and err.max() < 1e-4, float(err.max())


def test_sphere_trace_batched_index():
    radii = torch.tensor([0.03, 0.05])

    def sdf(p, index):
        return (p - torch.tensor([0.0, 0.0, 1.0])).norm(dim=-1) - radii[index]

    depth, mask = sphere_trace(sdf, image_size=32, batch_size=2)
    assert mask[1].sum() > mask[0].sum() > 0
    centre = depth[:, 15:17, 15:17].mean(dim=(1, 2))
    assert torch.allclose(centre, 1.0 - radii, atol=5e-4)


# ------------------------------------------------------------------------------------------------ generation
def test_determinism_and_seed(tiny, tmp_path):
    root, _ = tiny
    again = tmp_path / "again"
    generate(again, seed=3, **TINY)
    for split in ("train", "test"):
        _assert_same(_read_split(root, split), _read_split(again, split))
    other = tmp_path / "other"
    generate(other, seed=4, **TINY)
    a, b = _read_split(root, "test")[0], _read_split(other, "test")[0]
    assert not np.array_equal(a["image"], b["image"]) and not np.array_equal(a["depth"], b["depth"])


def test_resume_after_deleting_a_shard(tiny, tmp_path):
    root, _ = tiny
    copy = tmp_path / "copy"
    generate(copy, seed=3, **TINY)
    before = _read_split(copy, "train")
    (copy / "train" / "shard_00001.npz").unlink()
    with pytest.raises(DatasetMissingError, match="bench data"):
        SynfaceProc(copy, "train")
    (copy / "test" / "shard_00000.npz").write_bytes(b"truncated")  # a broken file is regenerated too
    meta = generate(copy, seed=3, **TINY)
    assert meta["rendered_images"] == 4 + 8 and meta["complete"]
    _assert_same(before, _read_split(copy, "train"))
    _assert_same(_read_split(root, "test"), _read_split(copy, "test"))


def test_worker_processes_give_the_same_bytes(tmp_path):
    kw = dict(train_size=6, val_size=0, test_size=0, image_size=16, shard_size=3, seed=1, progress=False)
    generate(tmp_path / "one", workers=1, **kw)
    meta = generate(tmp_path / "two", workers=2, **kw)
    assert meta["workers"] == 2 and meta["rendered_images"] == 6
    _assert_same(_read_split(tmp_path / "one", "train"), _read_split(tmp_path / "two", "train"))


def test_corrupted_bytes_inside_an_intact_shard_are_caught(tiny, tmp_path, capsys):
    """A flipped byte in an image array keeps the zip readable (members are stored, not compressed): the sha256 in
    meta.json catches it, the loader refuses the shard and bench data renders it again."""
    copy = tmp_path / "copy"
    generate(copy, seed=3, **TINY)
    before = _read_split(copy, "test")
    shard = copy / "test" / "shard_00000.npz"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert _open_npz(shard)["image"].shape[0] == 8  # still a well-formed npz
    loaded = SynfaceProc(copy, "test")
    with pytest.raises(BenchError, match="does not match its checksum in meta.json.*bench data"):
        loaded[0]
    meta = generate(copy, seed=3, **TINY)
    assert "does not match its checksum" in capsys.readouterr().err
    assert meta["rendered_images"] == 8 and sorted(meta["checksums"]) == [
        "test/shard_00000.npz", "train/shard_00000.npz", "train/shard_00001.npz", "val/shard_00000.npz"]
    _assert_same(before, _read_split(copy, "test"))
    SynfaceProc(copy, "test")[0]


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process parents from /proc")
def test_worker_processes_end_when_the_generator_is_killed(tmp_path):
    """SIGKILL the generating process: its render workers end within seconds instead of rendering on as orphans."""
    code = ("from benchmark.datasets.synface_proc import generate; generate(%r, train_size=600, val_size=0, "
            "test_size=0, shard_size=100, workers=2, progress=False)" % str(tmp_path / "ds"))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while len(_children(proc.pid)) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        workers = _children(proc.pid)
        assert len(workers) >= 2, "the generator never started its workers"
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        deadline = time.time() + 20
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.2)
        assert not [w for w in workers if _alive(w)]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_meta_mismatch_is_an_error(tiny):
    root, _ = tiny
    with pytest.raises(BenchError) as exc:
        generate(root, seed=3, **{**TINY, "asymmetry": 0.2, "image_size": 16})
    msg = str(exc.value)
    assert "asymmetry" in msg and "image_size" in msg and "dataset.root" in msg and "delete" in msg
    assert "seed" not in msg.split("config")[1].split(";")[0]


def test_meta_contents(tiny):
    root, meta = tiny
    on_disk = json.loads((root / "meta.json").read_text())
    assert on_disk["format_version"] == FORMAT_VERSION and on_disk["complete"]
    assert on_disk["config"] == {"train_size": 12, "val_size": 6, "test_size": 8, "head_scale": 1.0, "image_size": 32,
                                 "seed": 3, "shard_size": 8, "images_per_identity": 3, "asymmetry": 0.05}
    assert on_disk["splits"]["train"]["shards"] == 2 and on_disk["splits"]["test"]["size"] == 8
    assert meta["images_per_second"] > 0


# ------------------------------------------------------------------------------------------------ ground truth
def test_depth_mask_rgb_consistent(tiny):
    root, _ = tiny
    far = np.float32(FAR_DEPTH)
    cfg = json.loads((root / "meta.json").read_text())["config"]
    shard = _read_split(root, "test")[0]
    depth, mask, image = shard["depth"], shard["mask"], shard["image"]
    assert depth.dtype == np.float32 and mask.dtype == bool and image.dtype == np.uint8
    assert np.all(depth[mask] < far) and np.all(depth[~mask] == far)
    assert np.all(depth[mask] > 0.85) and 0.2 < mask.mean() < 0.9
    for d, m in zip(depth, mask):  # mask_gt of the evaluation (depth < max depth) is the foreground mask
        assert np.array_equal(d < d.max(), m)
    # background pixels away from the silhouette show exactly the drawn background; the head differs from it
    bg = sample_shard(cfg, "test", 0)["background"]
    bg8 = (bg * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    near = torch.nn.functional.max_pool2d(torch.from_numpy(mask).float()[:, None], 3, 1, 1)[:, 0].numpy() > 0
    assert np.array_equal(image[~near], bg8[~near])
    diff = np.abs(image.astype(int) - bg8.astype(int)).sum(-1)
    assert (diff[mask] > 6).mean() > 0.9
    # the parser-like head mask is the foreground minus the neck, which sits below the head
    head = shard["head_mask"]
    assert head.dtype == bool and np.all(head <= mask) and 0.7 < head.sum() / mask.sum() < 1.0
    rows = np.arange(mask.shape[1])[None, :, None]
    neck = mask & ~head
    assert (rows * neck).sum() / neck.sum() > (rows * head).sum() / head.sum()


def test_views_lights_identities(tiny):
    root, _ = tiny
    train, test = SynfaceProc(root, "train"), SynfaceProc(root, "test")
    v = np.stack([test[i]["view"].numpy() for i in range(len(test))])
    assert np.all(np.abs(v) <= [35, 15, 5]) and np.abs(v[:, 0]).max() > 5
    light = np.stack([test[i]["light"].numpy() for i in range(len(test))])
    assert np.all((light[:, :2] > 0) & (light[:, :2] < 1))
    ids_train, ids_test = set(train.identities().tolist()), set(test.identities().tolist())
    assert ids_train == {0, 1, 2, 3} and ids_test == {4, 5, 6} and not ids_train & ids_test
    counts = np.bincount(train.identities())
    assert np.all(counts == 3)


def test_symmetric_identity_frontal_view_gives_symmetric_depth():
    rng = np.random.default_rng(0)
    params = sample_identities(rng, 3, asymmetry=0.0)
    view = np.zeros((3, 3))
    light = np.tile(np.array([[0.5, 0.5, 0.0, 0.3]], np.float32), (3, 1))
    bg = torch.full((3, 3, 32, 32), 0.5)
    out = render_faces(params, view, light, bg, 32)
    d, m, rgb = out["depth"], out["mask"], out["rgb"].float()
    assert torch.equal(m, m.flip(-1))
    assert (d - d.flip(-1)).abs().max() < 1e-5
    assert (rgb - rgb.flip(2)).abs().max() <= 1.0  # albedo, shading and light are symmetric too
    asym = render_faces(sample_identities(np.random.default_rng(0), 3, asymmetry=0.1), view, light, bg, 32)
    assert (asym["depth"] - asym["depth"].flip(-1)).abs().max() > 1e-4


def test_light_convention_matches_the_method(monkeypatch):
    """Shading k_a + k_d max(0, n . l) with the method's normals from the GT depth reproduces the rendered image."""
    from methods.renderer.camera import depth_to_normals

    monkeypatch.setattr(sdf_faces, "face_albedo", lambda x, y, z, G, A: torch.full((3, x.shape[0]), 0.5))
    n, S = 3, 48
    params = sample_identities(np.random.default_rng(0), n, 0.05)
    view = np.array([[20.0, 10.0, 3.0], [-30.0, -10.0, 0.0], [0.0, 0.0, 0.0]])
    light = np.array([[0.1, 0.9, 0.6, 0.3], [0.1, 0.9, -0.5, -0.2], [0.1, 0.9, 0.0, 0.7]], np.float32)
    out = render_faces(params, view, light, torch.zeros(n, 3, S, S), S, antialias=False)
    image = out["rgb"].float()[..., 0] / 255.0
    normals = depth_to_normals(out["depth"], intrinsics(S), eps=0.0)
    lt = torch.from_numpy(light)
    l_dir = torch.cat([lt[:, 2:], torch.ones(n, 1)], 1)
    l_dir = l_dir / l_dir.norm(dim=1, keepdim=True)
    ndotl = (normals * l_dir[:, None, None, :]).sum(-1).clamp_min(0)
    expected = 0.5 * (lt[:, 0, None, None] + lt[:, 1, None, None] * ndotl)
    inner = (-torch.nn.functional.max_pool2d(-out["mask"].float()[:, None], 5, 1, 2) > 0)[:, 0]
    err = (expected - image)[inner].abs()
    assert err.median() < 0.01 and err.mean() < 0.03, (float(err.median()), float(err.mean()))


def test_identity_geometry_mirror_pairs():
    """asymmetry = 0: every left/right pair of primitives is an exact mirror image."""
    p = sample_identities(np.random.default_rng(5), 4, asymmetry=0.0)
    G = p[:, : sdf_faces.N_GEOM]
    E = G[:, sdf_faces.GEOM["ell"]: sdf_faces.GEOM["ell"] + 7 * sdf_faces.N_ELL].reshape(4, 7, -1)
    for a, b in [("brow0", "brow1"), ("socket0", "socket1"), ("ear0", "ear1")]:
        i, j = sdf_faces.ELLIPSOIDS.index(a), sdf_faces.ELLIPSOIDS.index(b)
        assert np.array_equal(E[:, 0, i], -E[:, 0, j]) and np.array_equal(E[:, 1:, i], E[:, 1:, j])
    Sp = G[:, sdf_faces.GEOM["sph"]: sdf_faces.GEOM["sph"] + 4 * sdf_faces.N_SPH].reshape(4, 4, -1)
    for a, b in [("cheek0", "cheek1"), ("eye0", "eye1"), ("ala0", "ala1")]:
        i, j = sdf_faces.SPHERES.index(a), sdf_faces.SPHERES.index(b)
        assert np.array_equal(Sp[:, 0, i], -Sp[:, 0, j]) and np.array_equal(Sp[:, 1:, i], Sp[:, 1:, j])
    for name in ("cranium", "face", "jaw", "lip_u", "lip_l", "mouth"):  # on the mid-plane
        assert np.all(E[:, 0, sdf_faces.ELLIPSOIDS.index(name)] == 0)
    asym = sample_identities(np.random.default_rng(5), 4, asymmetry=0.1)
    assert np.abs(asym - p).max() > 0.01 and np.array_equal(asym[:, -1], p[:, -1])  # same draws, same scale


# ------------------------------------------------------------------------------------------------ loader
def test_loader_contract(tiny):
    root, _ = tiny
    assert DATASETS.get("synface_proc") is SynfaceProc
    ds = SynfaceProc(str(root), split="test", limit=5)
    assert len(ds) == 5 and ds.has_depth and ds.image_size == 32
    item = ds[4]
    assert set(item) == {"image", "depth", "mask", "head_mask", "identity", "view", "light", "index", "name"}
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    assert item["depth"].shape == (32, 32) and item["depth"].dtype == torch.float32
    assert item["mask"].dtype == torch.float32 and set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    assert item["identity"].dtype == torch.int64 and item["identity"].dim() == 0
    assert item["index"].dtype == torch.int64 and int(item["index"]) == 4
    assert item["view"].shape == (3,) and item["view"].dtype == torch.float32
    assert item["light"].shape == (4,) and item["light"].dtype == torch.float32
    assert item["name"] == "test_000004"
    assert torch.equal(ds[-1]["image"], item["image"])
    with pytest.raises(IndexError):
        ds[5]
    full = SynfaceProc(root, "train")
    assert len(full) == 12 and full[9]["name"] == "train_000009"  # second shard
    depths = full.depth_array()
    assert depths.shape == (12, 32, 32) and depths.dtype == np.float32
    assert np.allclose(full.depth_mean(), depths.mean(0))
    assert np.array_equal(depths[9], full[9]["depth"].numpy())
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=5)))
    assert batch["image"].shape == (5, 3, 32, 32) and batch["identity"].shape == (5,)


def test_missing_folder_and_bad_split(tmp_path):
    with pytest.raises(DatasetMissingError) as exc:
        SynfaceProc(tmp_path / "nowhere")
    assert "bench data dataset=synface_proc" in str(exc.value) and "dataset.root=" in str(exc.value)
    with pytest.raises(BenchError, match="split"):
        SynfaceProc(tmp_path, split="valid")


def test_validation_split_is_added_to_an_older_dataset(tmp_path):
    """A dataset made before the val split (no val_size in meta.json) gains one; its train and test shards are kept
    byte for byte, and the three splits have disjoint identities."""
    import json
    import shutil

    root = tmp_path / "d"
    generate(root, seed=3, **TINY)
    meta = json.loads((root / "meta.json").read_text())
    del meta["config"]["val_size"], meta["splits"]["val"]
    (root / "meta.json").write_text(json.dumps(meta))
    shutil.rmtree(root / "val")
    before = {p: p.read_bytes() for p in sorted(root.glob("t*/*.npz"))}
    meta = generate(root, seed=3, **TINY)
    assert meta["config"]["val_size"] == TINY["val_size"] and meta["rendered_images"] == TINY["val_size"]
    assert {p: p.read_bytes() for p in sorted(root.glob("t*/*.npz"))} == before
    ids = {split: {int(SynfaceProc(root, split)[i]["identity"]) for i in range(len(SynfaceProc(root, split)))}
           for split in ("train", "val", "test")}
    assert not (ids["train"] & ids["val"]) and not (ids["test"] & ids["val"]) and not (ids["train"] & ids["test"])


def test_head_scale_frames_faces_with_the_same_identities():
    """head_scale only scales the heads (1 = the whole heads generated before the option existed): the same draws,
    and at 1.3 the face fills the frame like a BFM synface crop."""
    from benchmark.datasets.synface_proc import _config, identity_table

    heads = _config(12, 8, 32, 3, 8, 3, 0.05, 6)
    faces = _config(12, 8, 32, 3, 8, 3, 0.05, 6, head_scale=1.3)
    a, b = identity_table(heads, "test"), identity_table(faces, "test")
    col = sdf_faces.N_GEOM + sdf_faces.ALB["scale"]
    assert np.allclose(b[:, col], 1.3 * a[:, col]) and np.array_equal(np.delete(a, col, 1), np.delete(b, col, 1))
    with pytest.raises(BenchError, match="head_scale"):
        _config(12, 8, 32, 3, 8, 3, 0.05, 6, head_scale=3.0)


def test_bad_generation_arguments(tmp_path):
    with pytest.raises(BenchError, match="asymmetry"):
        generate(tmp_path / "x", **{**TINY, "asymmetry": -1})
    with pytest.raises(BenchError, match="shard_size"):
        generate(tmp_path / "x", **{**TINY, "shard_size": 0})


def test_prepare_calls_generate(tmp_path):
    meta = SynfaceProc.prepare(tmp_path / "p", train_size=2, val_size=2, test_size=2, image_size=16, progress=False)
    assert meta["splits"]["test"]["size"] == 2
    assert math.isclose(len(SynfaceProc(tmp_path / "p", "train")), 2)
    with pytest.raises(BenchError, match="unknown generation option"):
        SynfaceProc.prepare(tmp_path / "p", train_sz=3)
