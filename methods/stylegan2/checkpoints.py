"""StyleGAN2 checkpoints: rosinality ``.pt``, NVlabs ``.pkl`` and our ``.safetensors`` + JSON sidecar.

Formats (``anchors.md`` section E, ``method.md`` section 4):

* **rosinality ``.pt``** (``.pt``/``.pth``): a ``torch.save`` dict with ``g_ema`` (required), ``d`` (GAN2Shape
  needs it), optionally ``g``, ``latent_avg``, and for training checkpoints ``args`` (an ``argparse.Namespace``),
  optimiser states and ``ada_aug_p``. Read with ``torch.load(weights_only=True)``, allowing only
  ``argparse.Namespace`` besides tensors and containers. ``g`` is not used.
* **NVlabs stylegan2-ada-pytorch ``.pkl``**: read by :mod:`.nvlabs` without running the pickled code, then renamed
  to rosinality's layout (``G_ema`` -> generator, ``D`` -> discriminator, ``mapping.w_avg`` -> ``latent_avg``).
* **ours ``.safetensors``**: tensors ``g_ema.*``, ``d.*`` and ``latent_avg`` in one safetensors file, with a JSON
  sidecar of the same stem holding the architectures (constructor arguments of :class:`Generator` and
  :class:`Discriminator`) and the source file. Written by :func:`convert_checkpoint`.

Architectures of ``.pt``/``.pkl`` files are inferred from the tensor shapes (size, mapping depth and width,
per-resolution channels, hence the channel multiplier when the widths follow rosinality's table); the networks
are then loaded with ``strict=True``. Problems a user can fix raise :class:`~core.errors.BenchError`.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from core.errors import BenchError
from core.weights import file_sha256

from .model import Discriminator, Generator, stylegan2_channels

__all__ = ["FORMAT", "StyleGAN2Checkpoint", "infer_generator_config", "infer_discriminator_config",
           "read_checkpoint", "convert_checkpoint", "save_networks", "load_gan", "load_generator", "load_discriminator",
           "load_latent"]

FORMAT = "gan2shape-bench.stylegan2"
FORMAT_VERSION = 1
_ROSINALITY, _NVLABS, _OURS = "rosinality-pt", "nvlabs-pkl", FORMAT
_SUFFIXES = {".pt": _ROSINALITY, ".pth": _ROSINALITY, ".pkl": _NVLABS, ".safetensors": _OURS}


@dataclass
class StyleGAN2Checkpoint:
    """Weights in rosinality naming plus the architectures that fit them.

    ``g_config`` / ``d_config`` are constructor keyword arguments of :class:`Generator` / :class:`Discriminator`;
    ``d`` and ``d_config`` are None when the file has no discriminator; ``latent_avg`` is (style_dim,) or None.
    """

    g_ema: dict[str, Tensor]
    g_config: dict
    d: dict[str, Tensor] | None
    d_config: dict | None
    latent_avg: Tensor | None
    source: str
    source_format: str


# ------------------------------------------------------------------------------------------- config inference
def _shape(sd: dict[str, Tensor], key: str, ndim: int, what: str) -> tuple[int, ...]:
    if key not in sd:
        raise BenchError(f"{what}: key '{key}' is missing, so this is not a rosinality StyleGAN2 state_dict. "
                         f"Fix: pass a checkpoint saved by rosinality/stylegan2-pytorch (convert_weight.py, train.py).")
    value = sd[key]
    if not isinstance(value, Tensor) or value.dim() != ndim:
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise BenchError(f"{what}: '{key}' should be a {ndim}-D tensor, got {got}. The file is damaged or not a "
                         f"rosinality StyleGAN2 checkpoint.")
    return tuple(value.shape)


def _multiplier(size: int, channels: dict[int, int]) -> int | None:
    """The rosinality channel multiplier whose table (optionally capped at the widest layer) gives ``channels``."""
    for cm in (2, 1, 4, 8):
        if stylegan2_channels(size, cm) == channels or stylegan2_channels(size, cm, max(channels.values())) == channels:
            return cm
    return None


def _count(sd: dict, pattern: str, start: int) -> int:
    n = start
    while pattern.format(n) in sd:
        n += 1
    return n - start


def infer_generator_config(sd: dict[str, Tensor], what: str = "g_ema", lr_mlp: float = 0.01) -> dict:
    """Generator constructor arguments that fit the tensors of a rosinality generator ``state_dict``.

    size = 2^(number of ``to_rgbs`` + 2); n_mlp = number of ``style.N``; style_dim from ``style.1.weight``;
    channels from ``input.input`` (4x4) and ``to_rgbs.j.conv.weight`` (resolution 2^(j+3)).
    """
    style_dim = _shape(sd, "style.1.weight", 2, what)[0]
    c4 = _shape(sd, "input.input", 4, what)[1]
    n_rgb = _count(sd, "to_rgbs.{}.conv.weight", 0)
    if n_rgb == 0:
        raise BenchError(f"{what}: no 'to_rgbs.0.conv.weight'; generators below 8x8 or of another layout are not "
                         f"supported. Fix: pass a rosinality StyleGAN2 generator.")
    size = 2 ** (n_rgb + 2)
    channels = {4: c4, **{2 ** (j + 3): _shape(sd, f"to_rgbs.{j}.conv.weight", 5, what)[2] for j in range(n_rgb)}}
    return {"size": size, "style_dim": style_dim, "n_mlp": _count(sd, "style.{}.weight", 1), "lr_mlp": lr_mlp,
            "channel_multiplier": _multiplier(size, channels), "blur_kernel": [1, 3, 3, 1],
            "channels": {str(r): c for r, c in channels.items()}}


def infer_discriminator_config(sd: dict[str, Tensor], what: str = "d", stddev_group: int | None = 4) -> dict:
    """Discriminator constructor arguments that fit the tensors of a rosinality discriminator ``state_dict``.

    size = 2^(number of ResBlocks ``convs.k`` + 2); channels from ``convs.0`` and each block's ``conv2``;
    ``stddev_feat`` = input channels of ``final_conv`` minus the 4x4 width. The group size is not stored in
    rosinality files (4 there).
    """
    c_top = _shape(sd, "convs.0.0.weight", 4, what)[0]
    n_blocks = _count(sd, "convs.{}.conv1.0.weight", 1)
    if n_blocks == 0:
        raise BenchError(f"{what}: no 'convs.1.conv1.0.weight'; not a rosinality StyleGAN2 discriminator. Fix: pass "
                         f"a checkpoint with a rosinality 'd' state_dict.")
    size = 2 ** (n_blocks + 2)
    channels = {size: c_top, **{size >> k: _shape(sd, f"convs.{k}.conv2.1.weight", 4, what)[0]
                                for k in range(1, n_blocks + 1)}}
    final = _shape(sd, "final_conv.0.weight", 4, what)
    return {"size": size, "channel_multiplier": _multiplier(size, channels), "blur_kernel": [1, 3, 3, 1],
            "channels": {str(r): channels[r] for r in sorted(channels)}, "stddev_group": stddev_group,
            "stddev_feat": final[1] - channels[4]}


# --------------------------------------------------------------------------------------- building and loading
def _describe(config: dict) -> str:
    keys = ("size", "style_dim", "n_mlp", "channel_multiplier")
    return ", ".join(f"{k}={config[k]}" for k in keys if k in config) + f", channels={config['channels']}"


def _build(cls: type[nn.Module], config: dict, sd: dict[str, Tensor], what: str,
           device: str | torch.device | None) -> nn.Module:
    """Check every key and shape against ``cls(**config)`` built on the meta device, then load strictly.

    With ``device=None`` only the check runs and the meta module is returned.
    """
    try:
        with torch.device("meta"):
            model = cls(**config)
    except (TypeError, ValueError) as e:
        raise BenchError(f"{what}: the architecture ({config}) is invalid: {e}") from None
    expected = model.state_dict()
    wrong = [(k, tuple(v.shape), tuple(sd[k].shape)) for k, v in expected.items()
             if isinstance(sd.get(k), Tensor) and sd[k].shape != v.shape]
    if wrong:
        key, exp, got = wrong[0]
        more = f" ({len(wrong) - 1} more mismatching keys)" if len(wrong) > 1 else ""
        raise BenchError(f"{what}: tensor '{key}' has shape {got}, but the architecture inferred from the file "
                         f"({_describe(config)}) expects {exp}{more}. The file is damaged or mixes networks of "
                         f"different sizes. Fix: re-export the checkpoint from its training code.")
    missing = [k for k in expected if not isinstance(sd.get(k), Tensor)]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        raise BenchError(f"{what}: state_dict keys do not match the rosinality layout for ({_describe(config)}): "
                         f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
                         f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}. Fix: pass an unmodified "
                         f"rosinality/stylegan2-pytorch checkpoint.")
    if device is None:
        return model
    model.load_state_dict({k: v.detach().float() for k, v in sd.items()}, strict=True, assign=True)
    return model.to(device).eval()


def _validate(ckpt: StyleGAN2Checkpoint) -> StyleGAN2Checkpoint:
    _build(Generator, ckpt.g_config, ckpt.g_ema, f"{ckpt.source}: g_ema", None)
    if ckpt.d is not None:
        _build(Discriminator, ckpt.d_config, ckpt.d, f"{ckpt.source}: d", None)
    if ckpt.latent_avg is not None:
        dim = ckpt.g_config["style_dim"]
        if ckpt.latent_avg.numel() != dim:
            raise BenchError(f"{ckpt.source}: latent_avg has shape {tuple(ckpt.latent_avg.shape)}, expected ({dim},).")
        ckpt.latent_avg = ckpt.latent_avg.detach().float().reshape(dim)
    return ckpt


# ------------------------------------------------------------------------------------------------- readers
def _tensor_dict(value, what: str) -> dict[str, Tensor]:
    if not isinstance(value, dict) or not all(isinstance(v, Tensor) for v in value.values()):
        raise BenchError(f"{what} is not a state_dict of tensors (got {type(value).__name__}). Fix: pass a "
                         f"rosinality/stylegan2-pytorch checkpoint.")
    return dict(value)


def _torch_load(path: Path) -> object:
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals([argparse.Namespace]):
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if not found:  # a broken file rather than a refused object
            detail = [ln.strip() for ln in str(e).splitlines() if ln.strip().startswith("Unsupported")] or ["?"]
            raise BenchError(f"{path}: not a readable PyTorch checkpoint ({detail[0]}). Fix: pass a rosinality .pt, "
                             f"an NVlabs .pkl or a converted .safetensors file.") from None
        raise BenchError(f"{path}: refused by PyTorch's safe loader (weights_only=True): the file contains a "
                         f"'{found.group(1)}' object, which is not allowed (only tensors, containers and "
                         f"argparse.Namespace are). Fix: in an "
                         f"environment you trust, keep only the tensors: ckpt = torch.load(path, weights_only=False); "
                         f"torch.save({{k: ckpt[k] for k in ('g_ema', 'd', 'latent_avg') if k in ckpt}}, "
                         f"'clean.pt').") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise BenchError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {str(e)[:200]}). Fix: pass "
                         f"a rosinality .pt, an NVlabs .pkl or a converted .safetensors file.") from None


def _read_rosinality(path: Path) -> StyleGAN2Checkpoint:
    ckpt = _torch_load(path)
    if not isinstance(ckpt, dict) or "g_ema" not in ckpt:
        found = sorted(map(str, ckpt))[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        hint = (" It looks like a bare generator state_dict: wrap it, torch.save({'g_ema': sd}, path)."
                if isinstance(ckpt, dict) and "input.input" in ckpt else "")
        raise BenchError(f"{path}: no 'g_ema' entry (found {found}); a rosinality checkpoint stores the EMA generator "
                         f"under 'g_ema'.{hint}")
    g_ema = _tensor_dict(ckpt["g_ema"], f"{path}: g_ema")
    d = _tensor_dict(ckpt["d"], f"{path}: d") if ckpt.get("d") is not None else None
    latent_avg = ckpt.get("latent_avg")
    if latent_avg is not None and not isinstance(latent_avg, Tensor):
        raise BenchError(f"{path}: latent_avg is a {type(latent_avg).__name__}, expected a tensor.")
    return StyleGAN2Checkpoint(g_ema, infer_generator_config(g_ema, f"{path}: g_ema"), d,
                               infer_discriminator_config(d, f"{path}: d") if d is not None else None,
                               latent_avg, str(path), _ROSINALITY)


def _read_nvlabs(path: Path) -> StyleGAN2Checkpoint:
    from .nvlabs import read_nvlabs_pickle

    nv = read_nvlabs_pickle(path)
    g_config = infer_generator_config(nv["g_ema"], f"{path}: G_ema", lr_mlp=nv["lr_mlp"])
    d_config = None
    if nv["d"] is not None:
        d_config = infer_discriminator_config(nv["d"], f"{path}: D", stddev_group=nv["stddev_group"])
        if d_config["stddev_feat"] != nv["stddev_feat"]:
            raise BenchError(f"{path}: D's minibatch-std layer has {nv['stddev_feat']} channels but b4.conv expects "
                             f"{d_config['stddev_feat']}; the pickle is inconsistent.")
    return StyleGAN2Checkpoint(nv["g_ema"], g_config, nv["d"], d_config, nv["latent_avg"], str(path), _NVLABS)


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _read_ours(path: Path) -> StyleGAN2Checkpoint:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    side = _sidecar(path)
    if not side.is_file():
        raise BenchError(f"{path}: its JSON sidecar {side.name} is missing; it holds the architecture. Fix: keep the "
                         f"two files together, or re-run the conversion (bench convert) from the original checkpoint.")
    try:
        meta = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BenchError(f"{side}: unreadable JSON sidecar ({e}). Fix: re-run the conversion.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("generator"), dict):
        raise BenchError(f"{side}: not a {FORMAT} sidecar. Fix: re-run the conversion (bench convert).")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise BenchError(f"{path}: unreadable safetensors file ({e}). Fix: re-run the conversion.") from None
    g = {k[len("g_ema."):]: v for k, v in tensors.items() if k.startswith("g_ema.")}
    d = {k[len("d."):]: v for k, v in tensors.items() if k.startswith("d.")} or None
    d_config = meta.get("discriminator")
    if (d is None) != (d_config is None):
        raise BenchError(f"{path}: the discriminator tensors and the sidecar disagree. Fix: re-run the conversion.")
    return StyleGAN2Checkpoint(g, meta["generator"], d, d_config, tensors.get("latent_avg"), str(path), _OURS)


def read_checkpoint(path: str | Path) -> StyleGAN2Checkpoint:
    """Read any supported file (by suffix: ``.pt``/``.pth``, ``.pkl``, ``.safetensors``) and check its shapes."""
    path = Path(path)
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise BenchError(f"{path}: unknown checkpoint type '{path.suffix}'. Fix: pass a rosinality .pt/.pth, an NVlabs "
                         f"stylegan2-ada .pkl or a converted .safetensors file.")
    if not path.is_file():
        raise BenchError(f"checkpoint file not found: {path}. Fix: check the path or download the weights first.")
    reader = {_ROSINALITY: _read_rosinality, _NVLABS: _read_nvlabs, _OURS: _read_ours}[kind]
    return _validate(reader(path))


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """The EMA generator (``g_ema``) of any supported checkpoint, loaded strictly, in eval mode on ``device``."""
    ckpt = read_checkpoint(path)
    return _build(Generator, ckpt.g_config, ckpt.g_ema, f"{ckpt.source}: g_ema", device)


MISSING_GAN_HELP = ("Fix: train one with `bench train model=stylegan2_32 dataset=synface_proc`, convert a "
                    "rosinality .pt or NVlabs .pkl with `bench convert SRC DST.safetensors`, or point "
                    "gan.checkpoint=<path> at one.")


def load_gan(path: str | Path, device: str | torch.device, with_discriminator: bool = False):
    """(generator, discriminator or None) of one checkpoint, read once, frozen and in eval mode on ``device``."""
    if not Path(path).is_file():
        raise BenchError(f"StyleGAN2 checkpoint not found: {path}. {MISSING_GAN_HELP}")
    ckpt = read_checkpoint(path)
    g = _build(Generator, ckpt.g_config, ckpt.g_ema, f"{ckpt.source}: g_ema", device).requires_grad_(False)
    if not with_discriminator or ckpt.d is None:
        return g, None
    return g, _build(Discriminator, ckpt.d_config, ckpt.d, f"{ckpt.source}: d", device).requires_grad_(False)


def load_discriminator(path: str | Path, device: str | torch.device = "cpu") -> Discriminator:
    """The discriminator (``d`` / NVlabs ``D``) of any supported checkpoint, loaded strictly, in eval mode."""
    ckpt = read_checkpoint(path)
    if ckpt.d is None:
        raise BenchError(f"{ckpt.source}: the checkpoint has no discriminator ('d'), which GAN2Shape's Step 2 needs "
                         f"(discriminator-feature loss). Fix: use a rosinality checkpoint saved with the "
                         f"discriminator (convert_weight.py --disc, or a train.py checkpoint) or the NVlabs .pkl, "
                         f"which includes D.")
    return _build(Discriminator, ckpt.d_config, ckpt.d, f"{ckpt.source}: d", device)


def convert_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Convert ``src`` (.pt, .pkl or .safetensors) to ``dst`` (.safetensors) plus the JSON sidecar ``dst.json``.

    Returns the path of the weights file. A missing discriminator is allowed (recorded as null, with a warning).
    """
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise BenchError(f"output {dst} must end in .safetensors (the architecture goes to {dst.stem}.json beside it).")
    if dst.resolve() == src.resolve():
        raise BenchError(f"output {dst} is the input file. Fix: choose another output path.")

    ckpt = read_checkpoint(src)
    tensors = {f"g_ema.{k}": v for k, v in ckpt.g_ema.items()}
    if ckpt.d is not None:
        tensors.update({f"d.{k}": v for k, v in ckpt.d.items()})
    else:
        warnings.warn(f"{src} has no discriminator; GAN2Shape's Step 2 cannot run from the converted file.",
                      stacklevel=2)
    if ckpt.latent_avg is not None:
        tensors["latent_avg"] = ckpt.latent_avg
    tensors = {k: v.detach().float().contiguous().clone() for k, v in tensors.items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "generator": ckpt.g_config,
            "discriminator": ckpt.d_config, "has_latent_avg": ckpt.latent_avg is not None,
            "source": {"file": src.name, "path": str(src.resolve()), "format": ckpt.source_format,
                       "sha256": file_sha256(src)}}
    return _write_ours(dst, tensors, meta)


def _write_ours(dst: Path, tensors: dict[str, Tensor], meta: dict) -> Path:
    """Write our format: ``dst`` (.safetensors) and its JSON sidecar, each atomically (tmp file + os.replace)."""
    import os

    from safetensors.torch import save_file

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    os.replace(tmp, dst)
    side_tmp = _sidecar(dst).with_name(_sidecar(dst).name + ".tmp")
    side_tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(side_tmp, _sidecar(dst))
    return dst


def save_networks(dst: str | Path, generator: Generator, discriminator: Discriminator | None, card: dict,
                  latent_avg: Tensor | None = None) -> Path:
    """Export trained networks in our format: ``g_ema.*`` / ``d.*`` / ``latent_avg`` tensors in ``dst``
    (.safetensors) and a sidecar with the architectures plus ``card`` (the model card) under ``"training"``."""
    dst = Path(dst)
    if dst.suffix != ".safetensors":
        raise BenchError(f"output {dst} must end in .safetensors (the architecture goes to {dst.stem}.json beside it).")
    tensors = {f"g_ema.{k}": v for k, v in generator.state_dict().items()}
    if discriminator is not None:
        tensors.update({f"d.{k}": v for k, v in discriminator.state_dict().items()})
    if latent_avg is not None:
        tensors["latent_avg"] = latent_avg.reshape(-1)
    tensors = {k: v.detach().float().cpu().contiguous().clone() for k, v in tensors.items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "generator": generator.config(),
            "discriminator": discriminator.config() if discriminator is not None else None,
            "has_latent_avg": latent_avg is not None, "source": {"format": "trained"}, "training": card}
    return _write_ours(dst, tensors, meta)


def load_latent(path: str | Path, device: str | torch.device = "cpu", style_dim: int | None = 512) -> Tensor:
    """A W latent (1, style_dim) from a ``.pt`` holding a (D,) or (1, D) tensor, or a dict with key ``latent``.

    A rosinality projector file (``{image_name: {"img", "latent", "noise"}}``) with one image also works.
    """
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"latent file not found: {path}. Fix: check the path.")
    obj = _torch_load(path)
    if isinstance(obj, dict) and "latent" not in obj and len(obj) == 1 and isinstance(next(iter(obj.values())), dict):
        obj = next(iter(obj.values()))  # projector output for a single image
    if isinstance(obj, dict):
        if "latent" not in obj:
            raise BenchError(f"{path}: a latent dict needs the key 'latent' (found {sorted(map(str, obj))[:10]}).")
        obj = obj["latent"]
    if not isinstance(obj, Tensor) or not (obj.dim() == 1 or (obj.dim() == 2 and obj.shape[0] == 1)):
        got = tuple(obj.shape) if isinstance(obj, Tensor) else type(obj).__name__
        raise BenchError(f"{path}: expected a W latent of shape (D,) or (1, D), got {got}. W+ latents (1, n, D) are "
                         f"not used by GAN2Shape; save a single W.")
    latent = obj.detach().float().reshape(1, -1)
    if style_dim is not None and latent.shape[1] != style_dim:
        raise BenchError(f"{path}: latent has {latent.shape[1]} entries, but the generator's style_dim is {style_dim}.")
    return latent.to(device)
