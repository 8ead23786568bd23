"""Datasets read from folders of image files: the BFM ``synface`` layout and plain image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from core.errors import BenchError, DatasetMissingError
from core.registry import DATASETS

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def read_image(path: Path, size: int, crop: int | None = None, mode: str = "RGB") -> np.ndarray:
    """Read an image, centre-crop it to ``crop`` (or to its largest square), resize to ``size``; float32 in [0, 1].

    16-bit greyscale PNGs keep their range (0-65535 maps to [0, 1]) instead of being clipped to white. Returns
    ``(size, size, C)``. An unreadable file, or one whose header claims more pixels than PIL's decompression-bomb
    limit, raises :class:`BenchError` naming it.
    """
    try:
        with Image.open(path) as im:
            w, h = im.size
            side = min(crop or min(w, h), w, h)
            left, top = (w - side) // 2, (h - side) // 2
            box = (left, top, left + side, top + side)
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit greyscale
                values = np.asarray(im, dtype=np.float32)
                scale = 65535.0 if im.mode.startswith("I;16") or values.max() > 255 else 255.0
                grey = Image.fromarray(values / scale, mode="F")
                grey = np.asarray(grey.crop(box).resize((size, size), Image.BILINEAR), dtype=np.float32)
                arr = np.repeat(grey[..., None], 3 if mode == "RGB" else 1, axis=2)
            else:
                im = im.convert(mode).crop(box).resize((size, size), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.float32) / 255.0
    except Image.DecompressionBombError as err:
        raise BenchError(f"refusing image {path}: {err}; it claims far more pixels than a face image, so it is "
                         "damaged or malicious: remove it") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise BenchError(f"cannot read image {path}: {err}; remove it or replace it with a valid image file") from None
    return np.clip(arr, 0.0, 1.0).reshape(size, size, -1)


def image_size_of(path: Path) -> tuple[int, int]:
    """(width, height) of an image file without decoding it fully."""
    try:
        with Image.open(path) as im:
            return im.size
    except Image.DecompressionBombError as err:
        raise BenchError(f"refusing image {path}: {err}; remove it") from None
    except (UnidentifiedImageError, OSError) as err:
        raise BenchError(f"cannot read image {path}: {err}; remove it or replace it with a valid image file") from None


def list_images(folder: Path, what: str) -> list[Path]:
    """Sorted image files under ``folder`` (recursively); anything else that is not hidden is an error."""
    if not folder.is_dir():
        raise DatasetMissingError(f"{what} folder {folder} does not exist; set dataset.root=<folder> to where it is")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    others = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if others:
        shown = ", ".join(str(p) for p in others[:3]) + (" ..." if len(others) > 3 else "")
        raise BenchError(f"{len(others)} non-image file(s) in {folder}: {shown}; move them out of the folder")
    if not files:
        raise DatasetMissingError(f"{what} folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def _to_image_tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous() * 2.0 - 1.0


@DATASETS.register("synface_bfm")
class SynfaceBFM(Dataset):
    """The BFM synface folders used by Unsup3d and GAN2Shape (``method.md`` section 9).

    Layout: ``<root>/<split>/image/**.png`` with depth at the same path with every ``image`` replaced by ``depth``.
    Images and depths are centre-cropped to ``crop`` (170) and resized to ``image_size`` (64); depth is
    ``1.1 - 0.2 * value`` (first channel, value in [0, 1]) so white is near; the mask is ``depth < max depth``.
    """

    has_depth = True

    def __init__(self, root: str, split: str = "test", limit: int | None = None, crop: int = 170,
                 image_size: int = 64):
        self.root, self.split, self.crop, self.image_size = Path(root), split, crop, image_size
        split_dir = self.root / split
        images = list_images(split_dir / "image", f"synface_bfm '{split}' image")
        self.items = [(p, split_dir / str(p.relative_to(split_dir)).replace("image", "depth")) for p in images]
        missing = [d for _, d in self.items if not d.is_file()]
        if missing:
            raise DatasetMissingError(f"{len(missing)} depth file(s) missing, e.g. {missing[0]}; synface_bfm expects "
                                      "each image's depth at the same path with 'image' replaced by 'depth'")
        self.items = self.items[:limit] if limit else self.items

    @classmethod
    def prepare(cls, root: str, splits: tuple[str, ...] = ("train", "test"), **kwargs) -> dict:
        """Check the folders (the data cannot be generated here) and count images per split."""
        return {split: len(cls(root, split, **kwargs)) for split in splits}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        image_path, depth_path = self.items[index]
        if image_size_of(image_path) != image_size_of(depth_path):
            raise BenchError(f"depth {depth_path} is {image_size_of(depth_path)} but its image {image_path} is "
                             f"{image_size_of(image_path)}; each depth PNG must match its image's size")
        image = read_image(image_path, self.image_size, self.crop)
        value = read_image(depth_path, self.image_size, self.crop)[..., 0]
        depth = torch.from_numpy(1.1 - 0.2 * value)
        return {
            "image": _to_image_tensor(image),
            "depth": depth,
            "mask": (depth < depth.max()).float(),
            "index": torch.tensor(index),
            "name": image_path.stem,
        }


@DATASETS.register("image_folder")
class ImageFolder(Dataset):
    """Real images without ground truth: ``<root>/**.{png,jpg,...}``, centre-cropped and resized to ``image_size``.

    The ``split`` argument is accepted for a uniform interface; a plain folder has one split.
    """

    has_depth = False

    def __init__(self, root: str, split: str = "test", limit: int | None = None, crop: int | None = None,
                 image_size: int = 64):
        self.root, self.crop, self.image_size = Path(root), crop, image_size
        self.files = list_images(self.root, "image_folder")
        for path in self.files:
            image_size_of(path)  # fail early, naming the first unreadable file
        self.files = self.files[:limit] if limit else self.files

    @classmethod
    def prepare(cls, root: str, **kwargs) -> dict:
        """Check that every file in the folder is a readable image and count them."""
        return {"images": len(cls(root, **kwargs))}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        path = self.files[index]
        return {
            "image": _to_image_tensor(read_image(path, self.image_size, self.crop)),
            "index": torch.tensor(index),
            "name": path.stem,
        }
