"""The identity embedding network on the single training driver: ``bench train model=identity dataset=synface_proc``.

Trains :class:`metrics.identity_net.EmbeddingNet` with the ArcFace loss over the identities of ``train.split``
(AdamW, linear warmup then cosine decay, random flips and shifts), logging the loss and training accuracy. Each
validation exports the network to ONNX, runs the export through insightface's ArcFace runner on ``model.val_split``
(identities disjoint from training) and computes the verification figures (:func:`verification_report`); the model
card beside the shipped ``.onnx`` holds them. Batches and augmentations depend only on the seed and the step, so a
resumed run repeats an uninterrupted one on CPU.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import BenchError
from core.registry import TRAINERS
from core.weights import atomic_torch_save, atomic_write
from methods.base import TrainContext, TrainRecipe
from methods.common.data import resize_uint8, split_images
from metrics.identity import best_threshold_accuracy, load_identity_model, roc_auc
from metrics.identity_net import EmbeddingNet, arcface_loss, export_onnx, normalise_uint8

__all__ = ["IdentityRecipe", "split_labelled", "verification_pairs", "verification_report", "lr_factor", "augment"]


def split_labelled(ds, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images ``(N, 3, size, size)`` uint8 (area-resized if needed), identities ``(N,)`` int64 and views ``(N, 3)``
    (yaw, pitch, roll degrees) of a dataset split."""
    if len(ds) == 0:
        raise BenchError("the identity network's split is empty")
    if not hasattr(ds, "array"):
        raise BenchError("the dataset has no identity labels; model=identity trains on synface_proc")
    images = resize_uint8(split_images(ds, channels_last=True), size, upsample="bicubic")
    identity = torch.from_numpy(ds.array("identity").astype(np.int64))
    view = torch.from_numpy(ds.array("view").astype(np.float32))
    return images.contiguous(), identity, view


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier at ``step``: linear warmup over ``warmup`` steps, then cosine decay to 0 at ``total``.

    >>> [round(lr_factor(s, 2, 6), 3) for s in (0, 1, 2, 4, 6)]
    [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    if step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup, span) / span))


def augment(images: torch.Tensor, gen: torch.Generator, flip: bool, shift: int) -> torch.Tensor:
    """Random horizontal flips and translations (up to ``shift`` pixels, edge-padded) of ``images (B, 3, S, S)``."""
    b, _, s, _ = images.shape
    if flip:
        mask = torch.rand(b, generator=gen) < 0.5
        images = torch.where(mask.view(b, 1, 1, 1).to(images.device), images.flip(-1), images)
    if shift > 0:
        padded = F.pad(images, (shift,) * 4, mode="replicate")
        dx, dy = (torch.randint(0, 2 * shift + 1, (2, b), generator=gen)).tolist()
        images = torch.stack([padded[i, :, dy[i]:dy[i] + s, dx[i]:dx[i] + s] for i in range(b)])
    return images


def _batch_indices(step: int, n: int, batch: int, seed: int) -> torch.Tensor:
    """Indices of the batch at ``step``: consecutive slices of a per-epoch permutation seeded by ``(seed, epoch)``."""
    per_epoch = max(n // batch, 1)
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return perm[k * batch:(k + 1) * batch]


def verification_pairs(identity: torch.Tensor, negatives: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs ``(P, 2)`` of image indices and labels ``(P,)`` (True: same identity): every same-identity pair and
    ``negatives`` distinct random different-identity pairs (seeded)."""
    n = len(identity)
    i, j = torch.triu_indices(n, n, 1)
    same = identity[i] == identity[j]
    pos = torch.stack([i[same], j[same]], 1)
    neg_all = torch.stack([i[~same], j[~same]], 1)
    pick = torch.randperm(len(neg_all), generator=torch.Generator().manual_seed(seed))[:negatives]
    pairs = torch.cat([pos, neg_all[pick]])
    return pairs, torch.cat([torch.ones(len(pos), dtype=torch.bool), torch.zeros(len(pick), dtype=torch.bool)])


def verification_report(emb: torch.Tensor, identity: torch.Tensor, yaw: torch.Tensor, negatives: int, seed: int,
                        near_frontal_deg: float, yaw_gap_deg: float) -> dict[str, float]:
    """Verification figures of embeddings ``emb (N, D)`` of images with ``identity (N,)`` and ``yaw (N,)`` degrees.

    * ``accuracy`` / ``threshold``: best-threshold accuracy over :func:`verification_pairs` (same-identity pairs,
      which always differ in view, vs ``negatives`` random different-identity pairs), and ``roc_auc`` over them;
    * ``same_cos_mean``, ``diff_cos_mean``: mean cosine of those positive / negative pairs;
    * ``same_yawgap_cos_mean``: mean cosine of same-identity pairs with ``|yaw_a - yaw_b| >= yaw_gap_deg`` (e.g. 0
      and 20 degrees); ``diff_frontal_cos_mean``: of all different-identity pairs with both ``|yaw| <=
      near_frontal_deg``; ``yawgap_vs_frontal_auc``: the probability that a pair of the first kind scores above one
      of the second (ties 1/2); the identity metric needs it well above 0.5.
    """
    unit = F.normalize(emb.float(), dim=1)
    sim = unit @ unit.t()  # (N, N) cosines
    pairs, same = verification_pairs(identity, negatives, seed)
    cos = sim[pairs[:, 0], pairs[:, 1]]
    acc, thr = best_threshold_accuracy(cos, same)
    n = len(identity)
    i, j = torch.triu_indices(n, n, 1)
    full = sim[i, j]
    same_all = identity[i] == identity[j]
    gap = same_all & ((yaw[i] - yaw[j]).abs() >= yaw_gap_deg)
    frontal = ~same_all & (yaw[i].abs() <= near_frontal_deg) & (yaw[j].abs() <= near_frontal_deg)
    report = {"accuracy": acc, "threshold": thr, "roc_auc": roc_auc(cos, same),
              "same_cos_mean": float(cos[same].mean()), "diff_cos_mean": float(cos[~same].mean()),
              "positive_pairs": int(same.sum()), "negative_pairs": int((~same).sum()),
              "yawgap_pairs": int(gap.sum()), "frontal_diff_pairs": int(frontal.sum())}
    if gap.any() and frontal.any():
        report.update({"same_yawgap_cos_mean": float(full[gap].mean()),
                       "diff_frontal_cos_mean": float(full[frontal].mean()),
                       "yawgap_vs_frontal_auc": roc_auc(torch.cat([full[gap], full[frontal]]),
                                                        torch.cat([torch.ones(int(gap.sum()), dtype=torch.bool),
                                                                   torch.zeros(int(frontal.sum()), dtype=torch.bool)]))})
    return report


@dataclass
class IdentityState:
    """Network, unit-norm class centres, optimiser, step and the driver's ``extra``."""

    net: EmbeddingNet
    centres: torch.nn.Parameter
    opt: torch.optim.Optimizer
    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@TRAINERS.register("identity")
class IdentityRecipe(TrainRecipe):
    """ArcFace training of the identity metric's embedding network, shipped as ONNX."""

    def __init__(self, ctx: TrainContext):
        super().__init__(ctx)
        m = self.m = ctx.settings
        self.size, self.batch = int(m["image_size"]), int(m["batch_size"])
        self.data, identity, _ = split_labelled(ctx.load_split(ctx.train_split, ctx.train_limit), self.size)
        _, self.labels = identity.unique(return_inverse=True)
        self.val_images, self.val_identity, self.val_view = split_labelled(
            ctx.load_split(m["val_split"], m["val_images"]), self.size)
        self.report: dict[str, float] = {}

    def _fresh(self) -> IdentityState:
        m, device = self.m, self.ctx.device
        net = EmbeddingNet(self.size, tuple(m["widths"]), int(m["embedding_dim"])).to(device)
        # unit-norm class centres: Adam moves each coordinate by ~lr per step, so the angular step is ~lr / |centre|
        centres = torch.nn.Parameter(F.normalize(torch.randn(int(self.labels.max()) + 1, int(m["embedding_dim"]),
                                                             generator=torch.Generator().manual_seed(self.ctx.seed)),
                                                 dim=1).to(device))
        opt = torch.optim.AdamW([*net.parameters(), centres], lr=float(m["lr"]), weight_decay=float(m["weight_decay"]))
        return IdentityState(net, centres, opt)

    def create(self) -> IdentityState:
        return self._fresh()

    def step(self, state: IdentityState) -> dict[str, float]:
        m, seed, step = self.m, self.ctx.seed, state.step
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step + 7)
        idx = _batch_indices(step, len(self.data), self.batch, seed)
        x = augment(normalise_uint8(self.data[idx]), gen, bool(m["flip"]), int(m["shift"])).to(self.ctx.device)
        margin = float(m["margin"]) * min(1.0, (step + 1) / max(int(m["margin_warmup"]), 1))
        for group in state.opt.param_groups:
            group["lr"] = float(m["lr"]) * lr_factor(step, int(m["lr_warmup"]), self.total_iterations())
        state.net.train()
        loss, acc = arcface_loss(state.net(x), state.centres, self.labels[idx].to(self.ctx.device), float(m["scale"]),
                                 margin)
        state.opt.zero_grad(set_to_none=True)
        loss.backward()
        state.opt.step()
        state.step += 1
        return {"loss": loss.item(), "train_accuracy": acc.item(), "margin": margin,
                "lr": state.opt.param_groups[0]["lr"]}

    def save(self, path: Path, state: IdentityState) -> None:
        atomic_torch_save(path, {"net": state.net.state_dict(), "centres": state.centres.detach(),
                                 "opt": state.opt.state_dict(), "step": state.step, "extra": state.extra})

    def load(self, path: Path) -> IdentityState:
        saved = torch.load(path, map_location=self.ctx.device, weights_only=True)
        state = self._fresh()
        state.net.load_state_dict(saved["net"])
        state.centres.data.copy_(saved["centres"])
        state.opt.load_state_dict(saved["opt"])
        state.step, state.extra = int(saved["step"]), saved["extra"]
        return state

    def evaluate(self, state: IdentityState) -> dict[str, float]:
        """Verification figures computed through the exported ONNX model, as a user of the metric runs it."""
        m = self.m
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(state.net, Path(tmp) / "identity.onnx", self.size)
            model = load_identity_model(path, num_threads=self.ctx.num_threads)
            emb = model.embed(normalise_uint8(self.val_images))
        state.net.train()
        self.report = verification_report(emb, self.val_identity, self.val_view[:, 0], int(m["negative_pairs"]),
                                          self.ctx.seed, float(m["near_frontal_deg"]), float(m["yaw_gap_deg"]))
        return self.report

    def export(self, state: IdentityState, path: Path, card: dict[str, Any]) -> None:
        path = Path(path)
        export_onnx(state.net, path, self.size)
        state.net.train()
        data = {**card["dataset"][self.ctx.train_split], "identities": int(self.labels.max()) + 1}
        data = {k: data[k] for k in ("name", "root", "split", "images", "identities", "generation_seed", "generation")}
        val_ids = int(self.val_identity.unique().numel())
        meta = {"format": "identity-onnx", "model": {"arch": "metrics.identity_net.EmbeddingNet", **state.net.config()},
                "input": {"layout": "(batch, 3, S, S) RGB float", "normalisation": "(pixel - 127.5) / 127.5",
                          "runner": "insightface.model_zoo.ArcFaceONNX (get_feat takes BGR uint8)"},
                "training": {"command": card["command"], "dataset": data, "data_seed": data["generation_seed"],
                             "commit": card["commit"], "device": card["device"], "wall_time_s": card["wall_time_s"],
                             "iterations": state.step, "epochs": state.step * self.batch / len(self.data),
                             "batch_size": self.batch, "seed": card["seed"], "train_config": card["train_config"],
                             "losses": card["losses"],
                             "verification": {"split": self.m["val_split"], "images": len(self.val_images),
                                              "identities": val_ids,
                                              "computed_through": "exported ONNX via insightface ArcFaceONNX",
                                              **self.report}}}
        atomic_write(path.with_suffix(".json"), lambda fh: fh.write((json.dumps(meta, indent=2) + "\n").encode()))

    def summary(self, state: IdentityState, scores: dict[str, float]) -> str:
        return (f"{state.step} iterations; verification accuracy {scores['accuracy']:.4f} (AUC "
                f"{scores['roc_auc']:.4f}) on {len(self.val_images)} {self.m['val_split']} images via ONNX")
