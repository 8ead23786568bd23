"""Mask providers: where the object is in an input image, for the shape prior and ``use_mask``.

The original used BiSeNet/PSPNet parsing networks that cannot be downloaded here; these providers replace them
(``design.md``). Each provider is registered in ``MASKS`` and called as ``provider(batch) -> (B, H, W)`` float mask
in [0, 1], where ``batch`` is a dataset batch (``image`` ``(B, 3, H, W)`` in [-1, 1], ``name``, optional ``mask``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from core.errors import BenchError
from core.registry import MASKS


@MASKS.register("gt")
class GroundTruthMask:
    """The dataset's own labels as an oracle parser: ``head_mask`` (the object without neck, like the original's
    parser labels 1-14) when the dataset has it, else the foreground ``mask``."""

    def __call__(self, batch: dict) -> Tensor:
        for key in ("head_mask", "mask"):
            if key in batch:
                return batch[key].float()
        raise BenchError("mask provider 'gt' needs a dataset with ground-truth masks; use mask=center or mask=grabcut")


@MASKS.register("center")
class CenterEllipseMask:
    """A fixed centred ellipse with half-axes ``rx``, ``ry`` given as fractions of the image size."""

    def __init__(self, rx: float = 0.38, ry: float = 0.45):
        self.rx, self.ry = rx, ry

    def __call__(self, batch: dict) -> Tensor:
        image = batch["image"]
        b, _, h, w = image.shape
        rows = (torch.arange(h, device=image.device) - (h - 1) / 2) / (self.ry * h)
        cols = (torch.arange(w, device=image.device) - (w - 1) / 2) / (self.rx * w)
        inside = (rows[:, None] ** 2 + cols[None, :] ** 2 <= 1.0).float()
        return inside.expand(b, h, w).clone()


@MASKS.register("grabcut")
class GrabCutMask:
    """OpenCV GrabCut initialised with a centred rectangle covering ``1 - 2 * margin`` of the frame."""

    def __init__(self, margin: float = 0.08, iterations: int = 5):
        self.margin, self.iterations = margin, iterations

    def __call__(self, batch: dict) -> Tensor:
        import cv2

        images = ((batch["image"].detach().cpu().permute(0, 2, 3, 1).numpy() + 1) * 127.5).clip(0, 255)
        masks = []
        for img in images.astype(np.uint8):
            h, w = img.shape[:2]
            mx, my = int(round(self.margin * w)), int(round(self.margin * h))
            mask = np.zeros((h, w), np.uint8)
            bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            cv2.setRNGSeed(0)
            cv2.grabCut(img[..., ::-1].copy(), mask, (mx, my, w - 2 * mx, h - 2 * my), bgd, fgd, self.iterations,
                        cv2.GC_INIT_WITH_RECT)
            masks.append(np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32))
        return torch.from_numpy(np.stack(masks)).to(batch["image"].device)


@MASKS.register("file")
class FileMask:
    """Masks read from ``<folder>/<name>.png`` (any non-zero pixel is object), resized to the image size."""

    def __init__(self, folder: str | None = None):
        if not folder:
            raise BenchError("mask provider 'file' needs a folder: set method.mask_args.folder=<dir with <name>.png>")
        self.folder = Path(folder)

    def __call__(self, batch: dict) -> Tensor:
        from PIL import Image

        _, _, h, w = batch["image"].shape
        masks = []
        for name in batch["name"]:
            path = self.folder / f"{name}.png"
            if not path.is_file():
                raise BenchError(f"mask file {path} is missing; provide one PNG per image named <image name>.png")
            with Image.open(path) as im:
                m = np.asarray(im.convert("L").resize((w, h), Image.NEAREST), dtype=np.float32)
            masks.append((m > 0).astype(np.float32))
        return torch.from_numpy(np.stack(masks)).to(batch["image"].device)
