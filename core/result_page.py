"""A per-run HTML result page: images, animations, metric tables and interactive 3D models, viewable offline.

:func:`write_result_page` writes ``<out_dir>/index.html`` from a list of :class:`PageSection`. Each section holds
items shown in a CSS grid:

* :class:`Image`: a PNG/JPEG/GIF/APNG/WebP file in ``out_dir`` (GIFs and APNGs animate by themselves); ``wide``
  makes it span the whole row (for strips).
* :class:`Table`: key -> value rows (e.g. metrics); floats are shown with 4 significant digits.
* :class:`Model`: a ``.glb`` file in ``out_dir``, shown in an orbit viewer (drag to rotate, scroll to zoom).

The page works from any folder, opened from disk (``file://``) or served over HTTP, with no network access:

* images and download links reference files by paths relative to ``out_dir``;
* the viewer is Google's ``<model-viewer>`` web component, shipped in this package (``core/static``, see its
  README) as a classic (non-module) script, which browsers run from ``file://``; it is copied to
  ``<out_dir>/static/`` with its licence when the page has a model;
* browsers refuse to let a ``file://`` page read other local files (``fetch`` of ``file://`` is blocked), so a
  model is embedded in the page as a ``data:`` URI (base64, 4/3 of the GLB size) and also linked for download. A
  GLB over ``embed_limit`` bytes is referenced by its relative path instead, which needs the folder to be served
  (``python -m http.server``); its caption says so.

Each ``<model-viewer>`` gets ``data-status="loaded"`` when its model has loaded, or ``data-status="error"`` (with a
message in its caption) when the model or the viewer script failed, for people and for automated checks.
All text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import quote

__all__ = ["Image", "Table", "Model", "PageSection", "write_result_page", "VIEWER_SCRIPT", "EMBED_LIMIT"]

VIEWER_SCRIPT = "static/model-viewer.min.js"
"""Where the page loads the viewer from, relative to ``out_dir``."""
_VIEWER_LICENSE = "static/model-viewer.LICENSE"
EMBED_LIMIT = 32 * 2**20
"""Default largest GLB (bytes) embedded in the page; larger ones are referenced by relative path."""


@dataclass(frozen=True)
class Image:
    """An image file in ``out_dir`` (relative path, or absolute path inside ``out_dir``)."""

    path: str | os.PathLike
    caption: str = ""
    wide: bool = False


@dataclass(frozen=True)
class Table:
    """Key -> value rows; floats are formatted with 4 significant digits, anything else with ``str``."""

    rows: Mapping[str, object]
    caption: str = ""


@dataclass(frozen=True)
class Model:
    """A binary glTF (``.glb``) file in ``out_dir``, shown in an interactive orbit viewer."""

    path: str | os.PathLike
    caption: str = ""


@dataclass(frozen=True)
class PageSection:
    """A heading and the items shown under it, in order."""

    heading: str
    items: Sequence[Image | Table | Model] = field(default_factory=tuple)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 0; color: #222; background: #fff; }
header { padding: 16px 24px; background: #f3f4f6; border-bottom: 1px solid #ddd; }
h1 { margin: 0 0 8px; font-size: 1.5em; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0; font-size: .9em; }
dl.meta dt { font-weight: 600; }
dl.meta dd { margin: 0; font-family: ui-monospace, monospace; word-break: break-all; }
main { padding: 8px 24px 24px; }
h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 16px; align-items: start; }
figure { margin: 0; }
figure.wide { grid-column: 1 / -1; }
figure img { width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
figcaption { font-size: .85em; color: #555; margin-top: 4px; }
figcaption .error { color: #b00; }
table { border-collapse: collapse; font-size: .9em; width: 100%; }
td { border: 1px solid #ddd; padding: 3px 8px; }
td.v { font-family: ui-monospace, monospace; text-align: right; }
model-viewer { width: 100%; height: 320px; background: #eef0f3; border: 1px solid #ddd; }
""".strip()

# Marks each viewer loaded / failed (data-status) and explains failures in its caption.
_STATUS_JS = """
for (const mv of document.querySelectorAll('model-viewer')) {
  const fail = (text) => {
    mv.dataset.status = 'error';
    const note = mv.parentElement.querySelector('.status');
    if (note) note.textContent = text;
  };
  if (!customElements.get('model-viewer')) {
    fail('3D viewer unavailable: static/model-viewer.min.js did not load');
    continue;
  }
  mv.addEventListener('load', () => { mv.dataset.status = 'loaded'; });
  mv.addEventListener('error', () => fail('could not load the 3D model'));
}
""".strip()


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _relative(out_dir: Path, path: str | os.PathLike, what: str) -> str:
    """``path`` as a POSIX path relative to ``out_dir``; it must be an existing file inside ``out_dir``."""
    given = Path(path)
    full = given if given.is_absolute() else out_dir / given
    try:
        rel = full.resolve().relative_to(out_dir.resolve())
    except ValueError:
        raise ValueError(f"{what} {str(path)!r} is not inside {str(out_dir)!r}: the page only references files "
                         f"in its own folder; write or copy the file there first") from None
    if not full.is_file():
        raise FileNotFoundError(f"{what} {str(full)!r} does not exist; write it before the page")
    return rel.as_posix()


def _url(rel: str) -> str:
    """A relative path as an escaped attribute value (percent-encoded, so ``#``, ``?`` and spaces work)."""
    return _esc(quote(rel, safe="/"))


def _format(value: object) -> str:
    """
    >>> _format(0.123456), _format(12), _format("x")
    ('0.1235', '12', 'x')
    """
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _caption(text: str, extra: str = "") -> str:
    body = _esc(text) + extra
    return f"<figcaption>{body}</figcaption>" if body else ""


def _item_html(out_dir: Path, item: object, embed_limit: int) -> str:
    if isinstance(item, Image):
        rel = _relative(out_dir, item.path, "image")
        cls = ' class="wide"' if item.wide else ""
        return (f'<figure{cls}><img src="{_url(rel)}" alt="{_esc(item.caption or rel)}" loading="lazy">'
                f"{_caption(item.caption)}</figure>")
    if isinstance(item, Table):
        rows = "".join(f'<tr><td>{_esc(k)}</td><td class="v">{_esc(_format(v))}</td></tr>' for k, v in item.rows.items())
        return f"<figure><table>{rows}</table>{_caption(item.caption)}</figure>"
    if isinstance(item, Model):
        rel = _relative(out_dir, item.path, "model")
        if not rel.lower().endswith(".glb"):
            raise ValueError(f"model {rel!r} must be a binary glTF (.glb) file")
        size = (out_dir / rel).stat().st_size
        note = ""
        if size <= embed_limit:
            src = "data:model/gltf-binary;base64," + base64.b64encode((out_dir / rel).read_bytes()).decode("ascii")
        else:
            src = _url(rel)
            note = (" (too large to embed: serve this folder, e.g. <code>python -m http.server</code>, to view it; "
                    "browsers do not let pages opened from disk read other files)")
        link = f' <a href="{_url(rel)}" download>{_esc(Path(rel).name)}</a>{note} <span class="status error"></span>'
        return (f'<figure><model-viewer src="{src}" alt="{_esc(item.caption or rel)}" camera-controls '
                f'interaction-prompt="none" shadow-intensity="0" data-status="loading"></model-viewer>'
                f"{_caption(item.caption, link)}</figure>")
    raise TypeError(f"a section item must be an Image, Table or Model, got {type(item).__name__}")


def _copy_viewer(out_dir: Path) -> None:
    static = resources.files("core") / "static"
    for name, target in (("model-viewer.min.js", VIEWER_SCRIPT), ("model-viewer.LICENSE", _VIEWER_LICENSE)):
        dest = out_dir / target
        dest.parent.mkdir(parents=True, exist_ok=True)
        with resources.as_file(static / name) as src:
            shutil.copyfile(src, dest)


def write_result_page(
    out_dir: str | os.PathLike,
    title: str,
    sections: Sequence[PageSection],
    meta: Mapping[str, object] | None = None,
    *,
    embed_limit: int = EMBED_LIMIT,
) -> Path:
    """Write ``<out_dir>/index.html`` (and ``<out_dir>/static/`` when there are models); return the page's path.

    Args:
        out_dir: the page's folder; the files its items name must already be in it.
        title: page title and heading.
        sections: headed groups of :class:`Image`, :class:`Table` and :class:`Model` items.
        meta: key -> value pairs shown under the title (run id, method, dataset, commit...).
        embed_limit: largest GLB, in bytes, embedded in the page (see the module docstring).
    Raises:
        FileNotFoundError: an item's file does not exist. ValueError: an item's file is outside ``out_dir``, or a
        model is not a ``.glb``. TypeError: an item of another type.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     page = write_result_page(d, "a < b", [PageSection("Metrics", [Table({"side": 0.5})])], {"run": "1"})
    ...     text = page.read_text()
    ...     (page.name, "<h1>a &lt; b</h1>" in text, "<td>side</td>" in text, "model-viewer.min.js" in text)
    ('index.html', True, True, False)
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    body = []
    for section in sections:
        items = "\n".join(_item_html(out_dir, item, embed_limit) for item in section.items)
        body.append(f'<section><h2>{_esc(section.heading)}</h2>\n<div class="grid">\n{items}\n</div></section>')
    has_model = any(isinstance(item, Model) for section in sections for item in section.items)
    meta_html = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in (meta or {}).items())
    page = "\n".join([
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title>",
        f"<style>\n{_CSS}\n</style>",
        f'<script src="{VIEWER_SCRIPT}"></script>' if has_model else "",
        "</head><body>",
        f"<header><h1>{_esc(title)}</h1>" + (f'<dl class="meta">{meta_html}</dl>' if meta_html else "") + "</header>",
        "<main>", *body, "</main>",
        f"<script>\n{_STATUS_JS}\n</script>" if has_model else "",
        "</body></html>",
        "",
    ])
    if has_model:
        _copy_viewer(out_dir)
    path = out_dir / "index.html"
    tmp = path.with_name(".index.html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
