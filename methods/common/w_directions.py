"""What GANSpace and SeFa share: a StyleGAN2 edited along one direction of W, a yaw direction chosen among candidate
directions by the shared yaw regressor, calibrated in degrees, cached, and used by ``rotate``.

An edit adds ``strength * d`` to the W latent of the W+ layers ``layers = [start, stop)`` (``Generator.n_latent``
layers, one W per modulated layer; 8 for our 32 px generator: 0 is the 4x4 conv, 1-4 the 8x8 block and the first
16x16 conv, ...) and leaves the others, so ``layers = [0, 4)`` edits only the coarse (4x4 and 8x8) styles.
Candidate directions are unit vectors rescaled to the standard deviation of sampled W along them, so strength 1
is one typical W spread for every method. Source ``seed`` is ``Generator.seed_latents([seed])`` (the latent
GAN2Shape turns for the same seed), rendered with the generator's stored noise.
"""

from __future__ import annotations

import hashlib
import json
from abc import abstractmethod
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from core.paths import asset_path
from core.errors import BenchError
from methods.base import PrepareContext, Rotation, RotationMethod
from core.weights import file_sha256
from methods.common.yaw import (DEFAULT_WEIGHTS, Calibration, EditFn, calibrate, load_yaw_regressor,
                                select_direction)

__all__ = ["LatentEditor", "layer_modulations", "scale_to_spread", "WDirectionRotation"]

CACHE_VERSION = 2  # bump when the direction search or the calibration changes (invalidates cached directions)


def layer_modulations(generator) -> list[list[torch.nn.Module]]:
    """For each W+ index ``i < n_latent``, the ``StyledConv`` modulation layers (EqualLinear, W -> per-channel
    styles) that read ``latent[:, i]`` in ``Generator.forward`` (ToRGB layers excluded)."""
    out: list[list[torch.nn.Module]] = [[] for _ in range(generator.n_latent)]
    out[0].append(generator.conv1.conv.modulation)
    for j in range(len(generator.to_rgbs)):
        out[1 + 2 * j].append(generator.convs[2 * j].conv.modulation)
        out[2 + 2 * j].append(generator.convs[2 * j + 1].conv.modulation)
    return out


def scale_to_spread(basis: Tensor, w: Tensor) -> Tensor:
    """Unit-normalised rows of ``basis`` (C, D) scaled by the std of ``w`` (N, D) projected on each: (C, D).

    >>> w = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([3.0, 0.5])
    >>> scale_to_spread(torch.eye(2), w).diagonal().round(decimals=1)
    tensor([3.0000, 0.5000])
    """
    unit = basis / basis.norm(dim=1, keepdim=True)
    return unit * (w.double() @ unit.double().T).std(0).float()[:, None]


class LatentEditor:
    """A StyleGAN2 generator edited along W directions on a range of W+ layers."""

    def __init__(self, generator, layers: Sequence[int], batch: int = 256):
        start, stop = (int(v) for v in layers)
        if not 0 <= start < stop <= generator.n_latent:
            raise BenchError(f"layers must be [start, stop) with 0 <= start < stop <= {generator.n_latent} (the "
                             f"generator's W+ layers), got {list(layers)}")
        self.g, self.layers, self.batch = generator, (start, stop), batch
        self.device = generator.input.input.device

    @torch.no_grad()
    def seed_latents(self, seeds: Sequence[int]) -> Tensor:
        """W (N, D) of the sources ``seeds`` (``z`` from ``torch.Generator().manual_seed(seed)``, mapped)."""
        return self.g.seed_latents([int(s) for s in seeds])

    @torch.no_grad()
    def sample_w(self, n: int, seed: int) -> Tensor:
        """W (n, D) of ``n`` standard-normal z drawn from one ``seed``, mapped in batches (generator's device)."""
        gen = torch.Generator().manual_seed(int(seed))
        z = torch.randn(n, self.g.style_dim, generator=gen)
        return torch.cat([self.g.get_latent(c.to(self.device)) for c in z.split(4096)])

    @torch.no_grad()
    def synthesize(self, w: Tensor, offset: Tensor | None = None) -> Tensor:
        """Images (N, 3, H, W) in [-1, 1] of W (N, D) with ``offset`` (N, D) or (D,) added on ``layers``."""
        out = []
        for i in range(0, len(w), self.batch):
            chunk = w[i:i + self.batch].to(self.device)
            plus = chunk[:, None].repeat(1, self.g.n_latent, 1)
            if offset is not None:
                off = offset.to(self.device)
                off = off[i:i + self.batch] if off.dim() == 2 else off.expand_as(chunk)
                plus[:, self.layers[0]:self.layers[1]] += off[:, None]
            out.append(self.g([plus], input_is_w=True, randomize_noise=False)[0].clamp(-1, 1))
        return torch.cat(out)

    def edit_fn(self, direction: Tensor) -> EditFn:
        """``(w (K, D), strength) -> images (K, 3, H, W)`` moving every W by ``strength * direction`` (D,)."""
        return lambda w, strength: self.synthesize(w, direction * float(strength))


class WDirectionRotation(RotationMethod):
    """Rotation along one W direction of a StyleGAN2: subclasses supply :meth:`candidate_basis`.

    ``prepare`` finds the direction (cached in ``<work_dir>/<name>/<key>.safetensors`` + ``.json``):
    candidates scaled by :func:`scale_to_spread`, the one whose edit best correlates with regressor yaw
    (``select``: ``samples`` W from ``seed + 1``, strengths ``linspace(-max_strength, max_strength, points)``),
    signed so positive strength turns to positive yaw, then calibrated on other W (``calibration``: ``samples``
    from ``seed + 2``) in two passes: over the selection strengths, then over ``+-range_deg`` by the first slope.
    """

    name = "w_direction"

    def __init__(self, gan: str, layers: Sequence[int] = (0, 4), n_components: int = 16,
                 regressor: str = DEFAULT_WEIGHTS, select: dict | None = None, calibration: dict | None = None,
                 seed: int = 0, batch_size: int = 256, spread_samples: int = 10000):
        self.gan, self.layers, self.n_components = gan, [int(v) for v in layers], int(n_components)
        self.regressor_path, self.seed, self.batch_size = regressor, int(seed), int(batch_size)
        self.spread_samples = int(spread_samples)
        self.select = {"samples": 24, "max_strength": 2.0, "points": 5, **(select or {})}
        self.calibration = {"samples": 64, "points": 9, "range_deg": 20.0, **(calibration or {})}
        self.editor: LatentEditor | None = None
        self.direction: Tensor | None = None
        self.info: dict[str, Any] = {}

    @abstractmethod
    def candidate_basis(self, editor: LatentEditor) -> tuple[Tensor, dict[str, Any]]:
        """Candidate directions (C, D) (any norm, most important first) and facts worth recording."""

    def settings(self) -> dict[str, Any]:
        """Everything the found direction depends on, besides the weight files (the cache key)."""
        return {"method": self.name, "version": CACHE_VERSION, "layers": self.layers, "n_components": self.n_components, "seed": self.seed,
                "select": self.select, "calibration": self.calibration, "spread_samples": self.spread_samples}

    def prepare(self, ctx: PrepareContext) -> None:
        from methods.stylegan2.checkpoints import load_generator

        gan_path, reg_path = asset_path(self.gan), asset_path(self.regressor_path)
        generator = load_generator(gan_path, ctx.device)
        self.editor = LatentEditor(generator, self.layers, self.batch_size)
        regressor = load_yaw_regressor(reg_path, ctx.device)
        key_src = json.dumps({**self.settings(), "gan": file_sha256(gan_path), "regressor": file_sha256(reg_path)},
                             sort_keys=True)
        stem = Path(ctx.work_dir) / self.name / hashlib.sha256(key_src.encode()).hexdigest()[:12]
        if stem.with_suffix(".json").is_file() and stem.with_suffix(".safetensors").is_file():
            from safetensors.torch import load_file

            self.direction = load_file(str(stem.with_suffix(".safetensors")))["direction"].to(ctx.device)
            self.info = json.loads(stem.with_suffix(".json").read_text())
            return
        self.direction, self.info = self.find_direction(self.editor, regressor)
        stem.parent.mkdir(parents=True, exist_ok=True)
        from safetensors.torch import save_file

        save_file({"direction": self.direction.detach().cpu().contiguous()}, str(stem.with_suffix(".safetensors")))
        stem.with_suffix(".json").write_text(json.dumps({**self.info, "key": json.loads(key_src)}, indent=2) + "\n")

    def find_direction(self, editor: LatentEditor, regressor) -> tuple[Tensor, dict[str, Any]]:
        """The signed yaw direction (D,) in W spread units and a record of the choice and its calibration."""
        basis, facts = self.candidate_basis(editor)
        basis = basis[: self.n_components]
        candidates = scale_to_spread(basis.to(editor.device), editor.sample_w(self.spread_samples, self.seed))
        sel, cal = self.select, self.calibration
        strengths = torch.linspace(-float(sel["max_strength"]), float(sel["max_strength"]), int(sel["points"]))
        w_sel = editor.sample_w(int(sel["samples"]), self.seed + 1)
        choice = select_direction(lambda i: editor.edit_fn(candidates[i]), len(candidates), w_sel,
                                  strengths.tolist(), regressor)
        direction = candidates[choice.index] * choice.sign
        w_cal = editor.sample_w(int(cal["samples"]), self.seed + 2)
        coarse = calibrate(editor.edit_fn(direction), w_cal, strengths.tolist(), regressor)
        reach = float(cal["range_deg"]) / abs(coarse.deg_per_unit)
        fine = calibrate(editor.edit_fn(direction), w_cal,
                                      torch.linspace(-reach, reach, int(cal["points"])).tolist(), regressor)
        if min(fine.deg_per_unit, fine.neg_deg_per_unit, fine.pos_deg_per_unit) <= 0:
            raise BenchError(f"{self.name}: the chosen direction turns the head the wrong way within +-"
                             f"{cal['range_deg']} degrees ({fine.to_dict()}); no usable yaw direction")
        info = {"component": choice.index, "sign": choice.sign, "corr": choice.corr, "candidate_corrs": choice.scores,
                "candidate_turn_deg": choice.turns_deg, "coarse_calibration": coarse.to_dict(),
                "calibration": fine.to_dict(), "strength_range": reach, "spread": float(direction.norm()), **facts}
        return direction, info

    @torch.no_grad()
    def rotate(self, seeds: Sequence[int], yaw_deg: Tensor) -> Rotation:
        """Sources of ``seeds`` and each moved along the direction by the calibrated strength of each ``yaw_deg``
        (:meth:`Calibration.strength`): rotated (N, A, 3, H, W)."""
        if self.editor is None or self.direction is None:
            raise RuntimeError(f"{self.name}.rotate called before prepare")
        w = self.editor.seed_latents(seeds)
        strengths = Calibration(**self.info["calibration"]).strength(yaw_deg.cpu())
        source = self.editor.synthesize(w).cpu()
        rotated = torch.stack([self.editor.synthesize(w, self.direction * float(s)).cpu() for s in strengths], 1)
        return Rotation(source=source, rotated=rotated,
                        extras={"latents": w.cpu(), "strengths": strengths.float(), **self.info})
