"""Registries of named plugins: methods, datasets, experiments, mask providers, trainers.

One registry per kind, one decorator keyed by name, duplicates an error (as in timm and mmengine)::

    @METHODS.register("ellipsoid")
    class EllipsoidPrior: ...

    method = METHODS.create("ellipsoid", mask="gt")

Third-party packages add plugins without touching this repository by declaring an entry point in the group
``gan2shape_bench.<kind>s`` (for example ``gan2shape_bench.methods``). The entry point's object is imported on
first use of the registry; if importing it did not register it, it is registered under the entry point's name.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Callable, TypeVar

from benchmark.errors import UnknownNameError

T = TypeVar("T")

# Modules that register the built-in plugins; imported lazily on first registry access.
BUILTIN_MODULES = (
    "methods.baselines",
    "methods.unsup3d",
    "methods.supervised",
    "methods.gan2shape.method",
    "methods.hologan.method",
    "methods.ganspace",
    "methods.sefa",
    "benchmark.datasets",
    "benchmark.experiments",
    "methods.common.masks",
)


class Registry:
    """A name -> factory mapping for one kind of plugin."""

    def __init__(self, kind: str):
        self.kind = kind
        self.group = f"gan2shape_bench.{kind.replace(' ', '_')}s"
        self._entries: dict[str, Callable[..., Any]] = {}
        self._loaded = False

    def register(self, name: str | None = None, *, force: bool = False) -> Callable[[T], T]:
        """Decorator registering a class or factory function under ``name`` (default: its ``__name__``)."""

        def decorator(obj: T) -> T:
            key = name or obj.__name__  # type: ignore[attr-defined]
            if key in self._entries and self._entries[key] is not obj and not force:
                raise ValueError(f"{self.kind} '{key}' is already registered by {self._entries[key]!r}")
            self._entries[key] = obj  # type: ignore[assignment]
            return obj

        return decorator

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        for ep in entry_points(group=self.group):
            if ep.name in self._entries:
                continue
            obj = ep.load()
            if ep.name not in self._entries:
                self.register(ep.name)(obj)

    def names(self) -> list[str]:
        """Sorted registered names."""
        self._ensure_loaded()
        return sorted(self._entries)

    def get(self, name: str) -> Callable[..., Any]:
        """The registered object; an unknown name raises :class:`UnknownNameError` listing the valid ones."""
        self._ensure_loaded()
        if name not in self._entries:
            raise UnknownNameError(self.kind, name, self.names())
        return self._entries[name]

    def create(self, name: str, **kwargs: Any) -> Any:
        """Instantiate the plugin ``name`` with ``kwargs``; ``None`` values are dropped so defaults apply."""
        factory = self.get(name)
        return factory(**{k: v for k, v in kwargs.items() if v is not None})

    def __contains__(self, name: str) -> bool:
        self._ensure_loaded()
        return name in self._entries


METHODS = Registry("method")
DATASETS = Registry("dataset")
EXPERIMENTS = Registry("experiment")
MASKS = Registry("mask provider")
TRAINERS = Registry("trainer")
