"""The shared yaw regressor and the pure functions that find and calibrate rotation directions with it.

Sign convention: :class:`YawRegressor` reads the yaw of synface_proc's ``view`` (degrees, ``R = Rz Ry Rx``, x
right, y down, z forward). A rotation method's ``rotate(seeds, yaw_deg)`` must change the regressor's reading of
its image by about ``+yaw_deg``; :func:`select_direction` signs each direction and :func:`calibrate` measures its
degrees per unit of strength so that every method means the same by "turn by 20 degrees".

The regressor works at 32 px (``IMAGE_SIZE``): our StyleGAN2 is 32 px, so every method is read at the resolution
of its coarsest generator and GAN images are never upsampled into a blur the regressor was not trained on. Larger
inputs are area-downsampled, smaller ones bilinearly resized. Trained by ``bench train model=yaw_regressor``
(:mod:`methods.common.yaw_training`), shipped as ``weights/yaw_regressor_synface_proc.safetensors`` + JSON model card.

Edit functions are generic: ``edit_fn(samples, strength) -> images (K, 3, H, W)`` in [-1, 1], where ``samples`` is
whatever the method edits (W latents for GANSpace/SeFa, seeds or codes for HoloGAN) and ``strength`` a float in
the method's own units (a multiple of a latent direction, an azimuth, ...).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.errors import BenchError

__all__ = ["IMAGE_SIZE", "DEFAULT_WEIGHTS", "YawRegressor", "resize_for_regressor", "load_yaw_regressor",
           "save_yaw_regressor", "predict_yaw", "pearson", "yaw_response", "yaw_direction_score", "select_direction",
           "Calibration", "fit_line", "fit_two_sided", "calibrate", "DirectionChoice"]

IMAGE_SIZE = 32
DEFAULT_WEIGHTS = "weights/yaw_regressor_synface_proc.safetensors"
FORMAT = "gan2shape-bench.yaw_regressor"
EditFn = Callable[[Any, float], Tensor]


# ------------------------------------------------------------------------------------------------ the network
def resize_for_regressor(images: Tensor, size: int = IMAGE_SIZE) -> Tensor:
    """Images (B, 3, H, W) -> (B, 3, size, size): area-downsampled when larger, bilinear when smaller.

    >>> resize_for_regressor(torch.zeros(2, 3, 64, 48)).shape
    torch.Size([2, 3, 32, 32])
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[-2:] == (size, size):
        return images
    if images.shape[-1] >= size and images.shape[-2] >= size:
        return F.interpolate(images, size=(size, size), mode="area")
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


class YawRegressor(nn.Module):
    """A small CNN: images (B, 3, H, W) in [-1, 1] -> yaw (B,) degrees; :meth:`predict` gives every output
    (B, n_out) degrees, column 0 yaw, column 1 pitch (when ``n_out`` = 2).

    Four stride-2 convolutions take the resized 32 px input to 2x2, then two linear layers. Outputs are trained in
    units of ``unit_deg`` degrees and returned in degrees.

    >>> net = YawRegressor(width=8)
    >>> net(torch.zeros(3, 3, 64, 64)).shape, net.predict(torch.zeros(3, 3, 8, 8)).shape
    (torch.Size([3]), torch.Size([3, 2]))
    """

    def __init__(self, width: int = 24, n_out: int = 2, image_size: int = IMAGE_SIZE, unit_deg: float = 30.0):
        super().__init__()
        self.width, self.n_out, self.image_size, self.unit_deg = width, n_out, image_size, unit_deg
        c = [3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.LeakyReLU(0.2)]
        c[0] = width
        for cin, cout in zip(c[:-1], c[1:]):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.GroupNorm(4, cout), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        side = image_size // 16
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c[-1] * side * side, 128), nn.LeakyReLU(0.2),
                                  nn.Linear(128, n_out))

    def config(self) -> dict:
        """Constructor arguments (JSON-friendly)."""
        return {"width": self.width, "n_out": self.n_out, "image_size": self.image_size, "unit_deg": self.unit_deg}

    def forward_units(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, n_out) in units of ``unit_deg`` (what training regresses)."""
        return self.head(self.features(resize_for_regressor(images, self.image_size)))

    def predict(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, n_out) degrees (yaw, pitch)."""
        return self.forward_units(images) * self.unit_deg

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> yaw (B,) degrees."""
        return self.predict(images)[:, 0]


def save_yaw_regressor(path: str | Path, net: YawRegressor, card: dict) -> Path:
    """Write ``path`` (.safetensors) and its JSON sidecar (architecture + model ``card``), each atomically."""
    import os

    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}, str(tmp),
              metadata={"format": FORMAT})
    os.replace(tmp, path)
    side = path.with_suffix(".json")
    side_tmp = side.with_name(side.name + ".tmp")
    side_tmp.write_text(json.dumps({"format": FORMAT, "config": net.config(), "training": card}, indent=2) + "\n")
    os.replace(side_tmp, side)
    return path


def load_yaw_regressor(path: str | Path | None = None, device: str | torch.device = "cpu") -> YawRegressor:
    """The trained regressor (eval mode, on ``device``) from ``path`` (default: the shipped weights)."""
    from safetensors.torch import load_file

    from core.paths import asset_path

    path = asset_path(path or DEFAULT_WEIGHTS)
    side = path.with_suffix(".json")
    if not path.is_file() or not side.is_file():
        raise BenchError(f"yaw regressor weights not found: {path} (and its sidecar {side.name}). Fix: train them "
                         f"with `bench train model=yaw_regressor dataset=synface_proc` (about 10 minutes on a CPU) "
                         f"or pass the path of existing weights.")
    meta = json.loads(side.read_text())
    if meta.get("format") != FORMAT:
        raise BenchError(f"{side}: not a {FORMAT} sidecar. Fix: re-export with bench train model=yaw_regressor.")
    net = YawRegressor(**meta["config"])
    net.load_state_dict(load_file(str(path)), strict=True)
    return net.to(device).eval()


@torch.no_grad()
def predict_yaw(regressor: nn.Module, images: Tensor, batch: int = 256) -> Tensor:
    """Regressor yaw in degrees (B,) of images (B, 3, H, W) in [-1, 1]."""
    device = next(regressor.parameters()).device
    out = [regressor(chunk.to(device).float()).cpu() for chunk in images.split(batch)]
    return torch.cat(out) if out else torch.zeros(0)


# ------------------------------------------------------------------------------- direction selection, calibration
def pearson(x: Tensor, y: Tensor) -> float:
    """Pearson correlation of two (N,) tensors (0 when either is constant).

    >>> round(pearson(torch.tensor([1., 2., 3.]), torch.tensor([2., 4., 7.])), 4)
    0.9934
    """
    x, y = x.double().flatten(), y.double().flatten()
    x, y = x - x.mean(), y - y.mean()
    denom = float(x.norm() * y.norm())
    return float((x * y).sum()) / denom if denom > 0 else 0.0


def yaw_response(edit_fn: EditFn, samples: Any, strengths: Sequence[float], regressor: nn.Module) -> Tensor:
    """Regressor yaw change (S, K) for each strength ``s`` (S,) and sample k: ``yaw(edit(k, s)) - yaw(edit(k, 0))``."""
    base = predict_yaw(regressor, edit_fn(samples, 0.0))
    return torch.stack([predict_yaw(regressor, edit_fn(samples, float(s))) - base for s in strengths])


def yaw_direction_score(edit_fn: EditFn, samples: Any, strengths: Sequence[float],
                        regressor: nn.Module) -> tuple[float, float]:
    """``(corr, mean_abs_change)``: Pearson correlation of yaw change with strength, pooled over samples, and
    the mean |yaw change| in degrees at the extreme strengths (how far the edit turns the head)."""
    delta = yaw_response(edit_fn, samples, strengths, regressor)
    s = torch.as_tensor(list(strengths), dtype=torch.float64)[:, None].expand_as(delta)
    extreme = s.abs() == s.abs().max()
    return pearson(s, delta), float(delta[extreme].abs().mean())


@dataclass(frozen=True)
class DirectionChoice:
    """The chosen candidate: its index, sign (+1 / -1: positive strength turns to positive yaw), and every
    candidate's correlation and mean |yaw change| at the extreme strengths."""

    index: int
    sign: float
    corr: float
    scores: list[float]
    turns_deg: list[float]


def select_direction(make_edit: Callable[[int], EditFn], n_candidates: int, samples: Any,
                     strengths: Sequence[float], regressor: nn.Module) -> DirectionChoice:
    """The candidate ``i < n_candidates`` whose edit ``make_edit(i)`` correlates best (max |corr|) with yaw."""
    if n_candidates < 1:
        raise ValueError("need at least one candidate direction")
    scored = [yaw_direction_score(make_edit(i), samples, strengths, regressor) for i in range(n_candidates)]
    corrs = [c for c, _ in scored]
    best = max(range(n_candidates), key=lambda i: abs(corrs[i]))
    return DirectionChoice(best, 1.0 if corrs[best] >= 0 else -1.0, corrs[best], corrs, [t for _, t in scored])


@dataclass(frozen=True)
class Calibration:
    """A least-squares line ``yaw change = intercept + deg_per_unit * strength`` and its fit quality ``r2``, and
    the two-sided fit through the origin (``neg_deg_per_unit`` for strength < 0, ``pos_deg_per_unit`` for
    strength > 0) with its ``r2_two_sided``: edits that saturate on one side (a head already turned far left
    turns little further left) keep their mean yaw change on target on both sides."""

    deg_per_unit: float
    intercept: float
    r2: float
    n: int
    neg_deg_per_unit: float | None = None
    pos_deg_per_unit: float | None = None
    r2_two_sided: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def strength(self, yaw_deg: Tensor) -> Tensor:
        """Strengths (A,) that turn by ``yaw_deg`` (A,): the side slopes when fitted, else ``deg_per_unit``.

        >>> Calibration(2.0, 0.0, 1.0, 4, 1.0, 4.0).strength(torch.tensor([-2.0, 0.0, 8.0])).tolist()
        [-2.0, 0.0, 2.0]
        """
        yaw = yaw_deg.double()
        if self.neg_deg_per_unit is None or self.pos_deg_per_unit is None:
            return yaw / self.deg_per_unit
        return torch.where(yaw < 0, yaw / self.neg_deg_per_unit, yaw / self.pos_deg_per_unit)


def fit_line(x: Tensor, y: Tensor) -> Calibration:
    """Least-squares ``y = a + b x`` for (N,) tensors; ``r2 = 1 - SS_res / SS_tot``.

    >>> c = fit_line(torch.tensor([-1., 0., 1., 2.]), torch.tensor([-2., 1., 4., 7.]))
    >>> round(c.deg_per_unit, 6), round(c.intercept, 6), round(c.r2, 6)
    (3.0, 1.0, 1.0)
    """
    x, y = x.double().flatten(), y.double().flatten()
    if x.numel() < 2 or float(x.var()) == 0:
        raise ValueError("a line fit needs at least two distinct strengths")
    xm, ym = x.mean(), y.mean()
    slope = float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())
    intercept = float(ym - slope * xm)
    ss_res = float(((y - intercept - slope * x) ** 2).sum())
    ss_tot = float(((y - ym) ** 2).sum())
    return Calibration(slope, intercept, 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0, int(x.numel()))


def fit_two_sided(x: Tensor, y: Tensor) -> tuple[float, float, float]:
    """Slopes through the origin of ``y`` on ``x`` (N,) for ``x < 0`` and ``x > 0``, and the R^2 of that model.

    >>> fit_two_sided(torch.tensor([-2., -1., 0., 1., 2.]), torch.tensor([-2., -1., 0., 3., 6.]))
    (1.0, 3.0, 1.0)
    """
    x, y = x.double().flatten(), y.double().flatten()
    neg, pos = x < 0, x > 0
    if not neg.any() or not pos.any():
        raise ValueError("a two-sided fit needs strengths on both sides of 0")
    slopes = [float((x[m] * y[m]).sum() / (x[m] ** 2).sum()) for m in (neg, pos)]
    pred = torch.where(neg, x * slopes[0], x * slopes[1])
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return slopes[0], slopes[1], 1.0 - float(((y - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else 0.0


def calibrate(edit_fn: EditFn, samples: Any, strengths: Sequence[float], regressor: nn.Module) -> Calibration:
    """Degrees of regressor yaw per unit of strength: line fits (one line, and two half-lines through the origin
    when strengths have both signs) of the yaw change of every held sample (relative to strength 0) against
    strength. ``rotate`` then uses ``strength = Calibration.strength(yaw_deg)``."""
    delta = yaw_response(edit_fn, samples, strengths, regressor)
    s = torch.as_tensor(list(strengths), dtype=torch.float64)[:, None].expand_as(delta)
    cal = fit_line(s, delta)
    if not math.isfinite(cal.deg_per_unit) or cal.deg_per_unit == 0:
        raise BenchError("calibration found no yaw response to the edit (slope 0); the direction does not rotate")
    if (s < 0).any() and (s > 0).any():
        neg, pos, r2 = fit_two_sided(s, delta)
        cal = Calibration(cal.deg_per_unit, cal.intercept, cal.r2, cal.n, neg, pos, r2)
    return cal
