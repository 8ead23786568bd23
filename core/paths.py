"""Where shipped assets live: paths in configs (``weights/...``) resolve from the launch directory or the repository."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def asset_path(path: str | Path) -> Path:
    """A shipped-asset path from a config (e.g. ``weights/...``): as given when it exists (relative to the launch
    directory), else relative to the repository, so `bench` works from any directory; unchanged if neither exists.

    >>> asset_path("weights").is_dir()
    True
    """
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    shipped = REPO_ROOT / path
    return shipped if shipped.exists() else path
