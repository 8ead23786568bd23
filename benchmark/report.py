"""Tables from logged MLflow runs: one row per configuration (latest finished run), ours beside the paper's.

A configuration is the dataset, the method, its ablations and its *variant*: every other override of the run's
command that can change results (``preset=paper``, ``tuned=...``, ``method.weights=...``, a non-test split, ...),
so two different configurations never share a row. Overrides that cannot change the scores (tracking, paths,
devices, batch sizes, progress bars), those shown in their own columns (method, ablation, ``eval.limit``) and the
dataset's location and generation settings (the table is per dataset; keep differently generated copies under
different dataset names or stores) are left out.

Writes ``<out_dir>/shape_recon.{md,tex,html}``. Only runs that finished count: a failed or interrupted run never
reaches a table.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

from benchmark import tracking
from benchmark.paper import BFM_TABLE
from core.errors import BenchError

METHOD_ORDER = ("supervised", "const_depth", "avg_depth", "ellipsoid", "unsup3d", "gan2shape")


@dataclass(frozen=True)
class Row:
    dataset: str
    method: str
    ablation: str
    n_images: int
    side: tuple[float, float]
    mad: tuple[float, float]
    mad_exact: tuple[float, float]
    run_id: str
    command: str
    device: str
    commit: str
    result_page: str = ""
    params: tuple[tuple[str, str], ...] = ()
    variant: str = ""

    @property
    def label(self) -> str:
        """The ablation, plus the variant when there is one."""
        return self.ablation + (f" [{self.variant}]" if self.variant else "")

    def param(self, key: str, default: str = "") -> str:
        return dict(self.params).get(key, default)


def _pm(pair: tuple[float, float] | tuple[None, None], digits: int, sep: str = " ± ") -> str:
    mean, std = pair
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.{digits}f}" + ("" if std is None else f"{sep}{std:.{digits}f}")


# Override prefixes left out of a row's variant: they cannot change the scores, or have a column of their own.
_NEUTRAL = ("tracking.", "paths.", "hydra.", "report.", "device", "eval.batch_size", "eval.num_workers", "eval.limit",
            "dataset.", "dataset=", "method.progress", "metrics.", "method=", "ablation=", "row=", "experiment=",
            "preset=fast", "-m", "--multirun")


def variant_of(command: str, params: dict[str, str]) -> str:
    """The overrides of a ``bench run`` command that make its configuration differ from the default one.

    >>> variant_of("bench run method=ellipsoid preset=paper tracking.uri=x tuned=ellipsoid_prior", {})
    'preset=paper tuned=ellipsoid_prior'
    >>> variant_of("bench run method=avg_depth", {"experiment.split": "val"})
    'split=val'
    """
    import shlex

    try:
        words = shlex.split(command)[2:]
    except ValueError:
        words = command.split()[2:]
    kept = [w for w in words if not w.startswith(_NEUTRAL)]
    split = params.get("experiment.split", "test")
    if split not in ("test", ""):
        kept.append(f"split={split}")
    return " ".join(sorted(kept))


def fetch_rows(uri: str | None, experiment: str = "shape_recon") -> list[Row]:
    """The latest finished run per configuration (dataset, method, ablation, variant) of ``experiment``."""
    client = tracking.client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise BenchError(f"no '{experiment}' runs in {tracking.resolve_uri(uri)}; run `bench run` first (or set "
                         "tracking.uri / tracking.experiment)")
    runs = client.search_runs([found.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=5000)
    rows: dict[tuple[str, str, str, str], Row] = {}
    for run in runs:
        t, m = run.data.tags, run.data.metrics
        variant = variant_of(t.get("command", ""), run.data.params)
        key = (t.get("dataset", "?"), t.get("method", "?"), t.get("ablation", "none"), variant)
        if key in rows or "side_mean" not in m:
            continue
        rows[key] = Row(*key[:3], variant=variant, n_images=int(m.get("n_images", 0)),
                        side=(m["side_mean"], m["side_std"]), mad=(m["mad_mean"], m["mad_std"]),
                        mad_exact=(m["mad_exact_mean"], m["mad_exact_std"]),
                        run_id=run.info.run_id, command=t.get("command", ""), device=t.get("device_name", ""),
                        commit=t.get("git_commit", ""), result_page=t.get("result_page", ""),
                        params=tuple(sorted(run.data.params.items())))
    order = {name: i for i, name in enumerate(METHOD_ORDER)}
    return sorted(rows.values(), key=lambda r: (r.dataset, order.get(r.method, len(order)), r.method, r.ablation,
                                                r.variant))


HEADER = ("Method", "Ablation", "N", "SIDE (×10⁻²)", "MAD (°)", "MAD exact (°)", "Paper SIDE (BFM)",
          "Paper MAD (BFM)", "Run")


def _cells(row: Row) -> list[str]:
    paper = BFM_TABLE.get((row.method, row.ablation))
    return [row.method, row.label, str(row.n_images), _pm(row.side, 3), _pm(row.mad, 2), _pm(row.mad_exact, 2),
            _pm((paper.side, paper.side_std), 3) if paper else "–", _pm((paper.mad, paper.mad_std), 2) if paper
            else "–", row.run_id[:8]]


NOTES = ("SIDE is the scale-invariant depth error ×10⁻², MAD the mean angular deviation of normals in degrees, both "
         "mean ± std over images (method.md §9). 'MAD' uses the original normal formula (norm + 1e-7), comparable "
         "with published figures; 'MAD exact' uses unit normals. Paper columns are the published BFM synface figures "
         "(a different dataset from synface_proc) and are given for orientation only.")


def to_markdown(rows: list[Row]) -> str:
    out = ["# Shape reconstruction (SIDE / MAD)", ""]
    for dataset in sorted({r.dataset for r in rows}):
        out += [f"## Dataset `{dataset}`", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        out += ["| " + " | ".join(_cells(r)) + " |" for r in rows if r.dataset == dataset]
        out.append("")
    out += [NOTES, "", "Runs (reproduce with the command):", ""]
    out += [f"- `{r.run_id[:8]}` `{r.command}` on {r.device}, commit {r.commit[:12]}" for r in rows]
    pages = [r for r in rows if r.result_page]
    if pages:
        out += ["", "Result pages (3D viewer, sweeps, meshes; open in a browser):", ""]
        out += [f"- `{r.run_id[:8]}` {r.method} ({r.label}): {r.result_page}" for r in pages]
    return "\n".join(out) + "\n"


def to_latex(rows: list[Row]) -> str:
    def esc(s: str) -> str:
        return s.replace("_", r"\_").replace("±", r"$\pm$").replace("–", "--").replace("×10⁻²", r"$\times10^{-2}$")

    out = []
    for dataset in sorted({r.dataset for r in rows}):
        out += [r"\begin{table}[t]", r"\centering", rf"\caption{{Shape reconstruction on {esc(dataset)}.}}",
                r"\begin{tabular}{ll" + "r" * (len(HEADER) - 2) + "}", r"\toprule",
                " & ".join(esc(h).replace("(°)", r"($^\circ$)") for h in HEADER) + r" \\", r"\midrule"]
        out += [" & ".join(esc(c) for c in _cells(r)) + r" \\" for r in rows if r.dataset == dataset]
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


def to_html(rows: list[Row]) -> str:
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>Shape reconstruction</title>",
           "<style>table{border-collapse:collapse}td,th{padding:4px 8px;border-bottom:1px solid #ccc}"
           "td{text-align:right}td:first-child,td:nth-child(2){text-align:left}</style></head><body>",
           "<h1>Shape reconstruction (SIDE / MAD)</h1>"]
    for dataset in sorted({r.dataset for r in rows}):
        out += [f"<h2>Dataset {html.escape(dataset)}</h2><table><tr>"
                + "".join(f"<th>{html.escape(h)}</th>" for h in HEADER) + "</tr>"]
        out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r)) + "</tr>"
                for r in rows if r.dataset == dataset]
        out.append("</table>")
    out += [f"<p>{html.escape(NOTES)}</p></body></html>"]
    return "\n".join(out)
