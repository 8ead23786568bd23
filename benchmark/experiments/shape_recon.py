"""Shape reconstruction scored by SIDE and MAD on a split with ground-truth depth (the paper's BFM table)."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from core import images as vis
from core.errors import BenchError
from core.registry import EXPERIMENTS
from methods.base import PrepareContext, Reconstruction
from methods.renderer.mesh import normals_to_uint8
from metrics.shape import nan_summary, shape_metrics

PER_IMAGE_FIELDS = ("name", "side", "mad", "mad_exact", "mask_pixels")
#: The logged sample grid: one face a row, tiles input, true depth, depth, true normals, normals, validity.
SAMPLE_GRID = "samples/input_gtdepth_depth_gtnormal_normal_valid.png"


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _check(rec: Reconstruction, batch: dict, name: str) -> None:
    expected = tuple(batch["depth"].shape)
    for field in ("depth", "valid"):
        got = tuple(getattr(rec, field).shape)
        if got != expected:
            raise RuntimeError(f"method {name} returned {field} of shape {got}, expected {expected}")


def _sample_rows(batch: dict, rec: Reconstruction, count: int) -> list[list]:
    rows = []
    for i in range(min(count, batch["image"].shape[0])):
        rows.append([
            vis.image_to_uint8(batch["image"][i]),
            vis.depth_to_uint8(batch["depth"][i]),
            vis.depth_to_uint8(rec.depth[i]),
            normals_to_uint8(batch["depth"][i]),
            normals_to_uint8(rec.depth[i]),
            vis.mask_to_uint8(rec.valid[i]),
        ])
    return rows


def collect_extras(rec: Reconstruction, state: dict) -> None:
    """Collect a method's per-image artifact folders (``extras["artifact_dirs"]``: name -> folder) and per-image
    ``extras["timings"]`` into ``state`` (plain lists, so torchrun ranks can send them to rank 0)."""
    state["folders"] += [(name, str(folder)) for name, folder in rec.extras.get("artifact_dirs", {}).items()]
    state["timings"] += rec.extras.get("timings", [])


def log_extras(ctx, state: dict) -> None:
    """Log the collected folders under ``images/<name>/``; note their result pages in ``state["pages"]``."""
    for name, folder in state["folders"]:
        ctx.tracker.log_dir(folder, f"images/{name}")
        if (Path(folder) / "index.html").is_file():
            state["pages"].append(f"images/{name}/index.html")


def timing_summary(timings: list[dict[str, float]], loop_seconds: list[float] | None = None,
                   n_images: int = 0) -> dict[str, float]:
    """Mean seconds per image spent in each phase a method reported, as ``time_<phase>_s``; with the image loop's
    wall time of every rank (``loop_seconds``) also ``time_wall_per_image_s``: the slowest rank's loop over all
    ``n_images``, the throughput figure when ranks fit images side by side (``prepare`` not included).

    >>> timing_summary([{"fit": 3.0}, {"fit": 5.0}], [8.0, 6.0], 4)
    {'time_fit_s': 4.0, 'time_wall_per_image_s': 2.0}
    """
    phases = sorted({k for t in timings for k in t})
    out = {f"time_{p}_s": sum(t.get(p, 0.0) for t in timings) / len(timings) for p in phases}
    if loop_seconds and n_images:
        out["time_wall_per_image_s"] = max(loop_seconds) / n_images
    return out


def report_page(ctx, pages: list[str]) -> None:
    """Tag the run with the first result page (where a person looks first) and print its path."""
    if pages:
        page = ctx.tracker.artifact_path(pages[0])
        ctx.tracker.set_tags({"result_page": page})
        print(f"result page: {page}")


@EXPERIMENTS.register("shape_recon")
def shape_recon(ctx) -> dict[str, float]:
    """Evaluate ``ctx.cfg.method`` on the experiment split; log per-image scores, a summary and a sample grid."""
    cfg = ctx.cfg
    data = ctx.load_split(cfg.experiment.split, limit=cfg.eval.limit)
    if not getattr(data, "has_depth", False):
        raise BenchError(f"experiment shape_recon needs ground-truth depth, which dataset {cfg.dataset.name} lacks; "
                         "use dataset=synface_proc or dataset=synface_bfm")
    method = ctx.create_method()
    method.prepare(PrepareContext(device=ctx.device, seed=cfg.seed, work_dir=ctx.work_dir,
                                  load_split=ctx.load_split, dataset_name=cfg.dataset.name))
    loader = DataLoader(ctx.shard(data), batch_size=cfg.eval.batch_size, shuffle=False,
                        num_workers=cfg.eval.num_workers)
    rows, samples, state = [], [], {"timings": [], "pages": [], "folders": [], "loop_seconds": []}
    start = time.perf_counter()
    for batch in tqdm(loader, desc=f"{cfg.method.name} on {cfg.dataset.name}", leave=False, disable=None):
        batch = to_device(batch, ctx.device)
        rec = method.reconstruct(batch)
        _check(rec, batch, cfg.method.name)
        scores = shape_metrics(rec.depth.detach(), batch["depth"], rec.valid.detach())
        for i, name in enumerate(batch["name"]):
            rows.append({"name": name, **{k: float(v[i]) for k, v in scores.items()}})
        if len(samples) < cfg.tracking.samples:
            samples += _sample_rows(batch, rec, cfg.tracking.samples - len(samples))
        collect_extras(rec, state)
        ctx.report(len(rows), {f"{k}_mean": nan_summary(torch.tensor([r[k] for r in rows]))[0] for k in ("side", "mad")})
    state["loop_seconds"].append(time.perf_counter() - start)
    shards = ctx.gather((rows, state))  # torchrun: every rank's images, in rank order; then rank 0 logs
    if not ctx.is_main:
        return {}
    rows = sorted((r for part, _ in shards for r in part), key=lambda r: r["name"]) if ctx.world > 1 else rows
    state = {k: [x for _, st in shards for x in st[k]] for k in state}
    if not rows:
        raise BenchError(f"split '{cfg.experiment.split}' of {cfg.dataset.name} is empty")
    log_extras(ctx, state)
    summary: dict[str, float] = {"n_images": float(len(rows))}
    for key in ("side", "mad", "mad_exact"):
        mean, std, nans = nan_summary(torch.tensor([r[key] for r in rows]))
        summary.update({f"{key}_mean": mean, f"{key}_std": std})
    summary["n_empty_mask"] = float(nans)
    summary.update(timing_summary(state["timings"], state["loop_seconds"], len(rows)))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=PER_IMAGE_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    ctx.tracker.log_text(buffer.getvalue(), "per_image.csv")
    ctx.tracker.log_image(vis.grid(samples), SAMPLE_GRID)
    ctx.tracker.log_metrics(summary)
    report_page(ctx, state["pages"])
    return summary


shape_recon.reads_split = True  # bench run checks the split exists before opening a run
# what a sweep may optimise (checked before its first trial); time_<phase>_s depends on the method
shape_recon.summary_metrics = ("n_images", "side_mean", "side_std", "mad_mean", "mad_std", "mad_exact_mean",
                               "mad_exact_std", "n_empty_mask", "time_*_s")
