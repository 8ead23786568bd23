"""A small face-embedding CNN, the ArcFace additive-angular-margin loss, and ONNX export for
:mod:`metrics.identity`.

Input convention (that of insightface's ArcFace runner): RGB ``(B, 3, S, S)`` float, ``(pixel - 127.5) / 127.5``
(:func:`normalise_uint8`); output: the un-normalised embedding ``(B, D)``.

Network: a stride-2 3x3 stem, then one residual block per width (each halving the resolution), batch norm, a
global depthwise convolution over the final ``S / 2^(1 + stages)`` map (MobileFaceNet's GDC: a learned spatial
weighting instead of average pooling, keeping where features are), a linear layer to ``D`` and a final batch norm
(ArcFace's embedding head).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EmbeddingNet", "normalise_uint8", "arcface_logits", "arcface_loss", "export_onnx"]


def normalise_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``(B, 3, S, S)`` -> float ``(pixel - 127.5) / 127.5``, the runner's input normalisation.

    >>> normalise_uint8(torch.tensor([0, 255], dtype=torch.uint8)).tolist()
    [-1.0, 1.0]
    """
    return (images.float() - 127.5) / 127.5


class _Block(nn.Module):
    """``BN(conv3x3(PReLU(BN(conv3x3_stride(x))))) + shortcut(x)``, resolution / ``stride``."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = (nn.Identity() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.short(x))


class EmbeddingNet(nn.Module):
    """``(B, 3, image_size, image_size)`` normalised RGB -> ``(B, embedding_dim)`` embeddings.

    ``widths[0]`` is the stem width; each further width is a stride-2 residual block.

    >>> net = EmbeddingNet(16, (8, 8, 16), 4).eval()
    >>> net(torch.zeros(2, 3, 16, 16)).shape
    torch.Size([2, 4])
    """

    def __init__(self, image_size: int = 64, widths: tuple[int, ...] = (32, 48, 96, 160), embedding_dim: int = 128):
        super().__init__()
        self.image_size, self.widths, self.embedding_dim = int(image_size), tuple(int(w) for w in widths), int(embedding_dim)
        final = self.image_size // 2 ** len(self.widths)
        if final < 1 or self.image_size % 2 ** len(self.widths):
            raise ValueError(f"image_size {image_size} is not divisible by 2^{len(self.widths)}")
        w = self.widths
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 3, 2, 1, bias=False), nn.BatchNorm2d(w[0]), nn.PReLU(w[0]))
        self.blocks = nn.Sequential(*[_Block(a, b, 2) for a, b in zip(w[:-1], w[1:])])
        self.gdc = nn.Sequential(nn.Conv2d(w[-1], w[-1], final, groups=w[-1], bias=False), nn.BatchNorm2d(w[-1]))
        self.fc = nn.Linear(w[-1], self.embedding_dim, bias=False)
        self.bn = nn.BatchNorm1d(self.embedding_dim)

    def config(self) -> dict:
        return {"image_size": self.image_size, "widths": list(self.widths), "embedding_dim": self.embedding_dim}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gdc(self.blocks(self.stem(x))).flatten(1)
        return self.bn(self.fc(x))


def arcface_logits(cos: torch.Tensor, labels: torch.Tensor, scale: float, margin: float) -> torch.Tensor:
    """ArcFace logits from cosines ``cos (B, C)`` between normalised embeddings and class centres and ``labels (B,)``:
    ``scale * cos(theta_y + margin)`` for the true class, ``scale * cos(theta_j)`` for the others, where
    ``cos(theta + m) = cos(theta) cos(m) - sin(theta) sin(m)``. Where ``theta_y + m > pi`` (not monotonic there) the
    true-class logit is ``scale * (cos(theta_y) - m sin(m))`` instead (a linear continuation).

    >>> arcface_logits(torch.tensor([[0.5, 0.2]]), torch.tensor([0]), 2.0, math.pi / 3)
    tensor([[-1.0000,  0.4000]])
    """
    cos = cos.clamp(-1.0, 1.0)
    target = cos.gather(1, labels[:, None])
    sin = (1.0 - target * target).clamp_min(1e-12).sqrt()
    shifted = target * math.cos(margin) - sin * math.sin(margin)
    shifted = torch.where(target > math.cos(math.pi - margin), shifted, target - margin * math.sin(margin))
    return scale * cos.scatter(1, labels[:, None], shifted)


def arcface_loss(embeddings: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor, scale: float,
                 margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ArcFace cross-entropy and the (margin-free) top-1 accuracy: ``embeddings (B, D)``, class centres
    ``centres (C, D)`` (both normalised here), ``labels (B,)`` in ``[0, C)``."""
    cos = F.normalize(embeddings, dim=1) @ F.normalize(centres, dim=1).t()
    loss = F.cross_entropy(arcface_logits(cos, labels, scale, margin), labels)
    return loss, (cos.argmax(1) == labels).float().mean()


def export_onnx(net: nn.Module, path: str | Path, image_size: int, opset: int = 17) -> Path:
    """Write ``net`` (eval mode, on CPU) to ``path`` as ONNX with input ``image (batch, 3, S, S)`` and output
    ``embedding (batch, D)``, the batch axis dynamic; returns the path. The file is written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    was_training = net.training
    device = next(net.parameters()).device
    net.eval().cpu()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(net, torch.zeros(2, 3, image_size, image_size), str(tmp), dynamo=False,
                              input_names=["image"], output_names=["embedding"], opset_version=opset,
                              dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}})
        tmp.replace(path)
    finally:
        net.to(device).train(was_training)
    return path
