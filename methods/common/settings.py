"""Settings dataclasses built from config mappings, strictly: a misspelt key or a value of the wrong type is an
error that names the key, never a silent default."""

from __future__ import annotations

import difflib
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["strict_from_dict"]

# Field annotations (strings, under ``from __future__ import annotations``) whose values are checked here.
_SCALARS = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def _check_type(name: str, annotation: str, value: Any, what: str) -> None:
    optional = annotation.replace(" ", "").endswith("|None") or annotation.startswith("Optional[")
    base = annotation.replace(" ", "").removesuffix("|None")
    if base not in _SCALARS or (value is None and optional):
        return
    ok = isinstance(value, _SCALARS[base]) and not (base in ("int", "float") and isinstance(value, bool))
    if not ok:
        raise ValueError(f"{what}: '{name}' must be {'an' if base == 'int' else 'a'} {base}"
                         f"{' or null' if optional else ''}, got {value!r} ({type(value).__name__})")


def strict_from_dict(cls: type[T], values: dict[str, Any], what: str) -> T:
    """``cls(**values)``, or ValueError naming an unknown key (with the closest valid one) or a mistyped value.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     lr: float = 1.0
    ...     steps: int = 1
    >>> strict_from_dict(C, {"lr": 2}, "demo settings")
    C(lr=2, steps=1)
    >>> strict_from_dict(C, {"sptes": 2}, "demo settings")
    Traceback (most recent call last):
    ...
    ValueError: unknown demo settings ['sptes'] (did you mean 'steps'?); valid: ['lr', 'steps']
    >>> strict_from_dict(C, {"steps": "ten"}, "demo settings")
    Traceback (most recent call last):
    ...
    ValueError: demo settings: 'steps' must be an int, got 'ten' (str)
    """
    by_name = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(by_name), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown {what} {unknown}{hint}; valid: {sorted(by_name)}")
    for name, value in values.items():
        annotation = by_name[name].type
        if isinstance(annotation, str):
            _check_type(name, annotation, value, what)
    return cls(**values)
