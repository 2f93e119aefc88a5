"""Stored runs' speed against their energy: t/s over J/token, a labelled point per stack per test.

Stage: report (results ─► images), beside `chart` (bars, depth curves) and `serve_chart`.
Which stack is fast and which is frugal at once: up is faster, left costs less per token.
J/token is the energy above the idle draw per token (`bench.energy`); a test without a
figure (no counter, too short) has no point. A panel holds one model. Pure apart from
matplotlib's own rendering (imported through `chart.require`); must not open the database
or print.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vkrama.results import chart
from vkrama.results.db import RunDetail
from vkrama.results.ranking import cell_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# pp and tg apart at a glance: a stack keeps its colour, a test kind its marker.
MARKERS = {"pp": "o", "tg": "^"}


@dataclass(frozen=True)
class EnergyPoint:
    """One ok test of one stack that has a J/token figure."""

    model: str
    run: str  # the run's label; "" when only one run of this model is drawn
    cell: str  # "cuda", "vulkan/nvidia"
    test: str  # as the row names it: "tg128", "pp512 @ d4096"
    tps: float
    joules_per_token: float


def points(details: Sequence[RunDetail]) -> list[EnergyPoint]:
    found = []
    for model, label, detail in chart.labelled(details):
        for cell in detail.cells:
            for m in cell.measurements if cell.ok else ():
                joules = m.energy.joules_per_token if m.energy is not None else None
                if joules:
                    found.append(EnergyPoint(model, label, cell_name(cell), m.test, m.tps, joules))
    return found


def figure(found: Sequence[EnergyPoint]) -> Figure:
    """A panel per model: t/s (up) against J/token above idle (right), both logarithmic
    (a pp test runs tens of times a tg's rate at a fraction of its cost per token)."""
    chart.require()
    from matplotlib.figure import Figure

    names = chart.models(found) or [""]
    fig = Figure(figsize=(6.4, 4.4 * len(names)), dpi=100, layout="constrained")
    for ax, model in zip(fig.subplots(len(names), 1, squeeze=False)[:, 0], names, strict=True):
        _panel(ax, [p for p in found if p.model == model], model)
    return fig


def _panel(ax: Any, found: list[EnergyPoint], model: str) -> None:
    cells = list(dict.fromkeys(p.cell for p in found))
    for point in found:
        colour = chart.PALETTE[cells.index(point.cell) % len(chart.PALETTE)]
        marker = MARKERS.get(point.test[:2], "s")
        drawn = ax.scatter([point.joules_per_token], [point.tps], s=48, color=colour,
                           marker=marker, zorder=3)  # fmt: skip
        drawn.set_gid(f"energy {point.test} {point.cell} {point.run}".strip())
        label = f"{point.cell} {point.test}" + (f" ({point.run})" if point.run else "")
        ax.annotate(label, (point.joules_per_token, point.tps), textcoords="offset points",
                    xytext=(5, 4), fontsize=7)  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.margins(0.2)  # room for the labels of the outermost points
    ax.set_xlabel("J/token above the idle draw (left: less energy per token)")
    ax.set_ylabel("tokens/s (up: faster)")
    title = "speed against energy, a point per stack and test"
    ax.set_title(f"{model}\n{title}" if model else title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.spines[["top", "right"]].set_visible(False)
