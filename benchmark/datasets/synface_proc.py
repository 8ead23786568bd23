"""``synface_proc``: procedural 3D faces with ground truth, the embedded benchmark dataset.

Heads are signed distance functions (``sdf_faces``) with per-identity shape and albedo; each image draws a view, a
light and a background and is rendered by a vectorised sphere tracer with the method's camera (fov 10 degrees).

On disk (``root``)::

    meta.json                    {"format_version", "config": {...}, "splits": {"train": {...}, "val": {...},
                                  "test": {...}},
                                  "identities": {...}, "checksums": {"test/shard_00000.npz": <sha256>, ...},
                                  "images_per_second", ...}
    train/shard_00000.npz ...    uncompressed npz, ``shard_size`` images each (the last one may be shorter)
    val/shard_00000.npz ...      validation split (model selection, early stopping, sweeps)
    test/shard_00000.npz ...

Each shard holds ``image`` uint8 (n, S, S, 3); ``depth`` float32 (n, S, S), the z-coordinate (depth along the
optical axis) of the first surface hit through the pixel centre, exactly ``FAR_DEPTH`` = 1.1 on background and
< 1.1 on the head (so ``mask_gt = depth < depth.max()`` as in the evaluation); ``mask`` bool (n, S, S);
``head_mask`` bool (n, S, S), the foreground without the neck (the oracle parser mask);
``identity`` int64 (n,); ``view`` float32 (n, 3) = (yaw, pitch, roll) in degrees; ``light`` float32 (n, 4) =
(k_a, k_d, dx, dy); ``index`` int64 (n,), the image's index in its split.

Conventions (those of GAN2Shape, ``method.md`` section 2):

* view: the camera-frame head is ``P = R (P_canonical - c) + c`` with ``c = (0, 0, 1)`` and
  ``R = Rz(roll) Ry(yaw) Rx(pitch)`` (standard right-handed matrices, x right, y down, z forward); the canonical
  head faces the camera. The method's 6-d view in its normalised units is
  ``(pitch / 60, yaw / 60, roll / 60, 0, 0, 0)``.
* light, **in the camera frame**: shading ``k_a + k_d max(0, n . l)`` with ``l = (dx, dy, 1) / |(dx, dy, 1)|`` and
  ``n`` the normal of the *posed* head in the method's convention (pointing away from the camera, as
  ``depth_to_normals`` of the stored depth gives it), so ``dx > 0`` lights surfaces facing image-left and ``dy > 0``
  surfaces facing up. The colour is ``albedo * shading`` (linear, no specular, clipped to [0, 1]).
  The methods shade the *canonical* depth before warping it to the view, so their light lives in the canonical
  frame: the same lighting is ``R^T l`` there. :func:`method_light` converts a stored light into the methods' 4-d
  light vector ``(2 k_a - 1, 2 k_d - 1, l'_x / l'_z, l'_y / l'_z)`` with ``l' = R^T l``; with it, the methods'
  renderer reproduces an image from its true canonical depth, albedo and view up to what a height field and a
  texture warp cannot represent (about 0.02 mean absolute on the head at the frontal view and 0.04 at the dataset's
  views, images in [-1, 1]; ``tests/unsup3d/test_image_model.py``).

Identities: image ``i`` of a split shows identity ``offset + i % n_identities`` with
``n_identities = ceil(size / images_per_identity)``; train identities are ``0 .. n_train - 1``, test identities
follow them and validation identities follow those, so the three splits are disjoint and a ``limit`` keeps
identities varied.

Determinism: the identity table of a split comes from ``(seed, split)`` and each shard's views, lights and
backgrounds from ``(seed, split, shard)``; shards are written atomically, so an interrupted generation resumes and
yields the same bytes.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import struct
import sys
import threading
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmark.datasets.sdf_faces import ALB, FAR_DEPTH, N_GEOM, render_faces, sample_identities
from core.errors import BenchError, DatasetMissingError
from core.registry import DATASETS
from core.weights import file_sha256

__all__ = ["FORMAT_VERSION", "SPLITS", "generate", "SynfaceProc", "sample_shard", "render_shard", "method_view",
           "method_light"]

FORMAT_VERSION = 2
SPLITS = ("train", "val", "test")
_SPLIT_CODE = {"train": 1, "test": 2, "val": 3}
DEFAULT_VAL_SIZE = 1000
VIEW_RANGE = (35.0, 15.0, 5.0)  # |yaw|, |pitch|, |roll| maxima in degrees (uniform)
LIGHT_RANGE = ((0.2, 0.5), (0.5, 0.9), (-0.9, 0.9), (-0.3, 0.8))  # k_a, k_d, dx, dy (uniform)
RENDER_BATCH = 32
_KEYS = ("image", "depth", "mask", "head_mask", "identity", "view", "light", "index")


def method_view(view_deg: torch.Tensor) -> torch.Tensor:
    """Stored views ``(B, 3)`` (yaw, pitch, roll degrees) -> the methods' 6-d view vectors ``(B, 6)``.

    >>> method_view(torch.tensor([[30.0, -6.0, 0.0]])).tolist()
    [[-0.10000000149011612, 0.5, 0.0, 0.0, 0.0, 0.0]]
    """
    v = torch.as_tensor(view_deg, dtype=torch.float32)
    zero = torch.zeros_like(v[:, 0])
    return torch.stack([v[:, 1] / 60, v[:, 0] / 60, v[:, 2] / 60, zero, zero, zero], 1)


def method_light(view_deg: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """Stored camera-frame lights ``(B, 4)`` (k_a, k_d, dx, dy) of images seen from ``view_deg`` ``(B, 3)`` -> the
    methods' canonical-frame light vectors ``(B, 4)`` = ``(2 k_a - 1, 2 k_d - 1, l'_x / l'_z, l'_y / l'_z)`` with
    ``l' = R^T (dx, dy, 1)`` (see the module docstring). At the frontal view only the first two entries change.

    >>> method_light(torch.zeros(1, 3), torch.tensor([[0.25, 0.75, 0.5, -0.2]])).tolist()
    [[-0.5, 0.5, 0.5, -0.20000000298023224]]
    """
    from benchmark.datasets.sdf_faces import rotation_matrices

    light = torch.as_tensor(light, dtype=torch.float64)
    R = torch.from_numpy(rotation_matrices(np.asarray(view_deg, dtype=np.float64)))
    l_cam = torch.stack([light[:, 2], light[:, 3], torch.ones_like(light[:, 2])], 1)
    l_canon = torch.einsum("bji,bj->bi", R, l_cam)
    if bool((l_canon[:, 2] <= 1e-6).any()):
        raise ValueError("a light turned behind the canonical head cannot be written as (dx, dy, 1)")
    out = torch.stack([2 * light[:, 0] - 1, 2 * light[:, 1] - 1, l_canon[:, 0] / l_canon[:, 2],
                       l_canon[:, 1] / l_canon[:, 2]], 1)
    return out.to(torch.float32)


# ----------------------------------------------------------------------------------------------------------------
# Sampling and rendering of one shard
# ----------------------------------------------------------------------------------------------------------------
def _config(train_size, test_size, image_size, seed, shard_size, images_per_identity, asymmetry,
            val_size=DEFAULT_VAL_SIZE, head_scale=1.0) -> dict[str, Any]:
    cfg = {"train_size": train_size, "val_size": val_size, "test_size": test_size, "image_size": image_size,
           "seed": seed, "shard_size": shard_size, "images_per_identity": images_per_identity}
    for key, value in cfg.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise BenchError(f"synface_proc: {key} must be an integer, got {value!r}")
    cfg = {k: int(v) for k, v in cfg.items()}
    for key in ("train_size", "val_size", "test_size"):
        if cfg[key] < 0:
            raise BenchError(f"synface_proc: {key} must be >= 0, got {cfg[key]}")
    for key in ("shard_size", "images_per_identity"):
        if cfg[key] < 1:
            raise BenchError(f"synface_proc: {key} must be >= 1, got {cfg[key]}")
    if cfg["image_size"] < 8:
        raise BenchError(f"synface_proc: image_size must be >= 8, got {cfg['image_size']}")
    try:
        asymmetry = float(asymmetry)
    except (TypeError, ValueError):
        raise BenchError(f"synface_proc: asymmetry must be a number, got {asymmetry!r}") from None
    if not 0.0 <= asymmetry <= 1.0:
        raise BenchError(f"synface_proc: asymmetry must be in [0, 1] (0 = mirror-symmetric faces), got {asymmetry}")
    cfg["asymmetry"] = asymmetry
    try:
        head_scale = float(head_scale)
    except (TypeError, ValueError):
        raise BenchError(f"synface_proc: head_scale must be a number, got {head_scale!r}") from None
    if not 0.5 <= head_scale <= 1.4:
        raise BenchError(f"synface_proc: head_scale must be in [0.5, 1.4] (1 = whole heads, as generated before; "
                         f"1.3 = face crops like BFM synface), got {head_scale}")
    cfg["head_scale"] = head_scale
    return cfg


def _n_identities(size: int, per_identity: int) -> int:
    return math.ceil(size / per_identity) if size else 0


def _n_shards(size: int, shard_size: int) -> int:
    return math.ceil(size / shard_size)


def _identity_offset(cfg: dict, split: str) -> int:
    """Identities are numbered train, then test, then val (val came later: the train and test splits of datasets
    made before it are unchanged)."""
    order = ("train", "test", "val")
    before = order[:order.index(split)]
    return sum(_n_identities(cfg.get(f"{s}_size", 0), cfg["images_per_identity"]) for s in before)


def identity_table(cfg: dict, split: str) -> np.ndarray:
    """Parameters ``(n_identities, N_PARAMS)`` of the identities of ``split`` (deterministic in seed and split)."""
    n_id = _n_identities(cfg.get(f"{split}_size", 0), cfg["images_per_identity"])
    rng = np.random.default_rng(np.random.SeedSequence([cfg["seed"], 0x1D, _SPLIT_CODE[split]]))
    table = sample_identities(rng, n_id, cfg["asymmetry"])
    table[:, N_GEOM + ALB["scale"]] *= np.float32(cfg.get("head_scale", 1.0))  # same draws whatever the framing
    return table


def backgrounds(rng: np.random.Generator, n: int, size: int) -> torch.Tensor:
    """Varied backgrounds ``(n, 3, S, S)`` in [0, 1]: a two-colour linear gradient plus low-frequency colour noise
    and a little pixel noise."""
    grey = rng.uniform(0.1, 0.9, (n, 1))
    c1 = np.clip(grey + rng.normal(0.0, 0.18, (n, 3)), 0.02, 0.98)
    c2 = np.clip(c1 + rng.normal(0.0, 0.06, (n, 1)) + rng.normal(0.0, 0.1, (n, 3)), 0.0, 1.0)
    theta = rng.uniform(0.0, 2 * np.pi, n)
    sharp = rng.uniform(0.5, 2.0, n)
    grid_amp = rng.uniform(0.0, 0.12, (n, 1, 1, 1))
    grid = (rng.normal(0.0, 1.0, (n, 1, 4, 4)) + 0.35 * rng.normal(0.0, 1.0, (n, 3, 4, 4))) * grid_amp
    fine_amp = rng.uniform(0.0, 0.04, (n, 1, 1, 1))
    fine = rng.normal(0.0, 1.0, (n, 3, size, size)) * fine_amp
    lin = np.linspace(-1.0, 1.0, size)
    proj = np.cos(theta)[:, None, None] * lin[None, None, :] + np.sin(theta)[:, None, None] * lin[None, :, None]
    w = np.clip(0.5 + 0.5 * proj * sharp[:, None, None], 0.0, 1.0)[:, None]
    img = c1[:, :, None, None] * (1.0 - w) + c2[:, :, None, None] * w + fine
    low = torch.nn.functional.interpolate(torch.from_numpy(grid), size=(size, size), mode="bilinear",
                                          align_corners=True)
    return (torch.from_numpy(img) + low).clamp(0.0, 1.0).to(torch.float32)


def sample_shard(cfg: dict, split: str, shard: int) -> dict[str, Any]:
    """Everything drawn for one shard: indices, identities, their parameters, views, lights and backgrounds."""
    size, S = cfg.get(f"{split}_size", 0), cfg["image_size"]
    lo = shard * cfg["shard_size"]
    index = np.arange(lo, min(lo + cfg["shard_size"], size), dtype=np.int64)
    n = index.size
    table = identity_table(cfg, split)
    local = index % max(table.shape[0], 1)
    rng = np.random.default_rng(np.random.SeedSequence([cfg["seed"], _SPLIT_CODE[split], shard]))
    view = np.stack([rng.uniform(-r, r, n) for r in VIEW_RANGE], axis=1).astype(np.float32)
    light = np.stack([rng.uniform(lo_, hi, n) for lo_, hi in LIGHT_RANGE], axis=1).astype(np.float32)
    return {"index": index, "identity": (local + _identity_offset(cfg, split)).astype(np.int64),
            "params": table[local], "view": view, "light": light, "background": backgrounds(rng, n, S)}


def render_shard(cfg: dict, split: str, shard: int, progress=None) -> dict[str, np.ndarray]:
    """Render one shard (deterministic on its own) and return its arrays."""
    s = sample_shard(cfg, split, shard)
    n, S = s["index"].size, cfg["image_size"]
    out = {"image": np.zeros((n, S, S, 3), np.uint8), "depth": np.zeros((n, S, S), np.float32),
           "mask": np.zeros((n, S, S), bool), "head_mask": np.zeros((n, S, S), bool)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # element-wise kernels: one thread per process is fastest and immune to contention
    try:
        with torch.no_grad():
            for lo in range(0, n, RENDER_BATCH):
                sl = slice(lo, lo + RENDER_BATCH)
                r = render_faces(s["params"][sl], s["view"][sl].astype(np.float64), s["light"][sl],
                                 s["background"][sl], S)
                out["image"][sl], out["depth"][sl] = r["rgb"], r["depth"]
                out["mask"][sl], out["head_mask"][sl] = r["mask"], r["head_mask"]
                if progress is not None:
                    progress(r["rgb"].shape[0])
    finally:
        torch.set_num_threads(threads)
    out.update(identity=s["identity"], view=s["view"], light=s["light"], index=s["index"])
    return out


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------
def _shard_path(root: Path, split: str, shard: int) -> Path:
    return root / split / f"shard_{shard:05d}.npz"


def _write_atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_json(path: Path, obj: dict) -> None:
    _write_atomic(path, lambda fh: fh.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def _shard_key(split: str, shard: int) -> str:
    """A shard's key in ``meta.json``'s ``checksums``: ``<split>/shard_<k>.npz``."""
    return f"{split}/shard_{shard:05d}.npz"


def _shard_ok(path: Path, n: int) -> bool:
    """A shard file is complete (written atomically) and holds ``n`` images."""
    if not path.is_file():
        return False
    try:
        arrays = _open_npz(path)
        return all(k in arrays for k in _KEYS) and arrays["index"].shape == (n,)
    except (OSError, ValueError, zipfile.BadZipFile, KeyError, struct.error):
        return False


def _open_npz(path: Path) -> dict[str, np.ndarray]:
    """Memory-map the arrays of an uncompressed ``.npz`` (``np.load`` cannot); compressed members are read."""
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
        for info in zf.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if info.compress_type != zipfile.ZIP_STORED:
                with zf.open(info) as member:
                    arrays[name] = np.lib.format.read_array(member)
                continue
            fh.seek(info.header_offset)
            header = fh.read(30)
            if header[:4] != b"PK\x03\x04":
                raise ValueError(f"{path}: bad zip member header")
            n_name, n_extra = struct.unpack("<HH", header[26:30])
            fh.seek(info.header_offset + 30 + n_name + n_extra)
            version = np.lib.format.read_magic(fh)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            shape, fortran, dtype = read_header[version](fh)
            offset = fh.tell()
            if int(np.prod(shape)) == 0:
                arrays[name] = np.zeros(shape, dtype)
            else:
                arrays[name] = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                                         order="F" if fortran else "C")
    return arrays


# ----------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------
def _exit_with_parent(parent: int) -> None:
    """Process-pool initializer: a worker ends itself within a second once its parent is gone (killed, even by
    SIGKILL), instead of rendering on as an orphan."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _render_to_file(args) -> int:
    cfg, split, shard, path = args
    arrays = render_shard(cfg, split, shard)
    _write_atomic(Path(path), lambda fh: np.savez(fh, **arrays))
    return int(arrays["index"].size)


def generate(root: str | os.PathLike, *, train_size: int = 20000, test_size: int = 1000, image_size: int = 64,
             seed: int = 0, shard_size: int = 1000, images_per_identity: int = 10, asymmetry: float = 0.05,
             val_size: int = DEFAULT_VAL_SIZE, head_scale: float = 1.0, progress: bool = True,
             workers: int | None = None) -> dict[str, Any]:
    """Generate (or finish generating) the dataset under ``root``; returns the contents of ``meta.json``.

    Complete shards already present are kept, so an interrupted run resumes and gives identical data. A
    ``meta.json`` written with a different generation config is an error (:class:`BenchError`). ``workers``
    (not part of the config; default: one process per core, at most 4, when at least 1024 images are to be
    rendered, else in-process) renders shards in parallel, one thread each; the output does not depend on it.
    """
    cfg = _config(train_size, test_size, image_size, seed, shard_size, images_per_identity, asymmetry, val_size,
                  head_scale)
    root = Path(root)
    meta_path = root / "meta.json"
    upgrade, known = False, {}
    if meta_path.exists():
        try:
            old = json.loads(meta_path.read_text())
            old_cfg = dict(old["config"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BenchError(f"synface_proc: cannot read {meta_path} ({exc}); delete the folder {root} or choose "
                             f"another dataset.root") from None
        known = dict(old.get("checksums") or {})  # sha256 per shard (datasets made before them have none)
        upgrade = "val_size" not in old_cfg  # made before the validation split: train/test kept, val added
        if upgrade:
            old_cfg["val_size"] = cfg["val_size"]
        old_cfg.setdefault("head_scale", 1.0)  # made before the framing option: whole heads
        diff = sorted(k for k in set(old_cfg) | set(cfg) if old_cfg.get(k) != cfg.get(k))
        if old.get("format_version") != FORMAT_VERSION:
            diff.append("format_version")
        if diff:
            detail = ", ".join(f"{k}: {old_cfg.get(k, old.get(k))!r} on disk vs {cfg.get(k, FORMAT_VERSION)!r}"
                               for k in diff)
            raise BenchError(f"synface_proc: {root} was generated with a different config ({detail}); choose another "
                             f"dataset.root or delete the folder {root} to regenerate")
    root.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split in SPLITS:
        size = cfg[f"{split}_size"]
        splits[split] = {"size": size, "shards": _n_shards(size, cfg["shard_size"]),
                         "identities": _n_identities(size, cfg["images_per_identity"]),
                         "identity_offset": _identity_offset(cfg, split)}
    meta = {"format_version": FORMAT_VERSION, "dataset": "synface_proc", "config": cfg, "splits": splits,
            "complete": False, "far_depth": FAR_DEPTH,
            "conventions": {"view": "(yaw, pitch, roll) degrees; P = Rz(roll) Ry(yaw) Rx(pitch) (P_canon - c) + c, "
                                    "c = (0, 0, 1)",
                            "light": "(k_a, k_d, dx, dy); shading = k_a + k_d max(0, n . l), "
                                     "l = (dx, dy, 1) / norm, n pointing away from the camera",
                            "depth": "z of the first hit at the pixel centre; background = far_depth"}}
    if not meta_path.exists() or upgrade:
        _write_json(meta_path, meta)
    todo, done, sums = [], 0, {}
    for split in SPLITS:
        for k in range(splits[split]["shards"]):
            path, key = _shard_path(root, split, k), _shard_key(split, k)
            n = min(cfg["shard_size"], cfg[f"{split}_size"] - k * cfg["shard_size"])
            if _shard_ok(path, n):
                sums[key] = file_sha256(path)
                if known.get(key, sums[key]) == sums[key]:
                    done += n
                    continue
                print(f"synface_proc: {path} does not match its checksum in meta.json (corrupted); rendering it again",
                      file=sys.stderr)
                del sums[key]
            todo.append((cfg, split, k, str(path), n))
    total = sum(cfg[f"{split}_size"] for split in SPLITS)
    if workers is None:  # processes only pay off (start-up ~3 s each) for several large shards
        big = sum(t[4] for t in todo) >= 1024
        workers = min(4, os.cpu_count() or 1, len(todo)) if big else 1
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=done, unit="img", desc=f"synface_proc -> {root}", dynamic_ncols=True)
    start, rendered = time.perf_counter(), 0
    try:
        if workers <= 1:
            for cfg_, split, k, path, n in todo:
                arrays = render_shard(cfg_, split, k, progress=bar.update if bar is not None else None)
                _write_atomic(Path(path), lambda fh, a=arrays: np.savez(fh, **a))
                rendered += n
        else:
            import multiprocessing as mp

            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                     initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
                for future in as_completed([pool.submit(_render_to_file, t[:4]) for t in todo]):
                    n = future.result()
                    rendered += n
                    if bar is not None:
                        bar.update(n)
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - start
    for _, split, k, path, _ in todo:
        sums[_shard_key(split, k)] = file_sha256(Path(path))
    meta["checksums"] = dict(sorted(sums.items()))  # bench data and the loader check shards against them
    meta["complete"] = True
    meta["rendered_images"] = rendered
    meta["seconds"] = round(elapsed, 3)
    meta["workers"] = workers
    meta["images_per_second"] = round(rendered / elapsed, 2) if rendered and elapsed > 0 else None
    _write_json(meta_path, meta)
    return meta


# ----------------------------------------------------------------------------------------------------------------
# Loader
# ----------------------------------------------------------------------------------------------------------------
def _missing(root: Path, why: str) -> DatasetMissingError:
    return DatasetMissingError(f"synface_proc dataset {why} at {root}; generate it with: bench data "
                               f"dataset=synface_proc dataset.root={root}")


@DATASETS.register("synface_proc")
class SynfaceProc(Dataset):
    """The generated ``synface_proc`` split under ``root`` (see the module docstring for the format).

    Items: ``image`` float32 (3, S, S) in [-1, 1]; ``depth`` float32 (S, S); ``mask`` float32 (S, S) in {0, 1};
    ``identity`` and ``index`` int64 scalars; ``view`` float32 (3,) (yaw, pitch, roll) degrees; ``light`` float32
    (4,) (k_a, k_d, dx, dy); ``name`` like ``test_000123``. Shards are memory-mapped, so memory stays small.
    """

    has_depth = True

    def __init__(self, root: str | os.PathLike, split: str = "test", limit: int | None = None):
        self.root = Path(root)
        if split not in SPLITS:
            raise BenchError(f"synface_proc: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise _missing(self.root, "not found (no meta.json)")
        try:
            self.meta = json.loads(meta_path.read_text())
            cfg, info = self.meta["config"], self.meta["splits"][split]
        except (OSError, ValueError, KeyError, TypeError):
            raise _missing(self.root, "has an unreadable meta.json") from None
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise BenchError(f"synface_proc: {self.root} has format version {self.meta.get('format_version')}, "
                             f"this code reads {FORMAT_VERSION}; delete the folder and run: bench data "
                             f"dataset=synface_proc dataset.root={self.root}")
        self.split, self.config = split, cfg
        self.image_size = int(cfg["image_size"])
        self.shard_size = int(cfg["shard_size"])
        size = int(info["size"])
        self._paths = [_shard_path(self.root, split, k) for k in range(int(info["shards"]))]
        missing = [p.name for p in self._paths if not p.is_file()]
        if missing:
            raise _missing(self.root, f"is incomplete ({len(missing)} of {len(self._paths)} {split} shards missing, "
                                      f"e.g. {split}/{missing[0]}; generation resumes where it stopped)")
        if limit is not None and limit < 0:
            raise BenchError(f"synface_proc: limit must be >= 0, got {limit}")
        self._len = size if limit is None else min(int(limit), size)
        self._shards: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return self._len

    def __getstate__(self):  # DataLoader workers re-open their own memory maps
        state = self.__dict__.copy()
        state["_shards"] = {}
        return state

    def _shard(self, k: int) -> dict[str, np.ndarray]:
        if k not in self._shards:
            expected = (self.meta.get("checksums") or {}).get(_shard_key(self.split, k))
            if expected is not None and file_sha256(self._paths[k]) != expected:
                raise BenchError(f"synface_proc: {self._paths[k]} does not match its checksum in meta.json "
                                 f"(corrupted); re-render it with: bench data dataset=synface_proc "
                                 f"dataset.root={self.root}")
            try:
                self._shards[k] = _open_npz(self._paths[k])
            except (OSError, ValueError, zipfile.BadZipFile, struct.error, KeyError) as exc:
                raise _missing(self.root, f"has a broken shard {self._paths[k]} ({exc}); delete it and regenerate "
                                          f"(generation resumes)") from None
        return self._shards[k]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"index {i} out of range for synface_proc {self.split} of length {self._len}")
        k, j = divmod(i, self.shard_size)
        a = self._shard(k)
        image = torch.from_numpy(np.array(a["image"][j])).permute(2, 0, 1).to(torch.float32) / 127.5 - 1.0
        index = int(a["index"][j])
        return {
            "image": image,
            "depth": torch.from_numpy(np.array(a["depth"][j], dtype=np.float32)),
            "mask": torch.from_numpy(np.array(a["mask"][j], dtype=np.float32)),
            "head_mask": torch.from_numpy(np.array(a["head_mask"][j], dtype=np.float32)),
            "identity": torch.tensor(int(a["identity"][j]), dtype=torch.int64),
            "view": torch.from_numpy(np.array(a["view"][j], dtype=np.float32)),
            "light": torch.from_numpy(np.array(a["light"][j], dtype=np.float32)),
            "index": torch.tensor(index, dtype=torch.int64),
            "name": f"{self.split}_{index:06d}",
        }

    def array(self, key: str) -> np.ndarray:
        """One stored array of the whole split (up to ``limit``) in memory, e.g. ``array("image")`` ``(N, S, S, 3)``
        uint8; keys as in the module docstring."""
        parts, left = [], self._len
        for k in range(len(self._paths)):
            if left <= 0:
                break
            arr = self._shard(k)[key]
            parts.append(np.asarray(arr[:left]))
            left -= arr.shape[0]
        if not parts:
            return np.zeros((0,), np.float32)
        return np.concatenate(parts, axis=0)

    def depth_array(self) -> np.ndarray:
        """All ground-truth depths of the split (up to ``limit``) as a float32 array ``(N, S, S)`` in memory."""
        out = self.array("depth")
        return out.reshape(-1, self.image_size, self.image_size).astype(np.float32, copy=False)

    def depth_mean(self) -> np.ndarray:
        """Per-pixel mean ground-truth depth ``(S, S)`` (float64) over the split, streamed shard by shard."""
        total, left = np.zeros((self.image_size, self.image_size)), self._len
        for k in range(len(self._paths)):
            if left <= 0:
                break
            arr = self._shard(k)["depth"][:left]
            total += np.asarray(arr, dtype=np.float64).sum(axis=0)
            left -= arr.shape[0]
        return total / max(self._len, 1)

    def identities(self) -> np.ndarray:
        """Identity ids ``(N,)`` int64 of the split (up to ``limit``)."""
        return self.array("identity").astype(np.int64, copy=False)

    @classmethod
    def prepare(cls, root: str | os.PathLike, **generation_kwargs) -> dict[str, Any]:
        """Generate the dataset (or finish an interrupted generation); see :func:`generate`."""
        valid = [k for k in inspect.signature(generate).parameters if k != "root"]
        unknown = sorted(set(generation_kwargs) - set(valid))
        if unknown:
            raise BenchError(f"synface_proc: unknown generation option(s) {', '.join(unknown)}; valid: "
                             f"{', '.join(valid)}")
        return generate(root, **generation_kwargs)
