"""Shape priors used to initialise depth: GAN2Shape's ellipsoid (``method.md`` section 7), a sphere, a plane.

All functions take a soft object mask ``(B, H, W)`` (values in [0, 1]; 0.5 for uncertain parts like hair) and
return a depth map ``(B, H, W)`` in the method's camera (near ~0.91 at the centre of the cap, far 1.02 outside).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from core.errors import BenchError
from methods.renderer.camera import check_shape

__all__ = ["mask_box", "ellipsoid_depth", "flat_depth", "shape_prior_depth", "check_shape_prior",
           "CATEGORY_BOX_ADJUST"]


def mask_box(mask: Tensor, threshold: float = 0.7) -> Tensor:
    """Bounding box ``(B, 4)`` = (x_min, x_max, y_min, y_max) in pixels of ``mask >= threshold``.

    An image with no pixel above the threshold gets the whole frame.

    >>> m = torch.zeros(1, 8, 8); m[0, 2:5, 1:7] = 1
    >>> mask_box(m).tolist()
    [[1.0, 6.0, 2.0, 4.0]]
    """
    check_shape(mask, "B,H,W", "mask")
    b, h, w = mask.shape
    on = mask >= threshold
    cols = torch.arange(w, dtype=torch.float32, device=mask.device).expand(b, h, w)
    rows = torch.arange(h, dtype=torch.float32, device=mask.device)[:, None].expand(b, h, w)
    inf = torch.tensor(math.inf, device=mask.device)
    box = torch.stack(
        [
            torch.where(on, cols, inf).amin((1, 2)),
            torch.where(on, cols, -inf).amax((1, 2)),
            torch.where(on, rows, inf).amin((1, 2)),
            torch.where(on, rows, -inf).amax((1, 2)),
        ],
        dim=1,
    )
    full = torch.tensor([0.0, w - 1.0, 0.0, h - 1.0], device=mask.device)
    return torch.where(on.flatten(1).any(1, keepdim=True), box, full)


def _adjust_synface(box: Tensor, h: int) -> Tensor:
    x0, x1, y0, y1 = box.unbind(1)
    return torch.stack([x0, x1, y0 - (y1 - y0) / 6, y1], 1)


def _adjust_celeba(box: Tensor, h: int) -> Tensor:
    x0, x1, y0, y1 = box.unbind(1)
    shrink = (x1 - x0) / 12
    return torch.stack([x0 + shrink, x1 - shrink, y0, torch.full_like(y1, h - 1.0)], 1)


def _adjust_extend_down(box: Tensor, h: int) -> Tensor:
    x0, x1, y0, y1 = box.unbind(1)
    return torch.stack([x0, x1, y0, y1 + (y1 - y0) / 6], 1)


#: Per-category box adjustments of the original code (section 7, step 2).
CATEGORY_BOX_ADJUST = {
    "synface": _adjust_synface,
    "celeba": _adjust_celeba,
    "car": _adjust_extend_down,
    "church": _adjust_extend_down,
    "cat": lambda box, h: box,
    # synface_proc renders whole heads (cranium included) and its parser mask leaves out the neck: no adjustment
    "synface_proc": lambda box, h: box,
    "none": lambda box, h: box,
}


def ellipsoid_depth(
    mask: Tensor,
    category: str = "synface",
    radius: float = 0.4,
    near: float = 0.91,
    far: float = 1.02,
    scale: float = 1.0,
    shift_y: float = 0.0,
    keep_aspect: bool = True,
    threshold: float = 0.7,
) -> Tensor:
    """GAN2Shape's ellipsoid prior: a spherical cap stretched over the mask's bounding box.

    The cap goes from ``near`` at the centre to exactly ``far`` at the rim; outside it the depth is ``far``.
    Reproduces the original quirk that rows are rescaled about ``H / 2`` rather than the box centre, so the
    ellipse centre row is ``H/2 + rho (c_y - H/2)``. ``scale`` multiplies the half-axes and ``shift_y`` moves the
    centre by a fraction of the box height (the size/position variants of the initialisation ablation);
    ``keep_aspect=False`` gives a circular cap (the ``sphere`` initialisation).

    Args:
        mask: ``(B, H, W)`` soft object mask.
    Returns:
        ``(B, H, W)`` depth.

    >>> m = torch.zeros(1, 64, 64); m[0, 12:52, 16:48] = 1
    >>> d = ellipsoid_depth(m)
    >>> round(d.min().item(), 3), round(d.max().item(), 3)
    (0.91, 1.02)
    """
    if category not in CATEGORY_BOX_ADJUST:
        raise ValueError(f"unknown shape-prior category '{category}'; valid: {', '.join(CATEGORY_BOX_ADJUST)}")
    _, h, w = mask.shape
    x0, x1, y0, y1 = CATEGORY_BOX_ADJUST[category](mask_box(mask, threshold), h).unbind(1)
    width = (x1 - x0).clamp_min(1.0)
    r_px = (width / 2 * scale)[:, None, None]
    rho = ((y1 - y0) / width)[:, None, None] if keep_aspect else torch.ones_like(r_px)
    cx = ((x0 + x1) / 2)[:, None, None]
    cy = ((y0 + y1) / 2 + shift_y * (y1 - y0))[:, None, None]
    rows = torch.arange(h, dtype=mask.dtype, device=mask.device)[:, None]
    cols = torch.arange(w, dtype=mask.dtype, device=mask.device)[None, :]
    rows_scaled = (rows - h / 2) / rho + h / 2
    dist = ((rows_scaled - cy) ** 2 + (cols - cx) ** 2).sqrt()
    tau = math.sqrt(radius**2 - (radius - (far - near)) ** 2)
    cap = radius - (radius**2 - (dist * tau / r_px) ** 2).abs().sqrt() + near
    return torch.where(dist <= r_px, cap, torch.full_like(cap, far))


def flat_depth(mask: Tensor, depth: float = 1.0) -> Tensor:
    """A fronto-parallel plane at ``depth``: the 'no shape prior' initialisation.

    >>> flat_depth(torch.ones(2, 4, 4)).unique().tolist()
    [1.0]
    """
    check_shape(mask, "B,H,W", "mask")
    return torch.full_like(mask, depth, dtype=torch.float32)


def shape_prior_depth(mask: Tensor, kind: str = "ellipsoid", **kwargs) -> Tensor:
    """Dispatch on ``kind``: ``ellipsoid``, ``sphere`` (circular cap) or ``flat``; ``kwargs`` go to the prior."""
    if kind == "ellipsoid":
        return ellipsoid_depth(mask, **kwargs)
    if kind == "sphere":
        return ellipsoid_depth(mask, keep_aspect=False, **kwargs)
    if kind == "flat":  # the plane needs no placement parameters
        return flat_depth(mask)
    raise ValueError(f"unknown shape prior '{kind}'; valid: ellipsoid, sphere, flat")


_ELLIPSOID_KEYS = ("category", "radius", "near", "far", "scale", "shift_y", "threshold")
_PRIOR_KEYS = {"ellipsoid": _ELLIPSOID_KEYS, "sphere": _ELLIPSOID_KEYS, "flat": ()}


def check_shape_prior(settings: dict, key: str = "method.shape_prior") -> dict:
    """Validate a ``shape_prior`` config block before any run starts; return it with ``kind`` filled in.

    Every error is a :class:`BenchError` naming ``key`` and the fix: an unknown kind, category or key, a
    non-number, or (for the ellipsoid and sphere) a value out of range (``0 < near < far``, ``radius > far - near``,
    ``scale > 0``, ``0 < threshold < 1``, finite ``shift_y``).

    >>> check_shape_prior({"near": 0.9, "far": 1.0})["kind"]
    'ellipsoid'
    >>> check_shape_prior({"near": 1.1, "far": 0.9})
    Traceback (most recent call last):
    ...
    core.errors.BenchError: method.shape_prior: near (1.1) must be below far (0.9), both > 0
    """
    settings = {"kind": "ellipsoid", **dict(settings)}
    kind = settings["kind"]
    if kind not in _PRIOR_KEYS:
        raise BenchError(f"{key}.kind: unknown shape prior '{kind}'; valid: {', '.join(_PRIOR_KEYS)}")
    known = _PRIOR_KEYS["ellipsoid"]  # the flat prior ignores the placement keys a config group may carry along
    extra = sorted(set(settings) - {"kind", *known})
    if extra:
        raise BenchError(f"{key}: unknown key {', '.join(extra)}; valid keys: kind, {', '.join(known)}")
    for name in known[1:]:
        value = settings.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise BenchError(f"{key}.{name} must be a finite number, got {value!r}")
    category = settings.get("category", "synface")
    if category not in CATEGORY_BOX_ADJUST:
        raise BenchError(f"{key}.category: unknown '{category}'; valid: {', '.join(CATEGORY_BOX_ADJUST)}")
    near, far = settings.get("near", 0.91), settings.get("far", 1.02)
    if kind != "flat":
        if not 0 < near < far:
            raise BenchError(f"{key}: near ({near}) must be below far ({far}), both > 0")
        if not settings.get("radius", 0.4) > far - near:
            raise BenchError(f"{key}.radius ({settings.get('radius', 0.4)}) must exceed far - near ({far - near:g})")
        if not settings.get("scale", 1.0) > 0:
            raise BenchError(f"{key}.scale must be > 0, got {settings.get('scale')}")
        if not 0 < settings.get("threshold", 0.7) < 1:
            raise BenchError(f"{key}.threshold must be in (0, 1), got {settings.get('threshold')}")
    return settings
