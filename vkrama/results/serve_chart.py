"""Serving runs drawn against load: TTFT p90 and total throughput, a curve per stack.

Stage: report (results ─► images), beside `chart` (llama-bench's bars and depth curves),
whose matplotlib set-up, palette and SVG/PNG rendering it uses. The load axis is the number
of clients for closed-loop levels and the request rate for open-loop ones (two axes, two
pairs of panels: they are not the same quantity), and a row of panels per model, each naming
it, as `chart` does. Pure apart from matplotlib's own
rendering; must not open the database or print.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vkrama.results import chart
from vkrama.results.db import RunDetail
from vkrama.results.ranking import cell_name, model_labels

if TYPE_CHECKING:
    from matplotlib.figure import Figure

AXES = {"clients": "clients at once (closed loop)", "rate": "requests/s sent (open loop)"}


@dataclass(frozen=True)
class LoadPoint:
    """One level of one stack: where it sits on the load axis and what it measured."""

    model: str  # the model's label: one panel never holds two models' levels
    run: str  # the run's label; "" when only one run of this model is drawn
    cell: str  # "vulkan/lavapipe"
    axis: str  # "clients" or "rate"
    load: float
    ttft_p90_ms: float
    output_tps: float


def load_points(details: Sequence[RunDetail]) -> list[LoadPoint]:
    """Every answered level of the runs' ok cells. Levels with the prompt cache on are left
    out (they measure the cache, not the load); a burst has no rate to place it at."""
    labels = model_labels(details)
    runs = [d.run.info.model_key for d in details]
    found = []
    for detail in details:
        key = detail.run.info.model_key
        label = chart.run_label(detail) if runs.count(key) > 1 else ""
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
                found.append(LoadPoint(labels[key], label, cell_name(cell), axis, load,
                                       level.ttft_ms.p90, level.output_tps))  # fmt: skip
    return found


def figure(found: Sequence[LoadPoint]) -> Figure:
    """TTFT p90 and throughput against load, side by side, for each load axis present; a
    row of panels per model."""
    chart.require()
    from matplotlib.figure import Figure

    rows = []
    for model in chart.models(found) or [""]:
        mine = [p for p in found if p.model == model]
        axes = [axis for axis in AXES if any(p.axis == axis for p in mine)]
        rows.append((mine, [(axis, shown) for axis in axes for shown in ("ttft", "tps")]))
    width = max([len(panels) for _, panels in rows] + [1])
    fig = Figure(figsize=(4.2 * width, 3.6 * len(rows)), dpi=100, layout="constrained")
    for row, (mine, panels) in zip(fig.subplots(len(rows), width, squeeze=False), rows,
                                   strict=True):  # fmt: skip
        for ax, (axis, shown) in zip(row, panels, strict=False):
            _curves(ax, [p for p in mine if p.axis == axis], axis, shown)
        for ax in row[len(panels) :]:
            ax.remove()
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
    chart.finish(ax, found[0].model, f"{title} against load", legend=True, grid="both")
