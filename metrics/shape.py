"""Shape-reconstruction metrics on the BFM/synface protocol (``method.md`` section 9, identical to Unsup3d).

Per image:

* ``mask = erode(gt_depth < max gt_depth) * erode(pred_valid)``, erosion by 1 pixel (3x3 average pool, keep > 0.99);
* SIDE, the scale-invariant depth error: ``delta = log d_pred - log d_gt``,
  ``SIDE = sqrt(sum_m (delta - mean_m delta)^2 / sum m)``; tables report it x10^-2 (0.793 means 0.00793);
* MAD, the mean angular deviation of normals from depth, in degrees: ``mean_m arccos(clamp(n_pred . n_gt))``.
  ``mad`` uses the original normal formula (norm + 1e-7, about 5 degrees of floor even for identical depths, so it is
  comparable with published figures); ``mad_exact`` uses unit normals (0 for identical depths).

An image whose mask is empty scores NaN; callers count and report those.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from methods.renderer.camera import check_shape, depth_to_normals, intrinsics

__all__ = ["erode_mask", "side", "mad", "shape_metrics", "shape_summary", "SIDE_SCALE"]

SIDE_SCALE = 100.0  # SIDE is reported x10^-2, as in the paper's tables


def erode_mask(mask: Tensor) -> Tensor:
    """Erode a ``(B, H, W)`` mask by one pixel (3x3 average pool with zero padding, keep > 0.99).

    >>> erode_mask(torch.ones(1, 4, 4))[0].sum().item()
    4.0
    """
    check_shape(mask, "B,H,W", "mask")
    pooled = F.avg_pool2d(mask.float().unsqueeze(1), 3, stride=1, padding=1).squeeze(1)
    return (pooled > 0.99).to(mask.dtype if mask.is_floating_point() else torch.float32)


def evaluation_mask(gt_depth: Tensor, pred_valid: Tensor) -> Tensor:
    """The protocol's mask ``(B, H, W)``: eroded GT foreground (``gt < per-image max``) times eroded prediction mask."""
    check_shape(gt_depth, "B,H,W", "gt_depth")
    gt_fg = (gt_depth < gt_depth.amax(dim=(1, 2), keepdim=True)).float()
    return erode_mask(gt_fg) * erode_mask(pred_valid.float())


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).flatten(1).sum(1) / mask.flatten(1).sum(1)


def side(pred_depth: Tensor, gt_depth: Tensor, mask: Tensor) -> Tensor:
    """Scale-invariant depth error per image, ``(B,)``, in raw units (multiply by ``SIDE_SCALE`` for tables).

    >>> gt = 1.0 + 0.05 * torch.rand(2, 8, 8)
    >>> side(3.0 * gt, gt, torch.ones(2, 8, 8)).abs().max().item() < 1e-6
    True
    """
    check_shape(pred_depth, "B,H,W", "pred_depth")
    delta = pred_depth.log() - gt_depth.log()
    mean = _masked_mean(delta, mask)[:, None, None]
    return _masked_mean((delta - mean) ** 2, mask).sqrt()


def mad(pred_normals: Tensor, gt_normals: Tensor, mask: Tensor) -> Tensor:
    """Mean angular deviation in degrees per image, ``(B,)``, between ``(B, H, W, 3)`` normal maps.

    >>> n = torch.zeros(1, 4, 4, 3); n[..., 2] = 1
    >>> mad(n, n, torch.ones(1, 4, 4)).item()
    0.0
    """
    check_shape(pred_normals, "B,H,W,3", "pred_normals")
    cos = (pred_normals * gt_normals).sum(-1).clamp(-1.0, 1.0)
    return _masked_mean(torch.rad2deg(torch.acos(cos)), mask)


def shape_metrics(pred_depth: Tensor, gt_depth: Tensor, pred_valid: Tensor, fov_deg: float = 10.0) -> dict[str, Tensor]:
    """SIDE (x10^-2), MAD (original formula) and exact MAD per image, each ``(B,)``, plus the mask pixel count.

    Args:
        pred_depth: ``(B, H, W)`` predicted depth in the input view.
        gt_depth: ``(B, H, W)`` ground-truth depth; background holds the per-image maximum.
        pred_valid: ``(B, H, W)`` validity of the prediction (render mask).
    """
    check_shape(gt_depth, "B,H,W", "gt_depth")
    if pred_depth.shape != gt_depth.shape:
        raise ValueError(f"pred_depth {tuple(pred_depth.shape)} and gt_depth {tuple(gt_depth.shape)} differ")
    pred_depth, gt_depth = pred_depth.double(), gt_depth.double()
    mask = evaluation_mask(gt_depth, pred_valid).double()
    K = intrinsics(gt_depth.shape[-1], fov_deg, dtype=torch.float64, device=gt_depth.device)
    # The original computes normals in float32; the 1e-7 epsilon floor depends on that precision only weakly.
    orig = [depth_to_normals(d.float(), K.float()).double() for d in (pred_depth, gt_depth)]
    exact = [depth_to_normals(d, K, eps=0.0) for d in (pred_depth, gt_depth)]
    return {
        "side": side(pred_depth, gt_depth, mask) * SIDE_SCALE,
        "mad": mad(orig[0], orig[1], mask),
        "mad_exact": mad(exact[0], exact[1], mask),
        "mask_pixels": mask.flatten(1).sum(1),
    }


def nan_summary(values: Tensor) -> tuple[float, float, int]:
    """Mean and population std over the finite entries of a 1-d tensor, and how many were NaN."""
    finite = values[torch.isfinite(values)].double()
    if finite.numel() == 0:
        return math.nan, math.nan, int(values.numel())
    return float(finite.mean()), float(finite.std(unbiased=False)), int(values.numel() - finite.numel())


def shape_summary(batches: Iterable[tuple[Tensor, Tensor, Tensor]]) -> dict[str, float]:
    """``side``, ``mad`` and ``mad_exact`` means and population stds (``*_mean``, ``*_std``, NaN images left out)
    of :func:`shape_metrics` over batches of ``(pred_depth, gt_depth, pred_valid)``."""
    scores: dict[str, list[Tensor]] = {"side": [], "mad": [], "mad_exact": []}
    for pred, gt, valid in batches:
        metrics = shape_metrics(pred, gt.to(pred), valid)
        for key in scores:
            scores[key].append(metrics[key].cpu())
    summary: dict[str, float] = {}
    for key, values in scores.items():
        mean, std, _ = nan_summary(torch.cat(values))
        summary.update({f"{key}_mean": mean, f"{key}_std": std})
    return summary
