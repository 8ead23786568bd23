"""Atomic file writes and shipped weights with their model card (safetensors + a JSON sidecar).

Weights files are ``<name>.safetensors`` (float32 tensors; ``format`` and ``format_version`` in the safetensors
metadata) with ``<name>.json`` beside them: ``{"format", "format_version", "model": <architecture>, "training":
<model card>}``. Both are written atomically (a temporary file, then ``os.replace``), so a reader never sees half a
file and an interrupted export leaves the previous one intact.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor

from core.errors import BenchError

__all__ = ["atomic_write", "atomic_torch_save", "file_sha256", "save_weights", "load_weights", "read_card"]


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(fh)`` on a temporary file next to ``path``, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_torch_save(path: str | Path, payload: Any) -> Path:
    """``torch.save`` atomically (plain tensors and containers only, so ``weights_only=True`` loads it)."""
    return atomic_write(path, lambda fh: torch.save(payload, fh))


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (model cards, cache keys, dataset shard checksums)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def save_weights(path: str | Path, tensors: dict[str, Tensor], fmt: str, version: int, model: dict[str, Any],
                 card: dict[str, Any]) -> Path:
    """Write ``tensors`` (as float32 on the CPU) to ``path`` and the card sidecar beside it."""
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise BenchError(f"output {path} must end in .safetensors (the model card goes to {path.stem}.json)")
    flat = {k: v.detach().float().cpu().contiguous().clone() for k, v in tensors.items()}
    blob = save(flat, metadata={"format": fmt, "format_version": str(version)})
    atomic_write(path, lambda fh: fh.write(blob))
    meta = {"format": fmt, "format_version": version, "model": model, "training": card}
    atomic_write(_sidecar(path), lambda fh: fh.write((json.dumps(meta, indent=2) + "\n").encode()))
    return path


def read_card(path: str | Path, fmt: str) -> dict[str, Any]:
    """The JSON sidecar of a weights file; one-line :class:`BenchError` when it is missing or of another format."""
    side = _sidecar(Path(path))
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError) as err:
        raise BenchError(f"cannot read the model card {side} of {path} ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt or "model" not in meta:
        raise BenchError(f"{side} is not a model card of format {fmt}")
    return meta


def load_weights(path: str | Path, fmt: str, train_hint: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and card of a weights file of format ``fmt``; ``train_hint`` says how to make a missing file."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise BenchError(f"weights {path} not found; {train_hint}")
    meta = read_card(path, fmt)
    try:
        return load_file(str(path)), meta
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise BenchError(f"cannot read weights {path} ({type(err).__name__}: {str(err)[:200]})") from None
