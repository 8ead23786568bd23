"""Face identity: embeddings from an ArcFace-style ONNX model run by insightface, and identity-preservation scores.

The embedding model is any single-input, single-output ONNX face-recognition network of the kind insightface's
:class:`insightface.model_zoo.ArcFaceONNX` runs: input ``(B, 3, H, W)`` float with a static ``H, W`` (read from the
graph), RGB, normalised as ``(pixel - 127.5) / 127.5``; output ``(B, D)``. The runner's ``get_feat`` takes BGR
uint8 images (OpenCV order) and swaps them to RGB in ``cv2.dnn.blobFromImages``. Our default is
``weights/identity_synface_proc.onnx``, trained on the synface_proc identities by
``bench train model=identity dataset=synface_proc`` (see :mod:`metrics.identity_training`); a real ArcFace
(e.g. insightface's ``w600k_r50.onnx``, 112x112) drops in by path.

Scores (pure functions, torch tensors): :func:`cosine_similarity`, :func:`identity_scores` (each rotated image
against its source), :func:`identity_summary`, :func:`identity_curve`; and verification figures
(:func:`best_threshold_accuracy`, :func:`roc_auc`) used by the trainer's model card.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import BenchError

__all__ = ["DEFAULT_WEIGHTS", "IdentityModel", "load_identity_model", "to_bgr_uint8", "cosine_similarity",
           "identity_scores", "identity_summary", "identity_curve", "best_threshold_accuracy", "roc_auc"]

DEFAULT_WEIGHTS = "weights/identity_synface_proc.onnx"
_TRAIN_HINT = "bench train model=identity dataset=synface_proc"


# ----------------------------------------------------------------------------------------------------------------
# Embedding through insightface's ArcFace ONNX runner
# ----------------------------------------------------------------------------------------------------------------
def to_bgr_uint8(images: torch.Tensor, size: tuple[int, int]) -> list[np.ndarray]:
    """RGB images ``(B, 3, H, W)`` in [-1, 1] -> ``B`` BGR uint8 arrays ``(h, w, 3)`` with ``(w, h) = size``.

    Pixels map as ``round((x + 1) * 127.5)``; resizing is OpenCV's area filter when shrinking and bicubic when
    enlarging (the runner's own bilinear resize is then a no-op).

    >>> out = to_bgr_uint8(torch.tensor([1.0, 0.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2), (4, 4))
    >>> out[0].shape, out[0][0, 0].tolist()
    ((4, 4, 3), [0, 128, 255])
    """
    import cv2

    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    out = []
    for img in pixels.permute(0, 2, 3, 1).numpy():
        bgr = np.ascontiguousarray(img[:, :, ::-1])
        if (bgr.shape[1], bgr.shape[0]) != tuple(size):
            shrink = bgr.shape[1] > size[0] or bgr.shape[0] > size[1]
            bgr = cv2.resize(bgr, tuple(size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        out.append(bgr)
    return out


class IdentityModel:
    """An ONNX face-embedding model behind :class:`insightface.model_zoo.ArcFaceONNX`.

    ``path``: the ``.onnx`` file (``None``: the shipped :data:`DEFAULT_WEIGHTS`, found from any working directory).
    ``num_threads``: ONNX Runtime intra-op threads (``None``: its default).
    """

    def __init__(self, path: str | Path | None = None, num_threads: int | None = None):
        from core.paths import asset_path

        self.path = asset_path(path or DEFAULT_WEIGHTS)
        if not self.path.is_file():
            made = "the shipped default" if path is None else "the given file"
            raise BenchError(f"identity model {self.path} not found ({made}); train it with `{_TRAIN_HINT}` or pass "
                             f"the path of an ArcFace-style .onnx face-embedding model (e.g. insightface "
                             f"w600k_r50.onnx)")
        import onnxruntime
        from insightface.model_zoo import ArcFaceONNX, get_default_providers

        options = onnxruntime.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        try:
            session = onnxruntime.InferenceSession(str(self.path), options, providers=get_default_providers())
            self.runner = ArcFaceONNX(model_file=str(self.path), session=session)
        except Exception as err:  # onnx/onnxruntime raise many types for a bad file
            raise BenchError(f"cannot load identity model {self.path} ({type(err).__name__}: {str(err)[:200]}); "
                             f"pass an ArcFace-style .onnx file or retrain with `{_TRAIN_HINT}`") from None
        shape = self.runner.input_shape
        if len(shape) != 4 or not all(isinstance(s, int) for s in shape[1:]) or shape[1] != 3:
            raise BenchError(f"identity model {self.path} takes input {shape}; expected (batch, 3, H, W) with fixed "
                             f"H and W")

    @property
    def input_size(self) -> tuple[int, int]:
        """``(width, height)`` the model takes."""
        return tuple(self.runner.input_size)

    def embed(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """RGB images ``(B, 3, H, W)`` in [-1, 1], any ``H, W`` -> L2-normalised embeddings ``(B, D)`` float32 on
        the images' device. Runs through the runner's ``get_feat`` on BGR uint8 images (see :func:`to_bgr_uint8`)."""
        feats = []
        for chunk in images.split(batch_size):
            feats.append(np.asarray(self.runner.get_feat(to_bgr_uint8(chunk, self.input_size)), np.float32))
        if not feats:
            return torch.zeros(0, 0, device=images.device)
        emb = torch.from_numpy(np.concatenate(feats).reshape(len(images), -1))
        return F.normalize(emb, dim=1).to(images.device)


def load_identity_model(path: str | Path | None = None, num_threads: int | None = None) -> IdentityModel:
    """:class:`IdentityModel` of ``path`` (``None``: the shipped synface_proc model)."""
    return IdentityModel(path, num_threads)


# ----------------------------------------------------------------------------------------------------------------
# Scores
# ----------------------------------------------------------------------------------------------------------------
def cosine_similarity(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine of embeddings ``a (..., D)`` and ``b (..., D)`` (broadcast) -> ``(...)``.

    >>> cosine_similarity(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 2.0], [2.0, 2.0]]))
    tensor([0.0000, 1.0000])
    """
    return (F.normalize(a, dim=-1, eps=eps) * F.normalize(b, dim=-1, eps=eps)).sum(-1)


def identity_scores(source_emb: torch.Tensor, rotated_emb: torch.Tensor) -> torch.Tensor:
    """Cosine between each rotated image and its source: ``source_emb (N, D)``, ``rotated_emb (N, A, D)`` ->
    ``(N, A)`` with ``[n, a] = cos(source_emb[n], rotated_emb[n, a])``."""
    if source_emb.ndim != 2 or rotated_emb.ndim != 3 or rotated_emb.shape[::2] != source_emb.shape:
        raise ValueError(f"expected source (N, D) and rotated (N, A, D), got {tuple(source_emb.shape)} and "
                         f"{tuple(rotated_emb.shape)}")
    return cosine_similarity(source_emb[:, None, :], rotated_emb)


def identity_curve(scores: torch.Tensor) -> torch.Tensor:
    """Per-angle mean ``(A,)`` of ``scores (N, A)``: ``curve[a] = mean_n scores[n, a]``."""
    return scores.float().mean(0)


def identity_summary(scores: torch.Tensor) -> dict[str, float]:
    """Summary of ``scores (N, A)`` (cosine of rotated image ``a`` of source ``n`` with the source).

    * ``identity_mean = (1 / (N A)) sum_{n,a} scores[n, a]``, over all pairs;
    * ``identity_std`` = population std over sources of the per-source means:
      ``m_n = (1 / A) sum_a scores[n, a]``, ``identity_std = sqrt((1 / N) sum_n (m_n - identity_mean)^2)``
      (0 for one source);
    * ``identity_min``: the lowest pair score; ``identity_sources = N``, ``identity_angles = A``.

    >>> s = identity_summary(torch.tensor([[1.0, 0.5], [0.5, 0.0]]))
    >>> s["identity_mean"], s["identity_std"], s["identity_min"]
    (0.5, 0.25, 0.0)
    """
    if scores.ndim != 2 or scores.numel() == 0:
        raise ValueError(f"expected non-empty scores (N, A), got {tuple(scores.shape)}")
    scores = scores.double()
    per_source = scores.mean(1)
    return {"identity_mean": float(scores.mean()), "identity_std": float(per_source.std(unbiased=False)),
            "identity_min": float(scores.min()), "identity_sources": int(scores.shape[0]),
            "identity_angles": int(scores.shape[1])}


def best_threshold_accuracy(scores: torch.Tensor, same: torch.Tensor) -> tuple[float, float]:
    """Verification accuracy at the best threshold: ``scores (P,)`` pair similarities, ``same (P,)`` bool labels ->
    ``(accuracy, threshold)``; a pair is called "same" when ``score >= threshold``, and the threshold is the midpoint
    between consecutive sorted scores (or just outside their range) that maximises the accuracy.

    >>> best_threshold_accuracy(torch.tensor([0.9, 0.8, 0.3, 0.1]), torch.tensor([True, True, False, False]))
    (1.0, 0.55)
    """
    s, order = scores.double().sort()
    y = same.bool()[order]
    n = len(s)
    # calling "same" all pairs from sorted index k on: correct = negatives below k + positives from k
    neg_below = torch.cat([torch.zeros(1, dtype=torch.long), (~y).long().cumsum(0)])
    pos_from = torch.cat([y.long().flip(0).cumsum(0).flip(0), torch.zeros(1, dtype=torch.long)])
    correct = neg_below + pos_from
    cuts = torch.cat([s[:1] - 1e-6, (s[1:] + s[:-1]) / 2, s[-1:] + 1e-6])
    valid = torch.ones(n + 1, dtype=torch.bool)
    valid[1:n] = s[1:] > s[:-1]  # no threshold between equal scores
    correct = torch.where(valid, correct, torch.full_like(correct, -1))
    k = int(correct.argmax())
    return float(correct[k]) / n, round(float(cuts[k]), 6)


def roc_auc(scores: torch.Tensor, same: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores (P,)`` for labels ``same (P,)``: the probability that a random
    positive pair scores above a random negative pair, ties counting 1/2 (Mann-Whitney U / (n_pos n_neg)).

    >>> roc_auc(torch.tensor([0.9, 0.5, 0.5, 0.1]), torch.tensor([True, True, False, False]))
    0.875
    """
    pos, neg = scores[same.bool()].double(), scores[~same.bool()].double()
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("roc_auc needs positive and negative pairs")
    both = torch.cat([pos, neg])
    sorted_vals, _ = both.sort()
    # average ranks (1-based) with ties sharing the mean rank
    lo = torch.searchsorted(sorted_vals, both, right=False).double()
    hi = torch.searchsorted(sorted_vals, both, right=True).double()
    ranks = (lo + 1 + hi) / 2
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))
