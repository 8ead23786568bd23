"""Published figures to print beside ours (``anchors.md`` section A.2). BFM synface, SIDE x10^-2, MAD degrees.

``None`` marks a figure that was not published or not retrieved. Rows tagged recalled come from the Unsup3d and
GAN2Shape papers as recalled in the project's notes and are flagged as such in every table.
"""

from __future__ import annotations

from typing import NamedTuple


class PaperRow(NamedTuple):
    side: float | None
    side_std: float | None
    mad: float | None
    mad_std: float | None
    source: str


#: (method, ablation) -> published BFM figures.
BFM_TABLE: dict[tuple[str, str], PaperRow] = {
    ("supervised", "none"): PaperRow(0.410, 0.103, 10.78, 1.01, "Unsup3d Table 2 (recalled)"),
    ("const_depth", "none"): PaperRow(2.723, 0.371, 43.34, 2.25, "Unsup3d Table 2 (recalled)"),
    ("avg_depth", "none"): PaperRow(1.990, 0.556, 23.26, 2.85, "Unsup3d Table 2 (recalled)"),
    ("unsup3d", "none"): PaperRow(0.793, 0.140, 16.51, 1.56, "Unsup3d Table 2, quoted in elliottwu/unsup3d#15"),
    ("gan2shape", "none"): PaperRow(0.756, None, 14.81, None, "GAN2Shape (recalled, unverified)"),
}
