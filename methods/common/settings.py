"""Settings dataclasses built from config mappings, strictly: a misspelt key is an error, never a silent default."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["strict_from_dict"]


def strict_from_dict(cls: type[T], values: dict[str, Any], what: str) -> T:
    """``cls(**values)``, or ValueError naming the unknown keys and the valid ones.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     a: int = 1
    >>> strict_from_dict(C, {"a": 2}, "demo settings")
    C(a=2)
    """
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; valid: {sorted(names)}")
    return cls(**values)
