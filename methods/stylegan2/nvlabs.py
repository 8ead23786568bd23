"""Read NVlabs stylegan2-ada-pytorch network pickles without importing or running their code.

The official ``.pkl`` files (``anchors.md`` section E) are a pickled dict with ``G``, ``D``, ``G_ema``,
``augment_pipe`` and ``training_set_kwargs``. Every network object inside is a ``torch_utils.persistence`` object:
it pickles as a call ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` whose ``meta`` dict holds
``type``, ``version``, ``module_src`` (the full source code of the defining module, which the NVlabs loader
``exec``-utes), ``class_name`` and ``state`` (the module ``__dict__``: ``_parameters``, ``_buffers``, ``_modules``,
``_init_args``, ``_init_kwargs``, plain attributes). Keyword arguments are ``dnnlib.util.EasyDict`` objects.

:class:`RestrictedUnpickler` never imports a module named in the pickle. It maps the persistence call to an inert
:class:`PersistentRecord` that only records the class name, init arguments and state (the tensors), maps ``EasyDict``
to a plain dict subclass, and allows only tensor and storage rebuilding (storage bytes go through
``torch.load(weights_only=True)``), ``collections.OrderedDict``, numeric numpy scalars and torch dtypes. Any other
global (``os.system``, ``builtins.eval``, a TF-era ``dnnlib.tflib`` network, ...) is refused with a
:class:`~core.errors.BenchError`.

The converters then rename the tensors to rosinality's layout (facts from the public converters, e.g. dvschultz
``export_weights.py``): ``mapping.fcN`` -> ``style.{N+1}``; ``synthesis.b4.const`` -> ``input.input``;
``synthesis.b4.conv1/torgb`` -> ``conv1``/``to_rgb1``; ``synthesis.bR.conv0/conv1/torgb`` -> ``convs.{2i}``,
``convs.{2i+1}``, ``to_rgbs.{i}`` (i = log2 R - 3); ``affine`` -> ``conv.modulation``; ``noise_strength`` ->
``noise.weight``; ``noise_const`` -> ``noises.noise_k``; resample filters ×4 for upsampling blurs;
``mapping.w_avg`` -> ``latent_avg``. The discriminator maps ``b{S}.fromrgb`` -> ``convs.0``,
``bR.conv0/conv1/skip`` -> ``convs.k.conv1/conv2/skip`` and ``b4.conv/fc/out`` -> ``final_conv``/``final_linear``.
The gains match rosinality's equalised-lr scales, so weights copy unchanged. NVlabs runs the top resolutions in
float16 and clamps activations at ±256 (``conv_clamp``); the converted networks run in float32 without clamping.
"""

from __future__ import annotations

import io
import math
import pickle
import re
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from core.errors import BenchError

__all__ = ["PersistentRecord", "EasyDictRecord", "RestrictedUnpickler", "load_network_pickle",
           "generator_to_rosinality", "discriminator_to_rosinality", "read_nvlabs_pickle"]

_FIX = ("Fix: pass an official NVlabs stylegan2-ada-pytorch network pickle (with G_ema and D), or convert the file "
        "to a rosinality .pt (keys g_ema, d) in an environment you trust.")


class PersistentRecord:
    """Inert stand-in for a ``torch_utils.persistence`` object: class name, init arguments and state only."""

    def __init__(self, class_name: str, init_args: tuple, init_kwargs: dict, state: dict):
        self.class_name, self.init_args, self.init_kwargs, self.state = class_name, init_args, init_kwargs, state

    def __repr__(self) -> str:
        return f"PersistentRecord({self.class_name!r})"

    def child(self, name: str) -> PersistentRecord | None:
        """The sub-module ``name`` from ``state['_modules']``, or None."""
        child = (self.state.get("_modules") or {}).get(name)
        return child if isinstance(child, PersistentRecord) else None

    def tensors(self, prefix: str = "") -> dict[str, Tensor]:
        """All parameters and buffers of this object and its sub-modules, keyed like a ``state_dict``."""
        out: dict[str, Tensor] = {}
        for group in ("_parameters", "_buffers"):
            for name, value in (self.state.get(group) or {}).items():
                if isinstance(value, Tensor):
                    out[prefix + name] = value
        for name, child in (self.state.get("_modules") or {}).items():
            if isinstance(child, PersistentRecord):
                out.update(child.tensors(f"{prefix}{name}."))
        return out


class EasyDictRecord(dict):
    """Plain dict standing in for ``dnnlib.util.EasyDict`` (attribute access is not needed here)."""


def _reconstruct_record(meta: Any) -> PersistentRecord:
    """Replacement for ``_reconstruct_persistent_obj``: keep the data, never ``exec`` ``meta['module_src']``."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state", {}), dict):
        raise pickle.UnpicklingError("persistence record is not a class record with a dict state")
    state = dict(meta.get("state") or {})
    init_args = meta.get("init_args", state.get("_init_args", ()))
    init_kwargs = meta.get("init_kwargs", state.get("_init_kwargs", {}))
    return PersistentRecord(str(meta.get("class_name", "?")), tuple(init_args or ()), dict(init_kwargs or {}), state)


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Checked ``torch._utils._rebuild_tensor_v2``: a real storage and integer geometry, no hooks."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError(f"tensor storage has type {type(storage).__name__}")
    if not all(isinstance(v, int) for v in (storage_offset, *size, *stride)):
        raise pickle.UnpicklingError("tensor geometry is not integer")
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, tuple(size), tuple(stride), False, OrderedDict())


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """Parameters come back as plain tensors."""
    if not isinstance(data, Tensor):
        raise pickle.UnpicklingError("parameter data is not a tensor")
    return data


def _storage_from_bytes(data):
    """``torch.storage._load_from_bytes`` through the weights-only loader (the original uses weights_only=False)."""
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("storage payload is not bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _numpy_scalar(dtype, data=None):
    """``numpy.core.multiarray.scalar`` for numeric dtypes only; returns a Python number."""
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or not isinstance(data, bytes):
        raise pickle.UnpicklingError("only numeric numpy scalars are accepted")
    return np.frombuffer(data, dtype=dtype, count=1)[0].item()


def _allowed(module: str, name: str) -> Any:
    """The object a pickle may reference as ``module.name``, or None when refused."""
    table = {
        ("collections", "OrderedDict"): OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_record,
        ("dnnlib.util", "EasyDict"): EasyDictRecord,
        ("dnnlib", "EasyDict"): EasyDictRecord,
        ("numpy.core.multiarray", "scalar"): _numpy_scalar,
        ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    }
    if (module, name) in table:
        return table[(module, name)]
    if (module, name) == ("numpy", "dtype"):
        import numpy as np

        return np.dtype
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` resolves only the allow-list above and imports nothing."""

    def __init__(self, file, source: str = "<pickle>"):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed(module, name)
        if obj is not None:
            return obj
        hint = (" This looks like a TensorFlow-era StyleGAN2 pickle: convert it with NVlabs legacy.py first."
                if module.startswith("dnnlib.tflib") else "")
        raise BenchError(f"{self.source}: refused to load '{module}.{name}' from the pickle. This loader never imports "
                         f"or runs code named in a pickle; it accepts only StyleGAN2-ADA network objects, tensors and "
                         f"plain containers.{hint} {_FIX}")

    def persistent_load(self, pid: Any) -> Any:
        raise BenchError(f"{self.source}: the pickle uses persistent ids (a torch.save file? rename it to .pt). {_FIX}")


def load_network_pickle(path: str | Path) -> dict:
    """Unpickle an NVlabs network ``.pkl`` into a dict of :class:`PersistentRecord` (keys ``G_ema``, ``D``, ...)."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"checkpoint file not found: {path}. Fix: check the path.")
    try:
        with path.open("rb") as f:
            data = RestrictedUnpickler(f, str(path)).load()
    except BenchError:
        raise
    except Exception as e:  # malformed pickles raise many types
        raise BenchError(f"{path}: cannot read the pickle ({type(e).__name__}: {e}). {_FIX}") from None
    if not isinstance(data, dict) or not isinstance(data.get("G_ema"), PersistentRecord):
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise BenchError(f"{path}: not a stylegan2-ada network pickle: no 'G_ema' network (found {keys}). {_FIX}")
    return data


def _get(t: dict[str, Tensor], key: str, src: str) -> Tensor:
    if key not in t:
        raise BenchError(f"{src}: tensor '{key}' is missing; only unconditional StyleGAN2-ADA networks with the 'skip' "
                         f"generator and 'resnet' discriminator architectures are supported. {_FIX}")
    return t[key].detach().float()


def _layer(out: dict, t: dict, ros: str, nv: str, noise_idx: int, up: bool, src: str) -> None:
    """One SynthesisLayer ``nv`` -> StyledConv ``ros`` plus its noise buffer ``noises.noise_{noise_idx}``."""
    out[f"{ros}.conv.weight"] = _get(t, f"{nv}.weight", src).unsqueeze(0)
    out[f"{ros}.conv.modulation.weight"] = _get(t, f"{nv}.affine.weight", src)
    out[f"{ros}.conv.modulation.bias"] = _get(t, f"{nv}.affine.bias", src)
    out[f"{ros}.activate.bias"] = _get(t, f"{nv}.bias", src)
    if up:
        out[f"{ros}.conv.blur.kernel"] = _get(t, f"{nv}.resample_filter", src) * 4
    res = 2 ** ((noise_idx + 5) // 2)
    if f"{nv}.noise_const" in t:  # use_noise=False layers get zero noise
        out[f"{ros}.noise.weight"] = _get(t, f"{nv}.noise_strength", src).reshape(1)
        out[f"noises.noise_{noise_idx}"] = _get(t, f"{nv}.noise_const", src)[None, None]
    else:
        out[f"{ros}.noise.weight"], out[f"noises.noise_{noise_idx}"] = torch.zeros(1), torch.zeros(1, 1, res, res)


def _torgb(out: dict, t: dict, ros: str, nv: str, src: str, up_filter: Tensor | None) -> None:
    """ToRGBLayer ``nv`` -> ToRGB ``ros``; ``up_filter`` is the block's resample filter (skip upsampling)."""
    out[f"{ros}.conv.weight"] = _get(t, f"{nv}.weight", src).unsqueeze(0)
    out[f"{ros}.conv.modulation.weight"] = _get(t, f"{nv}.affine.weight", src)
    out[f"{ros}.conv.modulation.bias"] = _get(t, f"{nv}.affine.bias", src)
    out[f"{ros}.bias"] = _get(t, f"{nv}.bias", src).reshape(1, -1, 1, 1)
    if up_filter is not None:
        out[f"{ros}.upsample.kernel"] = up_filter * 4


def _number(record: PersistentRecord | None, attr: str, default):
    value = record.state.get(attr, default) if record is not None else default
    return value if isinstance(value, (int, float)) or value is None else default


def generator_to_rosinality(g: PersistentRecord, src: str = "G_ema") -> tuple[dict[str, Tensor], Tensor | None, float]:
    """NVlabs ``Generator`` record -> (rosinality state_dict, ``latent_avg`` (D,) or None, mapping lr multiplier)."""
    t = g.tensors()
    if "mapping.embed.weight" in t:
        raise BenchError(f"{src}: conditional generators (c_dim > 0) are not supported. {_FIX}")
    if "synthesis.b4.const" not in t:
        raise BenchError(f"{src}: no 'synthesis.b4.const'; this is not a StyleGAN2 generator (StyleGAN3 pickles are "
                         f"not supported). {_FIX}")
    out: dict[str, Tensor] = {}
    n_mlp = 0
    while f"mapping.fc{n_mlp}.weight" in t:
        out[f"style.{n_mlp + 1}.weight"] = _get(t, f"mapping.fc{n_mlp}.weight", src)
        out[f"style.{n_mlp + 1}.bias"] = _get(t, f"mapping.fc{n_mlp}.bias", src)
        n_mlp += 1
    res = sorted(int(m.group(1)) for k in t if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k)))
    if res != [2**i for i in range(2, len(res) + 2)] or len(res) < 2:
        raise BenchError(f"{src}: unexpected synthesis block resolutions {res}. {_FIX}")
    out["input.input"] = _get(t, "synthesis.b4.const", src).unsqueeze(0)
    _layer(out, t, "conv1", "synthesis.b4.conv1", 0, False, src)
    _torgb(out, t, "to_rgb1", "synthesis.b4.torgb", src, None)
    for i, r in enumerate(res[1:]):
        nv = f"synthesis.b{r}"
        if f"{nv}.skip.weight" in t or f"{nv}.torgb.weight" not in t:
            raise BenchError(f"{src}: block b{r} is not of the 'skip' generator architecture. {_FIX}")
        _layer(out, t, f"convs.{2 * i}", f"{nv}.conv0", 2 * i + 1, True, src)
        _layer(out, t, f"convs.{2 * i + 1}", f"{nv}.conv1", 2 * i + 2, False, src)
        _torgb(out, t, f"to_rgbs.{i}", f"{nv}.torgb", src, _get(t, f"{nv}.resample_filter", src))
    latent_avg = t["mapping.w_avg"].detach().float() if "mapping.w_avg" in t else None
    mapping = g.child("mapping")
    fc0 = mapping.child("fc0") if mapping is not None else None
    if fc0 is not None and fc0.state.get("activation", "lrelu") != "lrelu":
        raise BenchError(f"{src}: mapping activation {fc0.state.get('activation')!r} is not supported (lrelu only).")
    lr_mlp = float(_number(fc0, "bias_gain", 0.01))
    return out, latent_avg, lr_mlp


def discriminator_to_rosinality(d: PersistentRecord, src: str = "D") -> tuple[dict[str, Tensor], int | None, int]:
    """NVlabs ``Discriminator`` record -> (rosinality state_dict, minibatch-std group size, its channel count)."""
    t = d.tensors()
    if any(k.startswith(("mapping.", "b4.cmap")) for k in t) or t.get("b4.out.weight", torch.zeros(1, 1)).shape[0] != 1:
        raise BenchError(f"{src}: conditional discriminators (c_dim > 0) are not supported. {_FIX}")
    res = sorted((int(m.group(1)) for k in t if (m := re.fullmatch(r"b(\d+)\.conv0\.weight", k))), reverse=True)
    if not res or res != [res[0] // 2**i for i in range(len(res))] or res[-1] != 8:
        raise BenchError(f"{src}: unexpected discriminator block resolutions {res}. {_FIX}")
    if any(f"b{r}.fromrgb.weight" in t for r in res[1:]) or "b4.fromrgb.weight" in t:
        raise BenchError(f"{src}: the 'skip' discriminator architecture is not supported (resnet only). {_FIX}")
    out = {"convs.0.0.weight": _get(t, f"b{res[0]}.fromrgb.weight", src),
           "convs.0.1.bias": _get(t, f"b{res[0]}.fromrgb.bias", src)}
    for k, r in enumerate(res, start=1):
        nv, ros = f"b{r}", f"convs.{k}"
        out[f"{ros}.conv1.0.weight"] = _get(t, f"{nv}.conv0.weight", src)
        out[f"{ros}.conv1.1.bias"] = _get(t, f"{nv}.conv0.bias", src)
        out[f"{ros}.conv2.0.kernel"] = _get(t, f"{nv}.conv1.resample_filter", src)
        out[f"{ros}.conv2.1.weight"] = _get(t, f"{nv}.conv1.weight", src)
        out[f"{ros}.conv2.2.bias"] = _get(t, f"{nv}.conv1.bias", src)
        out[f"{ros}.skip.0.kernel"] = _get(t, f"{nv}.skip.resample_filter", src)
        out[f"{ros}.skip.1.weight"] = _get(t, f"{nv}.skip.weight", src)
    for ros, nv in (("final_conv.0.weight", "b4.conv.weight"), ("final_conv.1.bias", "b4.conv.bias"),
                    ("final_linear.0.weight", "b4.fc.weight"), ("final_linear.0.bias", "b4.fc.bias"),
                    ("final_linear.1.weight", "b4.out.weight"), ("final_linear.1.bias", "b4.out.bias")):
        out[ros] = _get(t, nv, src)
    epilogue = d.child("b4")
    mbstd = epilogue.child("mbstd") if epilogue is not None else None
    group = _number(mbstd, "group_size", 4) if mbstd is not None else 4
    feat = int(_number(mbstd, "num_channels", 1)) if mbstd is not None else 0
    return out, (None if group is None else int(group)), feat


def read_nvlabs_pickle(path: str | Path) -> dict[str, Any]:
    """Load and convert: ``{"g_ema", "latent_avg", "lr_mlp", "d" (or None), "stddev_group", "stddev_feat"}``."""
    data = load_network_pickle(path)
    g_ema, latent_avg, lr_mlp = generator_to_rosinality(data["G_ema"], f"{path}: G_ema")
    result: dict[str, Any] = {"g_ema": g_ema, "latent_avg": latent_avg, "lr_mlp": lr_mlp, "d": None,
                              "stddev_group": 4, "stddev_feat": 1}
    if isinstance(data.get("D"), PersistentRecord):
        d, group, feat = discriminator_to_rosinality(data["D"], f"{path}: D")
        result.update(d=d, stddev_group=group, stddev_feat=feat)
    if not math.isfinite(lr_mlp) or lr_mlp <= 0:
        raise BenchError(f"{path}: mapping lr multiplier {lr_mlp} is invalid. {_FIX}")
    return result
