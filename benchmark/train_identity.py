"""``bench train model=identity dataset=synface_proc``: the face-embedding network of :mod:`metrics.identity`.

Trains :class:`metrics.identity_net.EmbeddingNet` with the ArcFace loss over the identities of ``train.split``
(AdamW, linear warmup then cosine decay, random flips and shifts), logging the loss and training accuracy every
``train.log_every`` steps. Every ``train.eval_every`` steps and at the end it exports the network to ONNX
(``train.export``), runs the export through insightface's ArcFace runner on ``model.val_split`` (identities
disjoint from training) and writes the verification figures (:func:`verification_report`) to MLflow and, with the
rest of the model card, to the JSON sidecar beside the ``.onnx``. ``train.out_dir/checkpoint.pt`` is written every
``train.checkpoint_every`` steps; rerunning the same command resumes from it (batches and augmentations depend only
on the seed and the step, so a resumed run repeats an uninterrupted one on CPU).
"""

from __future__ import annotations

import json
import math
import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from benchmark import tracking
from benchmark.runner import create_checked, dataset_args, device_name, plain, resolve_device, seed_everything
from core.errors import BenchError
from core.registry import TRAINERS
from metrics.identity import best_threshold_accuracy, load_identity_model, roc_auc
from metrics.identity_net import EmbeddingNet, arcface_loss, export_onnx, normalise_uint8

__all__ = ["train_identity", "load_labelled", "verification_pairs", "verification_report", "lr_factor", "augment"]


def load_labelled(cfg: DictConfig, split: str, limit: int | None, size: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                     torch.Tensor, dict[str, Any]]:
    """Images ``(N, 3, size, size)`` uint8 (area-resized if needed), identities ``(N,)`` int64, views ``(N, 3)``
    (yaw, pitch, roll degrees) and dataset info of one split."""
    from core.registry import DATASETS

    ds = create_checked(DATASETS, cfg.dataset.name, dataset_args(cfg, split, limit), f"dataset={cfg.dataset.name}")
    if len(ds) == 0:
        raise BenchError(f"dataset {cfg.dataset.name} split {split} is empty")
    if not hasattr(ds, "array"):
        raise BenchError(f"dataset {cfg.dataset.name} has no identity labels; model=identity trains on synface_proc")
    images = torch.from_numpy(np.ascontiguousarray(ds.array("image"))).permute(0, 3, 1, 2)
    if images.shape[-1] != size:
        images = torch.cat([F.interpolate(c.float(), size=(size, size), mode="area" if c.shape[-1] > size else
                                          "bicubic") for c in images.split(1024)]).round().clamp(0, 255).byte()
    identity = torch.from_numpy(ds.array("identity").astype(np.int64))
    view = torch.from_numpy(ds.array("view").astype(np.float32))
    meta = getattr(ds, "meta", None) or {}
    info = {"name": cfg.dataset.name, "root": str(cfg.dataset.root), "split": split, "images": len(images),
            "identities": int(identity.unique().numel()),
            "generation_seed": (meta.get("config") or {}).get("seed"), "generation": meta.get("config")}
    return images.contiguous(), identity, view, info


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


def _save(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


@TRAINERS.register("identity")  # a job: bench train runs it as is, not on the driver
def train_identity(cfg: DictConfig, overrides: list[str]) -> int:
    """Train (or resume) the identity embedding network, export it to ONNX with its model card; returns 0."""
    from tqdm import tqdm

    device = resolve_device(cfg.device.type)
    if cfg.train.num_threads:
        torch.set_num_threads(int(cfg.train.num_threads))
    seed, m = int(cfg.seed), cfg.model
    seed_everything(seed)
    iterations, out_dir = int(cfg.train.iterations), Path(cfg.train.out_dir)
    ckpt_path, export = out_dir / "checkpoint.pt", Path(cfg.train.export)
    command = " ".join(["bench train", *map(shlex.quote, overrides)])
    size, batch = int(m.image_size), int(m.batch_size)

    data, identity, _, data_info = load_labelled(cfg, cfg.train.split, cfg.train.limit, size)
    _, labels = identity.unique(return_inverse=True)
    val_images, val_identity, val_view, val_info = load_labelled(cfg, m.val_split, m.val_images, size)
    net = EmbeddingNet(size, tuple(m.widths), int(m.embedding_dim)).to(device)
    # unit-norm class centres: Adam moves each coordinate by ~lr per step, so the angular step is ~lr / |centre|
    centres = torch.nn.Parameter(F.normalize(torch.randn(int(labels.max()) + 1, int(m.embedding_dim),
                                                         generator=torch.Generator().manual_seed(seed)), dim=1).to(device))
    opt = torch.optim.AdamW([*net.parameters(), centres], lr=float(m.lr), weight_decay=float(m.weight_decay))
    want = {"model": plain(m), "dataset": cfg.dataset.name, "seed": seed}
    step, extra = 0, {**want, "wall_time_s": 0.0, "last_losses": {}}
    if ckpt_path.is_file():
        try:
            state = torch.load(ckpt_path, map_location=device, weights_only=True)
            net.load_state_dict(state["net"])
            centres.data.copy_(state["centres"])
            opt.load_state_dict(state["opt"])
            step, extra = int(state["step"]), state["extra"]
        except (RuntimeError, ValueError, KeyError, OSError) as err:
            raise BenchError(f"cannot resume from {ckpt_path} ({type(err).__name__}: {str(err)[:200]}); delete it "
                             f"or choose another train.out_dir") from None
        if {k: extra.get(k) for k in want} != want:
            raise BenchError(f"{ckpt_path} was trained with another model/dataset/seed; delete {out_dir} or set "
                             f"train.out_dir=<new folder>")
    resumed_from = step
    tags = {"model": m.name, "dataset": cfg.dataset.name, "seed": seed, "device": str(device),
            "device_name": device_name(device), "command": command, "resumed_from": resumed_from}
    started, commit = time.time(), tracking.git_commit()
    wall_before = float(extra.get("wall_time_s", 0.0))
    last: dict[str, float] = dict(extra.get("last_losses") or {})
    summary: dict[str, float] = {}

    with tracking.start_run(cfg.tracking.uri, cfg.tracking.experiment, f"{m.name}-{cfg.dataset.name}",
                            tracking.flatten(plain(cfg)), tags) as tracker:
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")

        def checkpoint() -> None:
            extra.update(wall_time_s=wall_before + time.time() - started, last_losses=dict(last))
            _save(ckpt_path, {"net": net.state_dict(), "centres": centres.detach(), "opt": opt.state_dict(),
                              "step": step, "extra": extra})

        def evaluate() -> None:
            export_onnx(net, export, size)
            model = load_identity_model(export, num_threads=int(cfg.train.num_threads or 0) or None)
            emb = model.embed(normalise_uint8(val_images))
            report = verification_report(emb, val_identity, val_view[:, 0], int(m.negative_pairs), seed,
                                         float(m.near_frontal_deg), float(m.yaw_gap_deg))
            tracker.log_metrics({f"val_{k}": v for k, v in report.items()}, step=step)
            summary.clear()
            summary.update(report)
            card = {"format": "identity-onnx", "model": {"arch": "metrics.identity_net.EmbeddingNet", **net.config()},
                    "input": {"layout": "(batch, 3, S, S) RGB float", "normalisation": "(pixel - 127.5) / 127.5",
                              "runner": "insightface.model_zoo.ArcFaceONNX (get_feat takes BGR uint8)"},
                    "training": {"command": command, "dataset": data_info, "data_seed": data_info["generation_seed"],
                                 "commit": commit, "device": device_name(device),
                                 "wall_time_s": wall_before + time.time() - started, "iterations": step,
                                 "epochs": step * batch / len(data), "batch_size": batch, "seed": seed,
                                 "train_config": plain(m), "losses": dict(last),
                                 "verification": {"split": m.val_split, "images": len(val_images),
                                                  "identities": val_info["identities"],
                                                  "computed_through": "exported ONNX via insightface ArcFaceONNX",
                                                  **report}}}
            export.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
            tracker.log_file(export.with_suffix(".json"))

        bar = tqdm(total=iterations, initial=min(step, iterations), disable=not cfg.train.progress,
                   desc=f"train {m.name}", dynamic_ncols=True)
        net.train()
        while step < iterations:
            gen = torch.Generator().manual_seed(seed * 1_000_003 + step + 7)
            idx = _batch_indices(step, len(data), batch, seed)
            x = augment(normalise_uint8(data[idx]), gen, bool(m.flip), int(m.shift)).to(device)
            margin = float(m.margin) * min(1.0, (step + 1) / max(int(m.margin_warmup), 1))
            for group in opt.param_groups:
                group["lr"] = float(m.lr) * lr_factor(step, int(m.lr_warmup), iterations)
            loss, acc = arcface_loss(net(x), centres, labels[idx].to(device), float(m.scale), margin)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            last.update(loss=loss.item(), train_accuracy=acc.item(), margin=margin, lr=opt.param_groups[0]["lr"])
            bar.update(1)
            if step % int(cfg.train.log_every) == 0:
                tracker.log_metrics(last, step=step)
                bar.set_postfix(loss=f"{last['loss']:.3f}", acc=f"{last['train_accuracy']:.2f}")
            if step % int(cfg.train.checkpoint_every) == 0:
                checkpoint()
            if step % int(cfg.train.eval_every) == 0 and step < iterations:
                evaluate()
                net.train()
        bar.close()
        checkpoint()
        evaluate()
        tracker.log_metrics({"iterations": step, "seconds_per_iteration":
                             (time.time() - started) / max(step - resumed_from, 1)}, step=step)
    print(f"trained {m.name} to {step} iterations; verification accuracy {summary['accuracy']:.4f} (AUC "
          f"{summary['roc_auc']:.4f}) on {len(val_images)} {m.val_split} images via ONNX; wrote {export}")
    return 0
