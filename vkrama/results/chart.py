"""Stored runs drawn as charts: a bar per cell for each test, a curve per cell over depth.

Stage: report (results ─► images). One drawing serves the HTML report (inline SVG) and
`results chart -o FILE` (PNG or SVG). A panel only ever holds one model's results (a row of
panels per model), and its title and legend name the model: a 7B bar beside an 8B bar
would read as a stack's speed. matplotlib is the optional extra `vkrama[charts]`:
it is imported only here and only when a chart is asked for; without it `require()`
raises MISSING_EXTRA with the pip line. Pure apart from matplotlib's own rendering; must
not open the database or print.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vkrama.errors import ExitStatus, VkramaError
from vkrama.results.db import RunDetail
from vkrama.results.ranking import cell_name, model_labels
from vkrama.results.records import Measurement

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Okabe-Ito: told apart by colour-blind readers too; the first is the first cell's colour.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442")
INSTALL_HINT = "pip install 'vkrama[charts]' (matplotlib draws the charts)"
_DEPTH = re.compile(r" @ d(\d+)")


@dataclass(frozen=True)
class Point:
    """One measured (model, run, cell, test, depth): what a bar or a curve's point shows."""

    model: str  # the model's label ("llama-3.1-8b-shape Q4_K_M"): panels never mix two
    run: str  # the run's label; "" when only one run of this model is drawn
    cell: str  # "vulkan/lavapipe"
    test: str  # the test without its depth: "pp512", "tg128 fa=on"
    depth: int
    tps: float
    tps_stddev: float


def require() -> Any:
    """matplotlib, set up to draw without a display; MISSING_EXTRA when it is not installed."""
    try:
        import matplotlib
    except ImportError:
        raise VkramaError(
            "charts need matplotlib, which is not installed",
            hint=INSTALL_HINT,
            status=ExitStatus.MISSING_EXTRA,
        ) from None
    matplotlib.use("Agg")
    return matplotlib


def run_label(detail: RunDetail) -> str:
    info = detail.run.info
    return f"run {detail.run.id}, {info.host}, {info.started[:10]}"


def labelled(details: Sequence[RunDetail]) -> list[tuple[str, str, RunDetail]]:
    """Each run with its model's label, and its own label only when its model has several
    runs here ("" otherwise): what every chart's points carry."""
    labels = model_labels(details)
    runs = [d.run.info.model_key for d in details]
    return [
        (labels[key], run_label(d) if runs.count(key) > 1 else "", d)
        for d in details
        for key in (d.run.info.model_key,)
    ]


def points(details: Sequence[RunDetail]) -> list[Point]:
    """Every ok measurement of the runs, labelled by model, and by run only when its model
    has several runs here."""
    found = []
    for model, label, detail in labelled(details):
        for cell in detail.cells:
            name = cell_name(cell)
            for m in cell.measurements if cell.ok else ():
                test, depth = split_depth(m)
                found.append(Point(model, label, name, test, depth, m.tps, m.tps_stddev))
    return found


def models(found: Sequence[Any]) -> list[str]:
    """The models of these points (anything with a `model`), in order of appearance."""
    return list(dict.fromkeys(p.model for p in found))


def split_depth(m: Measurement) -> tuple[str, int]:
    """(test without its " @ dN", depth): depth is an axis of the curves, not a test."""
    return _DEPTH.sub("", m.test), m.n_depth


def tests(found: Sequence[Point]) -> list[str]:
    return list(dict.fromkeys(p.test for p in found))


def has_depths(found: Sequence[Point], test: str) -> bool:
    return len({p.depth for p in found if p.test == test}) > 1


def figure(found: Sequence[Point], only: str | None = None) -> Figure:
    """One figure, a row per model: a bar panel per test (at the smallest depth), then a
    depth-curve panel per test measured at several depths. `only` draws one test's panels."""
    require()
    from matplotlib.figure import Figure

    rows = []
    for model in models(found) or [""]:
        mine = [p for p in found if p.model == model]
        names = [t for t in tests(mine) if only in (None, t)]
        rows.append((mine, [(t, False) for t in names] +
                     [(t, True) for t in names if has_depths(mine, t)]))  # fmt: skip
    rows = [row for row in rows if row[1]] or rows[:1]  # `only`: the models that measured it
    width = max([len(panels) for _, panels in rows] + [1])
    fig = Figure(figsize=(4.2 * width, 3.6 * len(rows)), dpi=100, layout="constrained")
    grid = fig.subplots(len(rows), width, squeeze=False)
    for axes, (mine, panels) in zip(grid, rows, strict=True):
        for ax, (test, curve) in zip(axes, panels, strict=False):
            (_curves if curve else _bars)(ax, [p for p in mine if p.test == test], test)
        for ax in axes[max(len(panels), 1) :]:
            ax.remove()  # a model that measured fewer tests leaves its row short
    return fig


def _bars(ax: Any, found: list[Point], test: str) -> None:
    shallow = min(p.depth for p in found)
    found = [p for p in found if p.depth == shallow]
    cells = list(dict.fromkeys(p.cell for p in found))
    runs = list(dict.fromkeys(p.run for p in found))
    width = 0.7 / len(runs)
    for r, run in enumerate(runs):
        for c, cell in enumerate(cells):
            point = next((p for p in found if p.run == run and p.cell == cell), None)
            if point is None:
                continue
            x = c - 0.35 + width * (r + 0.5)
            # Several runs: a colour per run (the legend); one run: a colour per cell.
            colour = PALETTE[(r if len(runs) > 1 else c) % len(PALETTE)]
            # The lower whisker stops at 0: a rate below zero means nothing.
            low = min(point.tps_stddev, point.tps)
            label = run if run and c == 0 else None  # one legend entry per run
            bar = ax.bar(x, point.tps, width * 0.9, color=colour, label=label,
                         yerr=[[low], [point.tps_stddev]], capsize=3,
                         error_kw={"elinewidth": 1, "ecolor": "#333333"})  # fmt: skip
            bar.patches[0].set_gid(f"bar {test} {cell} {run}".strip())
    ax.set_xticks(range(len(cells)), cells, rotation=15 if len(cells) > 3 else 0)
    depth = f" at depth {shallow}" if shallow else ""
    finish(ax, found[0].model, f"{test}{depth}: tokens/s (± stddev)", legend=len(runs) > 1)


def _curves(ax: Any, found: list[Point], test: str) -> None:
    lines = list(dict.fromkeys((p.run, p.cell) for p in found))
    for i, (run, cell) in enumerate(lines):
        mine = sorted((p for p in found if (p.run, p.cell) == (run, cell)), key=lambda p: p.depth)
        drawn = ax.errorbar([p.depth for p in mine], [p.tps for p in mine],
                            yerr=[p.tps_stddev for p in mine], marker="o", capsize=3,
                            color=PALETTE[i % len(PALETTE)],
                            label=f"{cell}, {run}" if run else cell)  # fmt: skip
        drawn.lines[0].set_gid(f"curve {test} {cell} {run}".strip())
    ax.set_xlabel("depth (tokens already in the context)")
    finish(ax, found[0].model, f"{test} over depth: tokens/s (± stddev)", legend=True)


def finish(ax: Any, model: str, title: str, legend: bool, grid: str = "y") -> None:
    """The panel's title and legend name its model: a panel shown alone (the HTML report
    draws a figure per test, a reader crops a PNG) still says what it measured."""
    ax.set_title(f"{model}\n{title}" if model else title, fontsize=10)
    ax.set_ylim(bottom=0)
    ax.grid(axis=grid, alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    if legend:
        ax.legend(fontsize=8, title=model or None, title_fontsize=8)


def svg(fig: Figure) -> str:
    """The figure as an `<svg>` element to inline in HTML: text stays text (the browser's
    own fonts), no XML prolog, no date, ids stable from one report to the next."""
    matplotlib = require()
    out = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "vkrama"}):
        fig.savefig(out, format="svg", metadata={"Date": None})
    text = out.getvalue()
    text = text[text.index("<svg") :]
    # The RDF metadata block says only "made by matplotlib"; inline, it is noise.
    start, end = text.find("<metadata>"), text.find("</metadata>")
    return text[:start] + text[end + len("</metadata>") :] if 0 <= start < end else text


def render(fig: Figure, fmt: str) -> bytes:
    """The figure as PNG or SVG bytes (neither carries a date: the same runs, the same file)."""
    require()
    out = io.BytesIO()
    fig.savefig(out, format=fmt, metadata={"Date": None} if fmt == "svg" else {})
    return out.getvalue()
