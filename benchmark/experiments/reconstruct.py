"""Reconstruction without ground truth (e.g. ``dataset=image_folder``): run the method, keep what it produced.

Logs a sample grid (input, depth in the input view, its normals, validity), the method's per-image artifacts (for
GAN2Shape: meshes, sweeps and the result page) and the number of images; no SIDE/MAD.
"""

from __future__ import annotations

import time

from torch.utils.data import DataLoader
from tqdm import tqdm

from benchmark.experiments.shape_recon import collect_extras, log_extras, report_page, timing_summary, to_device
from core import images as vis
from core.errors import BenchError
from core.registry import EXPERIMENTS
from methods.base import PrepareContext
from methods.renderer.mesh import normals_to_uint8


@EXPERIMENTS.register("reconstruct")
def reconstruct(ctx) -> dict[str, float]:
    """Reconstruct every image of the experiment split with ``ctx.cfg.method``; log outputs, return the count."""
    cfg = ctx.cfg
    data = ctx.load_split(cfg.experiment.split, limit=cfg.eval.limit)
    method = ctx.create_method()
    method.prepare(PrepareContext(device=ctx.device, seed=cfg.seed, work_dir=ctx.work_dir,
                                  load_split=ctx.load_split, dataset_name=cfg.dataset.name))
    loader = DataLoader(ctx.shard(data), batch_size=cfg.eval.batch_size, shuffle=False,
                        num_workers=cfg.eval.num_workers)
    count, samples, state = 0, [], {"timings": [], "pages": [], "folders": [], "loop_seconds": []}
    start = time.perf_counter()
    for batch in tqdm(loader, desc=f"{cfg.method.name} on {cfg.dataset.name}", leave=False, disable=None):
        batch = to_device(batch, ctx.device)
        rec = method.reconstruct(batch)
        count += batch["image"].shape[0]
        for i in range(min(cfg.tracking.samples - len(samples), batch["image"].shape[0])):
            samples.append([vis.image_to_uint8(batch["image"][i]), vis.depth_to_uint8(rec.depth[i]),
                            normals_to_uint8(rec.depth[i]), vis.mask_to_uint8(rec.valid[i])])
        collect_extras(rec, state)
    state["loop_seconds"].append(time.perf_counter() - start)
    shards = ctx.gather((count, state))  # torchrun: rank 0 logs every rank's outputs
    if not ctx.is_main:
        return {}
    count = sum(c for c, _ in shards)
    state = {k: [x for _, st in shards for x in st[k]] for k in state}
    log_extras(ctx, state)
    if not count:
        raise BenchError(f"split '{cfg.experiment.split}' of {cfg.dataset.name} is empty")
    ctx.tracker.log_image(vis.grid(samples), "samples/input_depth_normal_valid.png")
    summary = {"n_images": float(count), **timing_summary(state["timings"], state["loop_seconds"], count)}
    ctx.tracker.log_metrics(summary)
    report_page(ctx, state["pages"])
    return summary


reconstruct.reads_split = True  # bench run checks the split exists before opening a run
reconstruct.summary_metrics = ("n_images", "time_*_s")  # no ground truth: nothing a sweep could optimise but time
