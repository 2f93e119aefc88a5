"""Serving runs drawn against load: TTFT p90 and total throughput, a curve per stack.

Stage: report (results ─► images), beside `chart` (llama-bench's bars and depth curves),
whose matplotlib set-up, palette and SVG/PNG rendering it uses. The load axis is the number
of clients for closed-loop levels and the request rate for open-loop ones (two axes, two
pairs of panels: they are not the same quantity). Pure apart from matplotlib's own
rendering; must not open the database or print.
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

AXES = {"clients": "clients at once (closed loop)", "rate": "requests/s sent (open loop)"}


@dataclass(frozen=True)
class LoadPoint:
    """One level of one stack: where it sits on the load axis and what it measured."""

    run: str  # the run's label; "" when only one run is drawn
    cell: str  # "vulkan/lavapipe"
    axis: str  # "clients" or "rate"
    load: float
    ttft_p90_ms: float
    output_tps: float


def load_points(details: Sequence[RunDetail]) -> list[LoadPoint]:
    """Every answered level of the runs' ok cells. Levels with the prompt cache on are left
    out (they measure the cache, not the load); a burst has no rate to place it at."""
    found = []
    for detail in details:
        label = chart.run_label(detail) if len(details) > 1 else ""
        for cell in detail.cells:
            for level in cell.serving if cell.ok else ():
                if level.prompt_cache or level.ttft_ms is None:
                    continue
                if level.arrival is None:
                    axis, load = "clients", float(level.concurrency)
                elif level.rate is not None:
                    axis, load = "rate", level.rate
                else:
                    continue
                found.append(LoadPoint(label, cell_name(cell), axis, load, level.ttft_ms.p90,
                                       level.output_tps))  # fmt: skip
    return found


def figure(found: Sequence[LoadPoint]) -> Figure:
    """TTFT p90 and throughput against load, side by side, for each load axis present."""
    chart.require()
    from matplotlib.figure import Figure

    axes = [axis for axis in AXES if any(p.axis == axis for p in found)]
    panels = [(axis, shown) for axis in axes for shown in ("ttft", "tps")]
    fig = Figure(figsize=(4.2 * max(len(panels), 1), 3.6), dpi=100, layout="constrained")
    for ax, (axis, shown) in zip(fig.subplots(1, max(len(panels), 1), squeeze=False)[0],
                                 panels, strict=False):  # fmt: skip
        _curves(ax, [p for p in found if p.axis == axis], axis, shown)
    return fig


def _curves(ax: Any, found: list[LoadPoint], axis: str, shown: str) -> None:
    lines = list(dict.fromkeys((p.run, p.cell) for p in found))
    for i, (run, cell) in enumerate(lines):
        mine = sorted((p for p in found if (p.run, p.cell) == (run, cell)), key=lambda p: p.load)
        values = [p.ttft_p90_ms if shown == "ttft" else p.output_tps for p in mine]
        (line,) = ax.plot([p.load for p in mine], values, marker="o",
                          color=chart.PALETTE[i % len(chart.PALETTE)],
                          label=f"{cell}, {run}" if run else cell)  # fmt: skip
        line.set_gid(f"load {shown} {axis} {cell} {run}".strip())
    if axis == "clients" or len({p.load for p in found}) > 2:
        ax.set_xscale("log", base=2)  # levels usually double: 1, 4, 16 clients
        ax.xaxis.set_major_formatter(lambda value, _: f"{value:g}")  # 0.25, not 2^-2
    ax.set_xlabel(AXES[axis])
    title = "TTFT p90 (ms)" if shown == "ttft" else "output tokens/s, all requests"
    ax.set_title(f"{title} against load", fontsize=10)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8)
