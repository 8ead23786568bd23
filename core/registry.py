"""Registries of named plugins: methods, datasets, experiments, mask providers, trainers.

One registry per kind, one decorator keyed by name, duplicates an error (as in timm and mmengine)::

    @METHODS.register("ellipsoid")
    class EllipsoidPrior: ...

    method = METHODS.create("ellipsoid", mask="gt")

Plugins are found through package entry points, read on first use of any registry:

* ``gan2shape_bench.plugins``: modules imported for their ``@register`` decorators. This project's own methods,
  datasets, experiments, mask providers and trainers are declared here in ``pyproject.toml``, so this foundation
  module names nothing from the layers above it;
* ``gan2shape_bench.<kind>s`` (for example ``gan2shape_bench.methods``): one object per entry point; if importing
  it did not register it, it is registered under the entry point's name.

Third-party packages use the same two groups, without touching this repository.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Callable, TypeVar

from core.errors import BenchError, UnknownNameError

T = TypeVar("T")

PLUGIN_GROUP = "gan2shape_bench.plugins"


def load_plugin_modules() -> None:
    """Import every module declared in the ``gan2shape_bench.plugins`` entry-point group (idempotent)."""
    modules = entry_points(group=PLUGIN_GROUP)
    if not modules:
        raise BenchError(
            f"no plugin modules declared under the entry-point group '{PLUGIN_GROUP}': the project is not installed; "
            "run `make install` (pip install -e .) in the repository"
        )
    for ep in modules:
        importlib.import_module(ep.value)


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
        load_plugin_modules()
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
