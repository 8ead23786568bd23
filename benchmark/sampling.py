"""``bench sample`` and ``bench invert``: StyleGAN2 samples and GAN inversion, producing GAN2Shape's latent files.

A latent file is ``torch.save({"latent": w})`` with w the (1, style_dim) W latent (``method.md`` section 4); it
loads with ``torch.load(weights_only=True)`` and :func:`methods.stylegan2.checkpoints.load_latent`. Images are
rendered with the generator's stored noise (``randomize_noise=False``) and truncation 1, as GAN2Shape renders, so a
saved latent regenerates its saved image. Configs: ``configs/sample.yaml`` and ``configs/invert.yaml``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from benchmark.config import check_creatable, compose
from core.errors import BenchError
from core.paths import asset_path
from methods.stylegan2.checkpoints import load_gan

__all__ = ["save_latent", "sample_command", "invert_command"]


def save_latent(path: Path, w: torch.Tensor, noises: list[torch.Tensor] | None = None) -> None:
    """Write a GAN2Shape latent file: ``{"latent": (1, D) W}`` (plus ``"noise"``: per-layer maps, if given)."""
    obj = {"latent": w.detach().float().cpu().reshape(1, -1).clone()}
    if noises is not None:
        obj["noise"] = [n.detach().float().cpu().clone() for n in noises]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _device_and_seed(cfg: DictConfig) -> torch.device:
    from benchmark.runner import resolve_device, seed_everything

    device = resolve_device(str(cfg.device.type))
    seed_everything(int(cfg.seed))
    return device


def _positive(cfg: DictConfig, *keys: str) -> None:
    for key in keys:
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise BenchError(f"{key} must be a positive integer, got {cfg[key]!r}")


# ------------------------------------------------------------------------------------------------ bench sample
def sample_command(overrides: list[str]) -> int:
    """``bench sample [n=16] [truncation=1.0] [out_dir=...]``: sample_XXXX.png + sample_XXXX.pt + grid.png."""
    from core.images import grid, image_to_uint8

    cfg = compose(overrides, config_name="sample")
    _positive(cfg, "n", "batch_size")
    if not 0 <= float(cfg.truncation) <= 1:
        raise BenchError(f"truncation must be in [0, 1], got {cfg.truncation}")
    out = check_creatable(cfg.out_dir, "out_dir")
    device = _device_and_seed(cfg)
    G, _ = load_gan(str(asset_path(cfg.gan.checkpoint)), device)
    rng = torch.Generator().manual_seed(int(cfg.seed))
    truncation = float(cfg.truncation)
    w_mean = G.mean_latent(int(cfg.truncation_samples)) if truncation < 1 else None
    tiles = []
    with torch.no_grad():
        for start in range(0, cfg.n, cfg.batch_size):
            count = min(cfg.batch_size, cfg.n - start)
            z = torch.randn(count, G.style_dim, generator=rng).to(device)
            w = G.get_latent(z)
            if w_mean is not None:
                w = w_mean + truncation * (w - w_mean)
            images, _ = G(w, input_is_w=True)  # stored noise, as GAN2Shape renders
            for i in range(count):
                name = f"sample_{start + i:04d}"
                tile = image_to_uint8(images[i])
                _save_png(tile, out / f"{name}.png")
                save_latent(out / f"{name}.pt", w[i])
                tiles.append(tile)
    cols = math.ceil(math.sqrt(len(tiles)))
    _save_png(grid([tiles[i:i + cols] for i in range(0, len(tiles), cols)], upscale=1), out / "grid.png")
    print(f"wrote {cfg.n} samples (sample_XXXX.png, sample_XXXX.pt) and grid.png to {out.resolve()}")
    return 0


# ------------------------------------------------------------------------------------------------ bench invert
def _input_images(cfg: DictConfig) -> list[tuple[Path, str]]:
    """(file, output name) pairs: a single image, or every image under a folder (names relative to it)."""
    from benchmark.datasets.folders import IMAGE_SUFFIXES, image_size_of, list_images

    if cfg.input is None or not str(cfg.input).strip():
        raise BenchError("input is empty; pass an image file or a folder of images: bench invert input=<path>")
    src = Path(str(cfg.input))
    if src.is_dir():
        files = [(p, str(p.relative_to(src).with_suffix(""))) for p in list_images(src, "invert input")]
    elif src.is_file():
        if src.suffix.lower() not in IMAGE_SUFFIXES:
            raise BenchError(f"input {src} is not an image file ({', '.join(sorted(IMAGE_SUFFIXES))}); pass an image "
                             f"or a folder of images as input=<path>")
        files = [(src, src.stem)]
    else:
        raise BenchError(f"input {src} does not exist; pass an image file or a folder of images as input=<path>")
    for path, _ in files:
        image_size_of(path)  # fail before any work, naming the first unreadable file
    names = [name for _, name in files]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise BenchError(f"several input images share the name {dupes[0]!r} (different suffixes) and would overwrite "
                         f"each other's outputs; rename or move one of them")
    return files


def invert_command(overrides: list[str]) -> int:
    """``bench invert input=<image or folder> [steps=1000] [out_dir=...]``: project images, save latents, log."""
    from benchmark import tracking
    from benchmark.datasets.folders import read_image
    from benchmark.runner import device_name, plain
    from core.images import grid, image_to_uint8
    from methods.stylegan2.inversion import project

    cfg = compose(overrides, config_name="invert")
    _positive(cfg, "steps", "batch_size", "w_avg_samples", "log_every")
    if cfg.pixel_loss not in ("l1", "mse"):
        raise BenchError(f"pixel_loss must be l1 or mse, got {cfg.pixel_loss!r}")
    files = _input_images(cfg)
    out = check_creatable(cfg.out_dir, "out_dir")
    device = _device_and_seed(cfg)
    G, D = load_gan(str(asset_path(cfg.gan.checkpoint)), device, with_discriminator=float(cfg.feature_weight) != 0)
    if D is None and float(cfg.feature_weight) != 0:
        print(f"note: {cfg.gan.checkpoint} has no discriminator; projecting with the pixel loss only")
    crop = int(cfg.crop) if cfg.crop is not None else None
    options = dict(steps=int(cfg.steps), lr=float(cfg.lr), lr_rampup=float(cfg.lr_rampup),
                   lr_rampdown=float(cfg.lr_rampdown), noise_strength=float(cfg.noise_strength),
                   noise_ramp=float(cfg.noise_ramp), noise_reg=float(cfg.noise_reg),
                   w_avg_samples=int(cfg.w_avg_samples), optimise_noise=bool(cfg.optimise_noise),
                   pixel_loss=str(cfg.pixel_loss), pixel_weight=float(cfg.pixel_weight),
                   feature_weight=float(cfg.feature_weight), ftr_num=int(cfg.ftr_num))
    command = " ".join(["bench invert", *overrides])
    tags = {"command": command, "device": str(device), "device_name": device_name(device),
            "checkpoint": str(cfg.gan.checkpoint), "input": str(cfg.input)}
    params = tracking.flatten(plain(cfg))
    with tracking.start_run(cfg.tracking.uri, str(cfg.tracking.experiment), f"invert-{Path(str(cfg.input)).name}",
                            params, tags) as tracker:
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        rows, errors, tiles = ["name,l1,mse,loss"], [], []
        start = time.time()
        for b, first in enumerate(range(0, len(files), cfg.batch_size)):
            batch = files[first:first + cfg.batch_size]
            target = torch.stack([torch.from_numpy(read_image(p, G.size, crop)).permute(2, 0, 1) for p, _ in batch])
            target = target * 2 - 1

            def on_step(step, info, b=b):
                if step % cfg.log_every == 0 or step == cfg.steps - 1:
                    tracker.log_metrics({f"loss_batch{b}": info["loss"]}, step=step)

            result = project(G, target.to(device), D=D, seed=int(cfg.seed) + b, on_step=on_step, **options)
            for i, (path, name) in enumerate(batch):
                noises = [n[i:i + 1] for n in result.noises] if cfg.optimise_noise else None
                save_latent(out / f"{name}.pt", result.w[i], noises)
                projected = image_to_uint8(result.images[i])
                _save_png(projected, out / f"{name}_projected.png")
                l1, mse, loss = (float(result.l1[i]), float(result.mse[i]), float(result.loss[i]))
                errors.append((l1, mse, loss))
                rows.append(f"{name},{l1:.6f},{mse:.6f},{loss:.6f}")
                print(f"{name}: l1={l1:.4f} mse={mse:.5f} loss={loss:.4f} -> {out / (name + '.pt')}")
                if len(tiles) < cfg.tracking.samples:
                    tiles.append([image_to_uint8(target[i]), projected])
        err = np.asarray(errors)
        metrics = {"recon_l1_mean": err[:, 0].mean(), "recon_mse_mean": err[:, 1].mean(),
                   "loss_mean": err[:, 2].mean(), "n_images": len(files), "invert_time_s": time.time() - start}
        tracker.log_metrics(metrics)
        tracker.log_text("\n".join(rows) + "\n", "errors.csv")
        picture = grid(tiles, upscale=max(1, 128 // G.size))
        tracker.log_image(picture, "target_vs_projection.png")
        _save_png(picture, out / "target_vs_projection.png")
    print(f"inverted {len(files)} image(s): mean l1={metrics['recon_l1_mean']:.4f} "
          f"mse={metrics['recon_mse_mean']:.5f}; latents in {out.resolve()}")
    return 0
