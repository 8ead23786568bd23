"""The synface_bfm and image_folder loaders on small folders written here, and their bad-input errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.datasets.folders import ImageFolder, SynfaceBFM
from core.errors import BenchError, DatasetMissingError


def write_bfm(root, n=3, size=256, split="test"):
    """A synface-style folder: image/<k>_image.png and depth/<k>_depth.png (white = near)."""
    rng = np.random.default_rng(0)
    for sub in ("image", "depth"):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    rows = np.linspace(-1, 1, size)
    r2 = rows[:, None] ** 2 + rows[None, :] ** 2
    value = np.where(r2 < 0.5, 0.5 + 0.4 * np.exp(-r2 / 0.2), 0.0)  # background black (far)
    for k in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
            root / split / "image" / f"{k:04d}_image.png")
        Image.fromarray((value * 255).round().astype(np.uint8)).convert("RGB").save(
            root / split / "depth" / f"{k:04d}_depth.png")
    return value


def test_synface_bfm_loader(tmp_path):
    write_bfm(tmp_path, n=3)
    data = SynfaceBFM(str(tmp_path), "test")
    assert len(data) == 3
    item = data[0]
    assert item["image"].shape == (3, 64, 64) and item["depth"].shape == (64, 64)
    assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
    # depth = 1.1 - 0.2 * value: black background -> 1.1 (far), brighter -> nearer
    assert item["depth"].max().item() == pytest.approx(1.1)
    assert item["depth"][32, 32].item() == pytest.approx(1.1 - 0.2 * 0.9, abs=0.01)
    assert item["mask"][32, 32] == 1 and item["mask"][0, 0] == 0
    assert SynfaceBFM.prepare(str(tmp_path), splits=("test",)) == {"test": 3}
    assert len(SynfaceBFM(str(tmp_path), "test", limit=2)) == 2


def test_synface_bfm_centre_crop(tmp_path):
    """The 170-pixel centre crop of a 256 image keeps the middle: a marker outside it disappears."""
    write_bfm(tmp_path, n=1)
    img = np.zeros((256, 256, 3), np.uint8)
    img[:40] = 255  # a white band above the crop window (rows 43..212)
    Image.fromarray(img).save(tmp_path / "test" / "image" / "0000_image.png")
    item = SynfaceBFM(str(tmp_path), "test")[0]
    assert item["image"].max().item() == pytest.approx(-1.0)


def test_synface_bfm_bad_inputs(tmp_path):
    with pytest.raises(DatasetMissingError, match="does not exist"):
        SynfaceBFM(str(tmp_path / "nowhere"), "test")
    write_bfm(tmp_path, n=2)
    (tmp_path / "test" / "depth" / "0001_depth.png").unlink()
    with pytest.raises(DatasetMissingError, match="replaced by 'depth'"):
        SynfaceBFM(str(tmp_path), "test")
    write_bfm(tmp_path, n=2)
    Image.new("RGB", (128, 128)).save(tmp_path / "test" / "depth" / "0001_depth.png")
    with pytest.raises(BenchError, match="must match its image's size"):
        SynfaceBFM(str(tmp_path), "test")[1]


def test_image_folder(tmp_path):
    for k, size in enumerate([(80, 60), (64, 64)]):
        Image.new("RGB", size, (200, 10, 10)).save(tmp_path / f"img{k}.jpg")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    data = ImageFolder(str(tmp_path), image_size=32)
    assert len(data) == 2 and data[0]["image"].shape == (3, 32, 32)
    assert not ImageFolder.has_depth and "depth" not in data[0]
    assert data[1]["image"][0].mean().item() == pytest.approx(200 / 127.5 - 1, abs=0.02)


def test_image_folder_bad_files(tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "ok.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BenchError, match="non-image file.*notes.txt"):
        ImageFolder(str(tmp_path))
    (tmp_path / "notes.txt").unlink()
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(BenchError, match="cannot read image .*broken.png"):
        ImageFolder(str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetMissingError, match="holds no images"):
        ImageFolder(str(empty))


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels, with no pixel data (a decompression-bomb stand-in)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_image_bomb_is_refused_by_name(tmp_path):
    from benchmark.datasets.folders import image_size_of, read_image

    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(100_000, 100_000))  # 10^10 pixels
    for read in (lambda: read_image(path, 64), lambda: image_size_of(path)):
        with pytest.raises(BenchError, match="refusing image .*bomb.png"):
            read()


def test_16_bit_png_keeps_its_range(tmp_path):
    from benchmark.datasets.folders import read_image

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    image = read_image(tmp_path / "deep.png", 64)
    assert image.shape == (64, 64, 3)
    np.testing.assert_allclose(image[..., 0], ramp / 65535.0, atol=1e-3)  # not clipped to white
