"""GAN2Shape as a registered shape method (``bench run method=gan2shape``).

Per image (``method.md`` section 1): invert the image into the GAN's W space when the batch brings no ``latent``;
start D from the shape prior (ellipsoid pre-fit) or from jointly pre-trained weights; run the stages of
:func:`.fitting.fit_image`; score the canonical depth warped into the input view by the predicted view; write the
outputs of :mod:`.outputs`. Everything an image needs is cached in ``<work_dir>/gan2shape/<config key>/<name>/``:
the latent, the stage checkpoint (a killed run resumes at the next stage) and, once finished, the result (a rerun
skips the image). Only finished results are returned.

Choices on the quirks of ``method.md`` section 11:

* **reproduced**: the 1.02 side-border clamp (``border_factor``), the ellipsoid's row scaling about ``H / 2``
  (``methods.common.shape_prior``), the in-place ReLU of E's residual blocks (``inplace_relu_quirk``), the ``F1_d``
  off-by-one of the partial mapping (``.latent``), Step-2 masks that ignore depth-invalid pixels (``.pseudo``).
* **dropped**: the parsers' unnormalised inputs (no parser here: masks come from a provider, ``mask=gt|grabcut|
  center|file``); neural_renderer's half-pixel offset and 2x supersampling (available as renderer options, off by
  default); DDP weight sharing across different images (each image has its own networks; joint pre-training uses
  DDP on purpose, see :mod:`.pretrain`); the ``crop`` of GAN renders (our GAN renders the dataset's framing).
* **substituted**: LPIPS-VGG cannot be downloaded, so the perceptual term is the discriminator-feature loss of the
  same GAN (``perceptual=disc``, ``design.md``) or off (``perceptual=none``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save, save_file
from tqdm import tqdm

from core.errors import BenchError
from core.registry import MASKS, METHODS
from core.weights import atomic_write
from methods.base import PrepareContext, Reconstruction, Rotation, RotationMethod, ShapeMethod
from methods.common.shape_prior import check_shape_prior, shape_prior_depth
from methods.renderer.warp import canon_to_view_grid, render_given_view, render_mesh, sample_texture
from methods.stylegan2.inversion import project as invert
from methods.stylegan2.losses import discriminator_feature_loss

from .fitting import ImageTask, Optim, Schedule, StageCheckpoint, Timings, fit_concurrently, fit_image, prefit_depth
from .model import LIGHT_FRAMES, Geometry, Networks, canonical, geometry_from_dict, geometry_to_dict, predict_view, render
from .pseudo import load_priors
from .steps import STEP3_VIEWS, Hyper, gan_images, project, refine_projection, resize

__all__ = ["GAN2Shape", "load_networks", "save_networks"]

RESULT_KEYS = ("depth", "valid", "canon_depth", "albedo", "view", "light")
#: The Step-2 settings pre-trained weights carry in their card and runs from them use: what E's output means (the
#: partial mapping ``F1_d``, ``relative_enc``) and what it was trained to project (``pseudo_albedo``).
STEP2_KEYS = ("F1_d", "relative_enc", "pseudo_albedo")


def save_networks(path: str | Path, nets: Networks, card: dict[str, Any], geom: Geometry | None = None,
                  dtype: torch.dtype = torch.float32, hp: Hyper | None = None) -> Path:
    """Write ``nets`` as safetensors (floating tensors as ``dtype``: float16 halves the file; loading casts back)
    with a JSON sidecar: ``image_size``, ``latent_dim``, ``inplace_relu_quirk``, the width overrides ``arch``, the
    ``geometry`` they were trained with (:func:`.model.geometry_to_dict`), the ``step2`` settings E was trained
    under (``F1_d``, ``relative_enc``, ``pseudo_albedo`` of ``hp``) and the model ``card``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().to(dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in nets.state_dict().items()}, str(path))
    meta = {"format": "gan2shape-bench.gan2shape", "image_size": nets.image_size, "latent_dim": nets.latent_dim,
            "inplace_relu_quirk": nets.inplace_relu_quirk, "arch": nets.arch,
            "geometry": None if geom is None else geometry_to_dict(geom),
            "step2": None if hp is None else {k: getattr(hp, k) for k in STEP2_KEYS}, "card": card}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return path


def read_card(path: str | Path) -> dict[str, Any]:
    """The JSON sidecar of GAN2Shape weights (``{}`` when there is none)."""
    sidecar = Path(path).with_suffix(".json")
    if not sidecar.is_file():
        return {}
    meta = json.loads(sidecar.read_text())
    if meta.get("format") != "gan2shape-bench.gan2shape":
        raise BenchError(f"{sidecar} is not a GAN2Shape model card (format {meta.get('format')!r}); export GAN2Shape "
                         "weights with `bench train model=gan2shape_pretrain`")
    return meta


def load_networks(nets: Networks, path: str | Path) -> None:
    """Load pre-trained GAN2Shape weights into ``nets``, after checking their card's sizes and every key and shape;
    each mismatch is a one-line error naming the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"GAN2Shape weights {path} not found; train them with `bench train model=gan2shape_pretrain` "
                         "or set method.pretrained=null to start from the shape prior")
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        meta = json.loads(sidecar.read_text())
        if (meta.get("image_size"), meta.get("latent_dim")) != (nets.image_size, nets.latent_dim):
            raise BenchError(f"{path} was trained for image_size={meta.get('image_size')}, latent_dim="
                             f"{meta.get('latent_dim')}, but this run needs {nets.image_size}, {nets.latent_dim}")
    tensors = load_file(str(path))
    expected = nets.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise BenchError(f"{path} does not fit GAN2Shape networks of image_size {nets.image_size}, latent_dim "
                         f"{nets.latent_dim}: {len(missing)} keys missing (e.g. {(missing or ['-'])[0]}), "
                         f"{len(unexpected)} unexpected (e.g. {(unexpected or ['-'])[0]}); use weights exported by "
                         "`bench train model=gan2shape_pretrain` for these sizes")
    for key, value in expected.items():
        if tensors[key].shape != value.shape:
            raise BenchError(f"{path} does not fit GAN2Shape networks of image_size {nets.image_size}, latent_dim "
                             f"{nets.latent_dim}: {key} has shape {tuple(tensors[key].shape)}, they need "
                             f"{tuple(value.shape)}; use weights exported for these sizes")
    nets.load_state_dict(tensors)


def _read_cache(path: Path, keys: tuple[str, ...]) -> dict[str, torch.Tensor] | None:
    """A cached tensor file, or None when it is missing; a damaged one (truncated, wrong keys) is reported by name,
    deleted and recomputed."""
    if not path.is_file():
        return None
    try:
        tensors = load_file(str(path))
        if all(k in tensors for k in keys):
            return tensors
        problem = f"keys {sorted(tensors)} instead of {list(keys)}"
    except Exception as err:  # safetensors raises its own error types for damaged headers
        problem = f"{type(err).__name__}: {err}"
    warnings.warn(f"gan2shape: cache file {path} is damaged ({problem}); recomputing it", stacklevel=2)
    path.unlink(missing_ok=True)
    return None


#: ``shape_prior.kind`` that starts D as the pre-trained weights predict, with no pre-fit.
FROM_WEIGHTS = "pretrained"


def _check_start(shape_prior: dict | None, pretrained: str | None) -> dict | None:
    """The checked shape prior D is pre-fitted to, or None when D starts from the pre-trained weights as they are
    (``kind: pretrained``, which needs ``method.pretrained``)."""
    shape_prior = dict(shape_prior or {})
    if shape_prior.get("kind") != FROM_WEIGHTS:
        return check_shape_prior(shape_prior)
    if not pretrained:
        raise BenchError("method.shape_prior.kind=pretrained starts D from pre-trained weights, but method.pretrained "
                         "is null; set method.pretrained=<export of bench train model=gan2shape_pretrain_cpu> or "
                         "choose a shape prior (ellipsoid, sphere, flat)")
    check_shape_prior({**shape_prior, "kind": "ellipsoid"})  # the other keys are still checked
    return None


def _key(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


@METHODS.register("gan2shape")
class GAN2Shape(ShapeMethod, RotationMethod):
    """GAN2Shape (Pan et al., ICLR 2021): depth, albedo, view and light of one image from a pretrained StyleGAN2.

    Constructor arguments are the keys of ``configs/method/gan2shape.yaml`` (documented there). As a rotation
    method (:meth:`rotate`) it reconstructs GAN samples and turns their 3D model.
    """

    @staticmethod
    def check_settings(shape_prior: dict | None = None, depth_pool: int = 1, image_size: int = 64,
                       step3_views: str = "predicted", pretrained: str | None = None, parallel_images: int = 1,
                       **_: Any) -> None:
        _check_start(shape_prior, pretrained)
        if isinstance(parallel_images, bool) or not isinstance(parallel_images, int) or parallel_images < 1:
            raise BenchError(f"method.parallel_images must be an integer >= 1 (images fitted at once), got "
                             f"{parallel_images!r}")
        if step3_views not in STEP3_VIEWS:
            raise BenchError(f"method.step3_views must be 'predicted' (V of each projected sample, the paper) or "
                             f"'pseudo' (the view its pseudo sample was rendered under), got {step3_views!r}")
        if isinstance(depth_pool, bool) or not isinstance(depth_pool, int) or depth_pool < 1 or image_size % depth_pool:
            raise BenchError(f"method.depth_pool must be an integer >= 1 that divides image_size {image_size}, got "
                             f"{depth_pool!r}; e.g. method.depth_pool=4")

    def __init__(self, gan: str, image_size: int = 64, pretrained: str | None = None, reset_weight: bool = True,
                 mask: str = "gt", mask_args: dict | None = None, shape_prior: dict | None = None,
                 prefit_iters: int = 1000, view_prior: str | None = None, light_prior: str | None = None,
                 schedule: dict | None = None, symmetry: bool | None = None, F1_d: int = 8, relative_enc: bool = True,
                 view_scale: float = 1.2, rand_light: list[float] | None = None, use_mask: bool = False,
                 lam_perc: float = 0.5, lam_smooth: float = 0.01, lam_regular: float = 0.01, lr: float = 1e-4,
                 weight_decay: float = 5e-4, perceptual: str = "disc", ftr_num: int = 4, disc_input: str = "image",
                 border_factor: float = 1.02, depth_pool: int = 1, step3_views: str = "predicted",
                 inplace_relu_quirk: bool = True, inversion: dict | None = None, outputs: dict | None = None,
                 progress: bool = True, rotation: dict | None = None, arch: dict | None = None,
                 light_frame: str = "canonical", hard_symmetry: bool = False, parallel_images: int = 1,
                 pseudo_albedo: str = "network"):
        if light_frame not in LIGHT_FRAMES:
            raise BenchError(f"method.light_frame must be one of {', '.join(LIGHT_FRAMES)}, got {light_frame!r}")
        if perceptual not in ("disc", "none"):
            raise BenchError(f"method.perceptual must be 'disc' (discriminator features) or 'none', got {perceptual!r}")
        self.check_settings(depth_pool=depth_pool, image_size=image_size, step3_views=step3_views,
                            parallel_images=parallel_images)
        if disc_input not in ("image", "native"):
            raise BenchError(f"method.disc_input must be 'image' (S-resolution, as the original) or 'native' "
                             f"(resized to the discriminator's size), got {disc_input!r}")
        # the cache key: everything that changes a reconstruction (not what is shown: progress bar, rotation mode)
        self.config = {k: v for k, v in locals().items()
                       if k not in ("self", "__class__", "rotation", "progress", "parallel_images")}
        self.rotation = {"mode": "gan", "mask": "grabcut", "mask_args": {}, "refine_steps": 300, "refine_lr": 0.1,
                         "refine_reg": None, **(rotation or {})}
        if self.rotation["mode"] not in ("gan", "gan_refined", "3d"):
            raise BenchError(f"method.rotation.mode must be 'gan' (Rotation-GAN: the rotated render re-projected "
                             f"through the GAN), 'gan_refined' (E's projection refined by optimising the latent "
                             f"offset) or '3d' (Rotation-3D: the textured mesh), got {self.rotation['mode']!r}")
        self.rotation_mask = MASKS.create(self.rotation["mask"], **self.rotation["mask_args"])
        self.gan_path, self.image_size, self.pretrained, self.reset_weight = gan, image_size, pretrained, reset_weight
        self.mask_provider = MASKS.create(mask, **(mask_args or {}))
        self.shape_prior = _check_start(shape_prior, pretrained)
        self.prefit_iters, self.view_prior_path, self.light_prior_path = prefit_iters, view_prior, light_prior
        schedule = dict(schedule or {})
        stages = int(schedule.get("num_stage", 1))
        if symmetry is not None:  # the symmetry ablation: every flip term on (true) or off (false)
            schedule["flip1"] = [bool(symmetry)] * stages
            schedule["flip3"] = [bool(symmetry)] * stages
        try:
            self.schedule = Schedule(**{k: tuple(v) if isinstance(v, list) else v for k, v in schedule.items()})
        except (TypeError, ValueError) as err:
            raise BenchError(f"method.schedule: {err}") from err
        hp = {"F1_d": F1_d, "relative_enc": relative_enc, "view_scale": view_scale, "lam_perc": lam_perc,
              "lam_smooth": lam_smooth, "lam_regular": lam_regular, "step3_views": step3_views,
              "pseudo_albedo": pseudo_albedo}
        if rand_light is not None:
            hp["rand_light"] = tuple(rand_light)
        try:
            self.hp = Hyper(**hp)
        except ValueError as err:
            raise BenchError(f"method: {err}") from None
        self.optim = Optim(lr=lr, weight_decay=weight_decay)
        self.use_mask, self.perceptual, self.ftr_num, self.disc_input = use_mask, perceptual, ftr_num, disc_input
        self.border_factor, self.depth_pool, self.inplace_relu_quirk = border_factor, depth_pool, inplace_relu_quirk
        self.arch, self.light_frame = dict(arch or {}), light_frame
        self.hard_symmetry = bool(hard_symmetry) and symmetry is not False  # no_symmetry turns it off too
        self.symmetry = symmetry
        self.inversion = dict(inversion or {})
        self.outputs = dict(outputs or {})
        self.progress = progress
        self.parallel_images, self._nets_pool = parallel_images, []
        self.device = torch.device("cpu")

    # ------------------------------------------------------------------------------------------------ prepare
    def prepare(self, ctx: PrepareContext) -> None:
        from core.paths import asset_path
        from core.weights import file_sha256
        from methods.stylegan2.checkpoints import load_gan

        self.device, self.seed = ctx.device, ctx.seed
        self.G, self.discriminator = load_gan(str(asset_path(self.gan_path)), ctx.device, with_discriminator=True)
        if self.discriminator is None and (self.perceptual == "disc"):
            raise BenchError(f"{self.gan_path} has no discriminator, which perceptual=disc and Step 2 need; use a "
                             "checkpoint with 'd' weights or method.perceptual=none")
        for net in (self.G, self.discriminator):
            if net is not None:
                net.eval().requires_grad_(False)
        self.view_prior, light_mean = load_priors(self.view_prior_path and asset_path(self.view_prior_path),
                                                  self.light_prior_path and asset_path(self.light_prior_path))
        card = read_card(asset_path(self.pretrained)) if self.pretrained else {}
        if card.get("geometry"):  # weights are used with the geometry they were trained with
            changes = {} if self.symmetry is not False else {"hard_symmetry": False}
            self.geom = geometry_from_dict(card["geometry"], **changes)
        else:
            self.geom = Geometry(border_factor=self.border_factor, depth_pool=self.depth_pool,
                                 view_mean=self.view_prior.mean, light_mean=light_mean,
                                 light_frame=self.light_frame, hard_symmetry=self.hard_symmetry)
        self.geom = self.geom.to(ctx.device)
        if card.get("step2"):  # E's output means an offset only under the Step-2 settings it was trained with
            self.hp = replace(self.hp, **{k: card["step2"][k] for k in STEP2_KEYS if k in card["step2"]})
        torch.manual_seed(ctx.seed)
        arch = {**self.arch, **(card.get("arch") or {})}
        quirk = bool(card.get("inplace_relu_quirk", self.inplace_relu_quirk))
        nets = Networks(self.image_size, self.G.style_dim, quirk, **arch)
        if self.pretrained:
            load_networks(nets, asset_path(self.pretrained))
        self.initial_state = {k: v.clone() for k, v in nets.state_dict().items()}
        self.nets = nets.to(ctx.device)
        ftr = min(self.ftr_num, len(self.discriminator.convs) - 1) if self.discriminator is not None else 0
        size = self.discriminator.size if (self.discriminator is not None and self.disc_input == "native") else None

        def disc_feature(a, b, m=None):
            if size is not None and a.shape[-1] != size:
                a, b = resize(a, size), resize(b, size)
                m = None if m is None else resize(m if m.dim() == 4 else m[:, None], size)
            return discriminator_feature_loss(self.discriminator, a, b, m, ftr)

        self.disc_feature = disc_feature if ftr else None
        self.perceptual_fn = disc_feature if self.perceptual == "disc" and ftr else None
        # the GAN's bytes are part of the key: a checkpoint re-exported at the same path must not reuse inversions
        self.key = _key({**self.config, "seed": ctx.seed, "device": ctx.device.type,
                         "gan_sha256": file_sha256(asset_path(self.gan_path)),
                         "pretrained_sha256": self.pretrained and file_sha256(asset_path(self.pretrained))})
        self.cache = Path(ctx.work_dir) / "gan2shape" / self.key

    # ---------------------------------------------------------------------------------------------- per image
    def latents(self, batch: dict, folders: list[Path]) -> torch.Tensor:
        """W latents ``(B, D)``: the batch's ``latent`` if present, else cached or fresh inversions."""
        if "latent" in batch:
            return batch["latent"].to(self.device).reshape(len(folders), -1)
        out: list[torch.Tensor | None] = []
        for folder in folders:
            cached = _read_cache(folder / "latent.safetensors", ("w",))
            out.append(None if cached is None else cached["w"].to(self.device))
        todo = [i for i, w in enumerate(out) if w is None]
        if todo:
            images = resize(batch["image"][todo].to(self.device), self.G.size)
            args = {"steps": 300, "optimise_noise": False, "seed": self.seed, **self.inversion}
            result = invert(self.G, images, D=self.discriminator, **args)
            for j, i in enumerate(todo):
                w = {"w": result.w[j:j + 1].cpu().contiguous()}
                atomic_write(folders[i] / "latent.safetensors", lambda fh, w=w: fh.write(save(w)))
                out[i] = result.w[j:j + 1]
        return torch.cat(out)

    def _worker_nets(self) -> list[Networks]:
        """One set of networks per concurrent image (``parallel_images``): ``self.nets`` and private copies."""
        while len(self._nets_pool) < self.parallel_images:
            self._nets_pool.append(copy.deepcopy(self.nets))
        return [self.nets, *self._nets_pool[:self.parallel_images - 1]]

    def _fit_one(self, image: torch.Tensor, w: torch.Tensor, mask: torch.Tensor, folder: Path, index: int,
                 bar, nets: Networks | None = None) -> dict[str, Any]:
        nets = self.nets if nets is None else nets
        if self.reset_weight:
            nets.load_state_dict(self.initial_state)
        rng = torch.Generator().manual_seed(self.seed * 100003 + index)
        checkpoint = StageCheckpoint(folder, self.key)
        timings = Timings()
        resumed = checkpoint.load(nets, timings)
        start = 0
        if resumed is not None:
            start, state = resumed
            rng.set_state(state)
        elif self.shape_prior is not None and self.prefit_iters > 0:  # D pre-fitted to the shape prior
            prior = shape_prior_depth(mask, **self.shape_prior).to(self.device)
            t0 = time.perf_counter()
            prefit_depth(nets, image, prior, self.geom, self.prefit_iters, self.optim,
                         on_iter=lambda loss: bar.set_postfix(stage="-", step="prefit", loss=f"{loss:.2e}", refresh=False))
            timings.add("prefit", t0)
        canon_mask = None
        if self.use_mask:
            with torch.no_grad():
                depth, _ = canonical(nets, image, self.geom)
                view = predict_view(nets, image, self.geom)
                grid = canon_to_view_grid(depth, view, self.geom.renderer)
                canon_mask = sample_texture(mask[:, None].to(image), grid, mode="nearest")
        with torch.no_grad():
            gan_image = gan_images(self.G, w, self.image_size)
        task = ImageTask(image, w, gan_image, canon_mask)

        losses: dict[str, list[float]] = {}  # first and last loss of every step of every stage, for the record

        def on_iter(stage: int, step: str, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(stage=stage, step=step, loss=f"{loss:.3f}", refresh=False)
            pair = losses.setdefault(f"stage{stage}_{step}", [loss, loss])
            pair[1] = loss

        fwd = fit_image(nets, self.G, task, self.view_prior, self.geom, self.hp, self.schedule, self.optim,
                        rng=rng, perceptual=self.perceptual_fn, disc_feature=self.disc_feature, start_stage=start,
                        on_stage=lambda k: checkpoint.save(nets, k + 1, rng, timings), on_iter=on_iter,
                        timings=timings)
        result = {"depth": fwd.render.view_depth, "valid": fwd.render.valid[:, 0], "canon_depth": fwd.depth,
                  "albedo": fwd.albedo, "view": fwd.view, "light": fwd.light}
        from .outputs import write_outputs

        write_outputs(folder / "outputs", image, fwd, nets, self.G, w, gan_image, self.geom, self.hp,
                      title=f"GAN2Shape reconstruction of {folder.name}", **self.outputs)
        tensors = {k: v.detach().cpu().contiguous() for k, v in result.items()}
        losses_json = json.dumps({k: {"first": a, "last": b} for k, (a, b) in losses.items()}).encode()
        atomic_write(folder / "losses.json", lambda fh: fh.write(losses_json))
        atomic_write(folder / "timings.json", lambda fh: fh.write(json.dumps(dict(timings.seconds)).encode()))
        atomic_write(folder / "result.safetensors", lambda fh: fh.write(save(tensors)))  # last: marks the image done
        return result

    def _results(self, batch: dict, mask_provider, folders: list[Path]) -> list[dict[str, torch.Tensor]]:
        """Per-image results (:data:`RESULT_KEYS`) of a batch: cached ones loaded, the others fitted and cached."""
        images = batch["image"].to(self.device)
        names = [f.name for f in folders]
        done = {i: r for i, f in enumerate(folders)
                if (r := _read_cache(f / "result.safetensors", RESULT_KEYS)) is not None}
        todo = [i for i in range(len(names)) if i not in done]
        if todo:
            sub = {k: (v[todo] if isinstance(v, torch.Tensor) else [v[i] for i in todo]) for k, v in batch.items()}
            masks = mask_provider(sub).to(self.device)
            latents = self.latents(sub, [folders[i] for i in todo])
            total = len(todo) * self.schedule.iterations()
            with tqdm(total=total, desc="gan2shape", disable=not self.progress or None, leave=False) as bar:
                def fit(j: int, nets: Networks) -> None:
                    i = todo[j]
                    bar.set_description(f"gan2shape {names[i]} ({j + 1}/{len(todo)})")
                    index = int(batch["index"][i]) if "index" in batch else i
                    done[i] = self._fit_one(images[i:i + 1], latents[j:j + 1], masks[j:j + 1], folders[i], index, bar,
                                            nets)

                fit_concurrently(fit, len(todo), self._worker_nets())
        return [{k: v.to(self.device) for k, v in done[i].items()} for i in range(len(names))]

    def reconstruct(self, batch: dict) -> Reconstruction:
        images = batch["image"]
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise BenchError(f"gan2shape is configured for {self.image_size}x{self.image_size} images, got "
                             f"{tuple(images.shape[-2:])}; set method.image_size or the dataset's image size")
        names = list(batch.get("name", [f"image_{i}" for i in range(images.shape[0])]))
        folders = [self.cache / n for n in names]
        results = self._results(batch, self.mask_provider, folders)
        fields = {k: torch.cat([r[k] for r in results]) for k in RESULT_KEYS}
        timings = [json.loads((f / "timings.json").read_text()) for f in folders if (f / "timings.json").is_file()]
        return Reconstruction(**fields, extras={"artifact_dirs": {n: f / "outputs" for n, f in zip(names, folders)},
                                                "timings": timings})

    # ------------------------------------------------------------------------------------------------ rotation
    @torch.no_grad()
    def rotate(self, seeds, yaw_deg: torch.Tensor, on_refine_step=None) -> Rotation:
        """Reconstruct ``G(w)`` of each seed (cached like any image, mask from ``rotation.mask``), turn the 3D model
        by each yaw relative to its predicted view, and show it re-projected through the GAN (``rotation.mode=gan``,
        Rotation-GAN: the warp render -> E -> G, as the paper's face rotation; ``gan_refined``: then
        ``rotation.refine_steps`` Adam steps on the latent offsets at ``rotation.refine_lr``, with the offset penalty
        ``rotation.refine_reg`` (None: ``lam_regular``), :func:`.steps.refine_projection`) or as the
        textured mesh (``3d``). ``on_refine_step(n, k, latents)``, if given, is called after refinement step ``k``
        of source ``n`` with its current latents ``w + delta_w`` (e.g. to read the projection every K steps)."""
        seeds = [int(s) for s in seeds]
        w = self.G.seed_latents(seeds).to(self.device)
        sources = gan_images(self.G, w, self.image_size)
        mask = self.rotation["mask"]
        folders = [self.cache / f"seed_{s:06d}_{mask}" for s in seeds]
        batch = {"image": sources, "latent": w, "index": torch.tensor(seeds)}
        with torch.enable_grad():
            results = self._results(batch, self.rotation_mask, folders)
        r = self.geom.renderer
        reg = self.rotation["refine_reg"]
        refine_hp = self.hp if reg is None else replace(self.hp, lam_regular=float(reg))
        rotated = []
        for i, res in enumerate(results):
            shown = render(res["canon_depth"], res["albedo"], res["view"], res["light"], self.geom)
            views = res["view"].repeat(len(yaw_deg), 1)
            views[:, 1] += yaw_deg.to(views) / r.rot_range_deg
            texture = shown.texture.expand(len(views), -1, -1, -1)
            depth = res["canon_depth"].expand(len(views), -1, -1)
            if self.rotation["mode"] == "3d":
                rotated.append(render_mesh(texture, depth, views, r))
                continue
            if not StageCheckpoint(folders[i], self.key).load(self.nets):
                raise BenchError(f"{folders[i]} has a result but no final stage checkpoint, which Rotation-GAN "
                                 "needs; delete the folder to refit it")
            warp = render_given_view(texture, depth, views, r)
            projected, delta_w = project(self.nets, self.G, w[i:i + 1], warp.image, sources[i:i + 1], self.hp)
            if self.rotation["mode"] == "gan_refined":
                projected = refine_projection(self.G, w[i:i + 1], delta_w, warp.image, warp.valid, refine_hp,
                                              int(self.rotation["refine_steps"]), float(self.rotation["refine_lr"]),
                                              self.disc_feature, on_step=None if on_refine_step is None else
                                              lambda k, delta, n=i: on_refine_step(n, k, w[n:n + 1] + delta))
            rotated.append(projected)
        return Rotation(source=sources, rotated=torch.stack(rotated).clamp(-1, 1),
                        extras={"latents": w.cpu(), "mode": self.rotation["mode"]})
