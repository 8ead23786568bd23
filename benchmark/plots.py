"""Figures for runs and reports, drawn with matplotlib (Agg, no display) and returned as ``(H, W, 3)`` uint8."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def _figure(width: float = 5.0, height: float = 3.4):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height), dpi=110)


def _pixels(plt, fig) -> np.ndarray:
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def curves(x: Sequence[float], ys: Mapping[str, Sequence[float]], xlabel: str, ylabel: str, title: str = "",
           bands: Mapping[str, Sequence[float]] | None = None) -> np.ndarray:
    """One line per entry of ``ys`` over ``x`` (with a ±``bands[name]`` shaded band when given)."""
    plt, fig, ax = _figure()
    for name, y in ys.items():
        y = np.asarray(y, dtype=float)
        ax.plot(x, y, marker="o", markersize=3, label=name)
        if bands and name in bands:
            b = np.asarray(bands[name], dtype=float)
            ax.fill_between(x, y - b, y + b, alpha=0.2)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if len(ys) > 1:
        ax.legend(fontsize=7)
    return _pixels(plt, fig)


def boxes(groups: Mapping[str, Sequence[float]], ylabel: str, title: str = "") -> np.ndarray:
    """A box plot with the points of each group overlaid (one box per entry)."""
    plt, fig, ax = _figure(max(5.0, 0.6 * len(groups) + 2), 3.6)
    names = list(groups)
    ax.boxplot([np.asarray(groups[n], dtype=float) for n in names], showfliers=False)
    for i, n in enumerate(names, start=1):
        v = np.asarray(groups[n], dtype=float)
        ax.scatter(np.full(len(v), i) + np.linspace(-0.15, 0.15, len(v)), v, s=6, alpha=0.6)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=35, ha="right", fontsize=7)
    ax.set(ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, axis="y")
    return _pixels(plt, fig)
