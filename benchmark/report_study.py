"""The whole report (:func:`build`, behind `bench report`) and the paper's tables in its own layouts, from logged
runs: the BFM table (method, symmetry, SIDE, MAD), the shape-initialisation table, the face-rotation identity
table, and the plots a reader would rather look at. :mod:`benchmark.report` makes the plain table of all rows.

Every table names the runs (id, command, device, commit) it was made from; paper columns come from
:mod:`benchmark.paper` and read "–" where a figure was not published or not transcribed.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

from benchmark import plots, report, tracking
from benchmark.paper import BFM_TABLE
from benchmark.experiments.shape_recon import SAMPLE_GRID
from benchmark.report import Row, _pm
from core.errors import BenchError

INIT_ABLATIONS = ("none", "flat_init", "sphere_init", "small_ellipsoid", "large_ellipsoid", "shifted_ellipsoid")
INIT_NAMES = {"none": "ellipsoid (default)", "flat_init": "flat plane", "sphere_init": "circular cap",
              "small_ellipsoid": "ellipsoid ×0.75", "large_ellipsoid": "ellipsoid ×1.25",
              "shifted_ellipsoid": "ellipsoid shifted down"}
BFM_ROWS = (("supervised", "none"), ("const_depth", "none"), ("avg_depth", "none"), ("ellipsoid", "none"),
            ("unsup3d", "none"), ("unsup3d", "no_symmetry"), ("gan2shape", "none"), ("gan2shape", "symmetry"),
            ("gan2shape", "no_symmetry"), ("gan2shape", "no_offset_reg"))


def symmetry(row: Row) -> str:
    """How a row uses the symmetry assumption, read from its logged parameters."""
    flag = row.param("method.symmetry", "null").lower()
    if row.method not in ("unsup3d", "gan2shape"):
        return "–"
    if flag == "true":
        return "✓ (every step)" if row.method == "gan2shape" else "✓"
    if flag == "false":
        return "✗"
    if row.method == "unsup3d":
        return "✓"
    steps = [name for key, name in (("method.schedule.flip1", "Step 1"), ("method.schedule.flip3", "Step 3"))
             if "true" in row.param(key).lower()]
    return f"✓ ({', '.join(steps)})" if steps else "✗"


def _runs_footer(rows) -> list[str]:
    return ["", "Runs (reproduce with the command):", ""] + [
        f"- `{r.run_id[:8]}` `{r.command}` on {r.device}, commit {r.commit[:12]}" for r in rows]


def _table(header: tuple[str, ...], lines: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(c) + " |" for c in lines]


def _largest(rows: list[Row]) -> dict[tuple[str, str], Row]:
    """One row per (method, ablation) for the paper-layout tables: of several variants, the one scored on the most
    images (the first listed on a tie; the full table keeps every variant)."""
    out: dict[tuple[str, str], Row] = {}
    for r in rows:
        key = (r.method, r.ablation)
        if key not in out or r.n_images > out[key].n_images:
            out[key] = r
    return out


def bfm_table(rows: list[Row]) -> str | None:
    """The BFM-table layout: one line per (method, ablation) of :data:`BFM_ROWS` that was run."""
    by_key = _largest(rows)
    picked = [by_key[k] for k in BFM_ROWS if k in by_key]
    if not picked:
        return None
    lines = []
    for r in picked:
        paper = BFM_TABLE.get((r.method, r.ablation))
        lines.append([r.method + ("" if r.ablation == "none" else f" ({r.ablation})"), symmetry(r), str(r.n_images),
                      _pm(r.side, 3), _pm(r.mad, 2),
                      _pm((paper.side, paper.side_std), 3) if paper else "–",
                      _pm((paper.mad, paper.mad_std), 2) if paper else "–"])
    header = ("Method", "Symmetry", "N", "SIDE (×10⁻²)", "MAD (°)", "Paper SIDE (BFM)", "Paper MAD (BFM)")
    out = ["# Shape reconstruction, BFM-table layout", "", *_table(header, lines), "",
           "Mean ± std over the same first N test images of synface_proc for every row. Paper columns are the "
           "published BFM synface figures (another dataset) for orientation only; the GAN2Shape figure is recalled, "
           "not verified (`benchmark/paper.py`)."]
    return "\n".join(out + _runs_footer(picked)) + "\n"


def shape_init_table(rows: list[Row]) -> str | None:
    """The shape-initialisation layout: each initial shape alone (``ellipsoid`` method) and GAN2Shape from it."""
    by_key = _largest(rows)
    inits = [a for a in INIT_ABLATIONS if ("gan2shape", a) in by_key or ("ellipsoid", a) in by_key]
    if not any(("gan2shape", a) in by_key for a in inits if a != "none"):
        return None
    lines, used = [], []
    for a in inits:
        prior, g2s = by_key.get(("ellipsoid", a)), by_key.get(("gan2shape", a))
        used += [r for r in (prior, g2s) if r is not None]
        cell = (lambda r, pair: _pm(getattr(r, pair), 3 if pair == "side" else 2) if r else "not run")
        lines.append([INIT_NAMES[a], cell(prior, "side"), cell(prior, "mad"), cell(g2s, "side"), cell(g2s, "mad"),
                      str(g2s.n_images) if g2s else "–"])
    header = ("Initial shape", "Prior alone SIDE", "Prior alone MAD", "GAN2Shape SIDE", "GAN2Shape MAD", "N")
    out = ["# Shape initialisation", "", *_table(header, lines), "",
           "SIDE ×10⁻², MAD in degrees, mean ± std over images. 'Prior alone' scores the initial shape with no "
           "learning (`method=ellipsoid` with the same ablation). The paper's initialisation table is not "
           "transcribed in our spec, so it has no paper column."]
    return "\n".join(out + _runs_footer(used)) + "\n"


def _artifact(client, run_id: str, name: str) -> str:
    """A local copy of a run's artifact (no progress bar on stderr)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return client.download_artifacts(run_id, name)


def _logged_image(client, run_id: str, name: str):
    """A run's PNG artifact as an ``(H, W, 3)`` uint8 array, or None when the run has no readable such file."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(_artifact(client, run_id, name)) as image:
            return np.asarray(image.convert("RGB"))
    except Exception:  # noqa: BLE001  (any artifact store error: the caller leaves the row out)
        return None


def _artifact_text(client, run_id: str, name: str) -> str:
    with open(_artifact(client, run_id, name), encoding="utf-8") as handle:
        return handle.read()


def per_image_side(uri: str | None, rows: list[Row]) -> dict[str, list[float]]:
    """Per-image SIDE of each row, read from its ``per_image.csv`` artifact."""
    client = tracking.client(uri)
    out = {}
    for r in rows:
        try:
            text = _artifact_text(client, r.run_id, "per_image.csv")
        except Exception:  # noqa: BLE001  (an artifact store without the file: the row is left out of the plot)
            continue
        values = [float(x["side"]) for x in csv.DictReader(io.StringIO(text))]
        out[r.method + ("" if r.ablation == "none" else f"+{r.ablation}")] = [v for v in values if not math.isnan(v)]
    return out


FACE_TILES = ("input", "true depth", "depth", "true normals", "normals")  # SAMPLE_GRID's first 5 tiles (not the mask)


def _crop_faces(grid, faces: int, tiles: int = 6, pad: int = 2):
    """The first ``faces`` rows and ``len(FACE_TILES)`` columns of a ``core.images.grid`` of ``tiles`` columns."""
    width = (grid.shape[1] - pad) // tiles  # tile + pad
    return grid[:pad + faces * width, :pad + len(FACE_TILES) * width]


def face_strips(uri: str | None, rows: list[Row], faces: int) -> dict[str, str | bytes]:
    """``faces.md`` and ``faces/<row>.png``: the first ``faces`` evaluated images of every row (input, true and
    predicted depth, true and predicted normals), cut from the sample grid its run logged."""
    import numpy as np

    client, files, lines = tracking.client(uri), {}, []
    for r in rows:
        grid = _logged_image(client, r.run_id, SAMPLE_GRID)
        if grid is None:  # a run logged without samples: the row is left out
            continue
        name = f"faces/{_slug(f'{r.method}-{r.label}')}.png"
        files[name] = _png(np.ascontiguousarray(_crop_faces(grid, faces)))
        lines.append([r.method, r.label, f"![{r.method} {r.label}]({name})", f"`{r.run_id[:8]}`"])
    if not lines:
        return {}
    out = [f"# The first {faces} evaluated faces of every row", "",
           f"Each strip, one face a line: {', '.join(FACE_TILES)} (normals from depth, as MAD measures them). "
           "Cut from the sample grid each run logged; the runs and their commands are listed in shape_recon.md.", "",
           *_table(("Method", "Ablation", "Faces", "Run"), lines)]
    return {"faces.md": "\n".join(out) + "\n", **files}


def shape_tables(cfg, rows: list[Row]) -> dict[str, str | bytes]:
    """The study's files for the shape rows: ``bfm_table.md``, ``shape_init.md`` and ``side_per_image.png``."""
    files: dict[str, str | bytes] = {}
    for name, text in (("bfm_table.md", bfm_table(rows)), ("shape_init.md", shape_init_table(rows))):
        if text:
            files[name] = text
    if len(rows) > 1:
        groups = per_image_side(cfg.tracking.uri, rows)
        if groups:
            files["side_per_image.png"] = _png(plots.boxes(groups, "SIDE (×10⁻²) per image",
                                                           f"per-image SIDE, MLflow experiment {cfg.tracking.experiment}"))
    return files


# ------------------------------------------------------------------------------------------------ identity
@dataclass(frozen=True)
class RotationRow:
    method: str
    mode: str
    n_sources: int
    n_angles: int
    identity: tuple[float, float]
    yaw_error: float | None
    yaw_slope: float | None
    seconds_per_source: float
    yaw_range: str
    run_id: str
    command: str
    device: str
    commit: str
    curve: tuple[tuple[float, float], ...]


def identity_rows(uri: str | None, experiment: str) -> list[RotationRow]:
    """The latest finished face-rotation run per (method, rotation mode) of MLflow ``experiment``; GAN2Shape's
    refined mode is one row per step count (``gan_refined:<steps>``)."""
    client = tracking.client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=5000)
    rows: dict[tuple[str, str], RotationRow] = {}
    for run in runs:
        t, m, p = run.data.tags, run.data.metrics, run.data.params
        mode = p.get("method.rotation.mode", "") if t.get("method") == "gan2shape" else ""
        if mode == "gan_refined":  # the step count is part of the row's name
            mode = f"{mode}:{p.get('method.rotation.refine_steps', '?')}"
        key = (t.get("method", "?"), mode)
        if key in rows or "identity_mean" not in m:
            continue
        try:
            text = _artifact_text(client, run.info.run_id, "per_angle.csv")
            curve = tuple((float(x["yaw_deg"]), float(x["identity_mean"])) for x in csv.DictReader(io.StringIO(text)))
        except Exception:  # noqa: BLE001
            curve = ()
        rows[key] = RotationRow(
            key[0], mode, int(m.get("n_sources", 0)), int(m.get("n_angles", 0)),
            (m["identity_mean"], m.get("identity_std")), m.get("yaw_error_mean_deg"), m.get("yaw_slope"),
            m.get("time_per_source_s", float("nan")),
            f"{p.get('experiment.yaw_min_deg', '?')}…{p.get('experiment.yaw_max_deg', '?')}",
            run.info.run_id, t.get("command", ""), t.get("device_name", ""), t.get("git_commit", ""), curve)
    order = {"hologan": 0, "ganspace": 1, "sefa": 2, "gan2shape": 3}
    return sorted(rows.values(), key=lambda r: (order.get(r.method, 9), r.method, r.mode))


#: How a GAN2Shape rotation mode is named in the identity table.
ROTATION_LABELS = {"gan": "Rotation-GAN", "gan_refined": "Rotation-GAN, refined offsets", "3d": "Rotation-3D"}


def rotation_label(mode: str) -> str:
    """A row's rotation mode as the identity table names it.

    >>> rotation_label("gan_refined:300")
    'Rotation-GAN, refined offsets, 300 steps'
    """
    base, _, steps = mode.partition(":")
    return ROTATION_LABELS.get(base, base) + (f", {steps} steps" if steps else "")


#: The strip a face-rotation run logs (each source, then its rotations by the requested yaws).
ROTATION_STRIP = "samples/source_then_rotations.png"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text).strip("_")


def rotation_strips(uri: str | None, rows: list[RotationRow], faces: int) -> tuple[list[str], dict[str, bytes]]:
    """``rotations/<row>.png``: the first ``faces`` sources of every row's logged strip (source, then its rotations
    from the lowest to the highest requested yaw), and the markdown lines that show them."""
    import numpy as np

    client, files, lines = tracking.client(uri), {}, []
    for r in rows:
        grid = _logged_image(client, r.run_id, ROTATION_STRIP)
        if grid is None:  # a run logged without its strip: the row is left out
            continue
        if r.n_angles > 0:  # square tiles, 2-pixel gaps (core.images.grid); one row per source
            grid = grid[:2 + faces * ((grid.shape[1] - 2) // (r.n_angles + 1))]
        name = f"rotations/{_slug(f'{r.method}-{r.mode}' if r.mode else r.method)}.png"
        files[name] = _png(np.ascontiguousarray(grid))
        label = r.method + (f" ({rotation_label(r.mode)})" if r.mode else "")
        lines.append(f"- {label}, run `{r.run_id[:8]}`: ![{label}]({name})")
    return lines, files


def identity_tables(cfg, rows: list[RotationRow]) -> dict[str, str | bytes]:
    """``identity.md`` (the paper's layout: method, identity score; plus how far faces really turned and the time),
    ``identity_vs_angle.png`` and, with ``cfg.report.faces``, the rows' rotation strips."""
    lines = [[r.method + (f" ({rotation_label(r.mode)})" if r.mode else ""),
              f"{r.n_sources} × {r.n_angles}", r.yaw_range, _pm(r.identity, 4),
              "–" if r.yaw_error is None else f"{r.yaw_error:.1f}", "–" if r.yaw_slope is None else f"{r.yaw_slope:.2f}",
              f"{r.seconds_per_source:.1f}", "–"] for r in rows]
    header = ("Method", "Sources × angles", "Yaw (°)", "Identity (cos) ↑", "Yaw error (°)", "Yaw slope",
              "s / source", "Paper")
    out = ["# Face rotation: identity preservation", "", *_table(header, lines), "",
           "Identity: cosine similarity between the face embedding of each rotated image and of its source, mean over "
           "all sources × angles ± std over sources of their per-source mean (`metrics/identity.py`). Yaw error and "
           "slope: the yaw the shared regressor reads on each rotated image relative to its source, against the "
           "requested yaw (slope 1: faces turn by what was asked; a method that barely turns keeps identity for "
           "free). The paper's ArcFace table was not retrieved into our spec, so the paper column is empty.",
           "", "Runs (reproduce with the command):", ""]
    out += [f"- `{r.run_id[:8]}` `{r.command}` on {r.device}, commit {r.commit[:12]}" for r in rows]
    files: dict[str, str | bytes] = {}
    if cfg.report.faces:
        strips, images = rotation_strips(cfg.tracking.uri, rows, int(cfg.report.faces))
        if strips:
            out += ["", f"The first {int(cfg.report.faces)} sources of every row, one a line: the source, then its "
                    f"rotations from the lowest to the highest requested yaw (cut from the strip each run logged):",
                    "", *strips]
            files.update(images)
    files["identity.md"] = "\n".join(out) + "\n"
    curves = {lines[i][0]: [v for _, v in r.curve] for i, r in enumerate(rows) if r.curve}
    if curves:
        x = [a for a, _ in next(r.curve for r in rows if r.curve)]
        same = {k: v for k, v in curves.items() if len(v) == len(x)}
        files["identity_vs_angle.png"] = _png(plots.curves(x, same, "requested yaw (degrees)",
                                                           "identity (cosine to source)", "identity vs angle"))
    return files


def _png(image) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _write(out_dir: Path, files: dict[str, str | bytes]) -> list[Path]:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, content in files.items():
            path = out_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
            paths.append(path)
    except OSError as err:
        raise BenchError(f"cannot write the report to {out_dir}: {err.strerror}; pass report.out_dir=<writable dir>")
    return paths


def build(cfg) -> list[Path]:
    """Write the report for the runs in ``cfg.tracking.uri`` to ``cfg.report.out_dir``: the shape-reconstruction
    tables of MLflow experiment ``cfg.tracking.experiment`` (all rows; the BFM-style and shape-initialisation
    layouts and the per-image SIDE plot when it holds ablation-study rows; ``faces.md`` with the first
    ``cfg.report.faces`` evaluated faces of every row) and the identity table and curves of
    ``cfg.report.rotation_experiment``. Either may be absent, not both."""
    out_dir = Path(cfg.report.out_dir)
    files: dict[str, str | bytes] = {}
    try:
        rows = report.fetch_rows(cfg.tracking.uri, cfg.tracking.experiment)
    except BenchError:
        rows = []
    if rows:
        files.update({"shape_recon.md": report.to_markdown(rows), "shape_recon.tex": report.to_latex(rows),
                      "shape_recon.html": report.to_html(rows)})
        files.update(shape_tables(cfg, rows))
        if cfg.report.faces:
            files.update(face_strips(cfg.tracking.uri, rows, int(cfg.report.faces)))
    rotation = identity_rows(cfg.tracking.uri, cfg.report.rotation_experiment)
    if rotation:
        files.update(identity_tables(cfg, rotation))
    if not files:
        raise BenchError(f"no finished runs to report in MLflow experiments '{cfg.tracking.experiment}' or "
                         f"'{cfg.report.rotation_experiment}'; run `bench run` first (or set tracking.experiment)")
    return _write(out_dir, files)
