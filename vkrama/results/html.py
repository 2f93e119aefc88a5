"""Stored runs as one self-contained HTML page: charts, verdicts, tables, provenance.

Stage: report (results ─► HTML). The page carries everything it shows: inline CSS and the
charts as inline SVG (results/chart.py, matplotlib), no script and no external reference;
its Content-Security-Policy forbids fetching anything, so a viewer's browser stays
offline. Without the `vkrama[charts]` extra the page has every table and says how to get
the charts. Runs of several models get a section of charts per model, and every verdict and
result row names its model: nothing on the page sets a 7B result beside an 8B one.
Pure: RunDetails in, a string out; must not open the database or print.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape

from vkrama import __version__
from vkrama.errors import VkramaError
from vkrama.results import chart, energy_chart, serve_chart
from vkrama.results.db import RunDetail
from vkrama.results.energy import Energy
from vkrama.results.ranking import cell_name, model_labels, unranked, verdicts
from vkrama.results.report import model_facts, rows_of, stack

# default-src 'none': no script, font, image or stylesheet may be fetched from anywhere;
# the page's own <style> and the inline SVG are all it needs.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 78em; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
h3 { font-size: 1.05em; margin: 1.2em 0 0.4em; }
figure.chart { margin: 0; }
figure.chart svg { max-width: 100%; height: auto; }
.runs { display: flex; flex-wrap: wrap; gap: 1em; }
.run { border: 1px solid #ddd; padding: 0.5em 1em; flex: 1 1 30em; }
.run td { word-break: break-all; }
.verdict.noise { color: #777; }
.failed { color: #a00; }
.note { background: #fff6d5; padding: 0.5em 1em; }
code, pre { font-size: 12px; }
pre { white-space: pre-wrap; word-break: break-all; }
"""


def render(details: Sequence[RunDetail]) -> str:
    """The whole page for one or more runs (several hosts or dates side by side)."""
    title = "vkrama bench: " + ", ".join(_title(d) for d in details)
    body = [
        f"<h1>{escape(title)}</h1>",
        f"<p>Made by vkrama {escape(__version__)}. Every number is llama-bench's mean tokens/s"
        " ± its standard deviation over the repetitions; a verdict is <em>beyond noise</em>"
        " when the gap exceeds two combined standard deviations.</p>",
        _runs(details),
        _charts(details),
        _verdicts(details),
        _results(details),
        _provenance(details),
        _parameters(details),
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _title(detail: RunDetail) -> str:
    info = detail.run.info
    return f"{info.model.get('name') or info.model_name} on {info.host}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    lines = []
    for row in rows:
        cells = []
        for value in row:
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            text = f"{value:.2f}" if isinstance(value, float) else str(value)
            cells.append(f"<td class='num'>{escape(text)}</td>" if numeric else
                         f"<td>{escape(text)}</td>")  # fmt: skip
        lines.append(f"<tr>{''.join(cells)}</tr>")
    body = "".join(lines)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _runs(details: Sequence[RunDetail]) -> str:
    boxes = []
    for d in details:
        info = d.run.info
        gpus = "; ".join(
            f"{g.get('name')} [{g.get('ids')}], kernel driver {g.get('kernel_driver') or 'none'}"
            for g in info.gpus
        )
        facts = [
            ("run", f"{d.run.id} ({d.run.status}), {info.started}"),
            ("host", f"{info.host}, kernel {info.kernel}"),
            ("GPU", gpus or "none"),
            ("model", model_facts(info)),
            ("sha256", info.model_sha256),
            ("vkrama", info.vkrama_version),
        ]
        rows = "".join(f"<tr><th>{k}</th><td>{escape(v)}</td></tr>" for k, v in facts)
        boxes.append(f"<div class='run'><table>{rows}</table></div>")
    return f"<h2>Runs</h2><div class='runs'>{''.join(boxes)}</div>"


def _charts(details: Sequence[RunDetail]) -> str:
    found = chart.points(details)
    loaded = serve_chart.load_points(details)
    drew = energy_chart.points(details)
    if not found and not loaded:
        return "<h2>Charts</h2><p>No cell measured anything.</p>"
    try:
        chart.require()
    except VkramaError as missing:
        return (
            f"<h2>Charts</h2><p class='note'>No charts in this report: {escape(missing.message)}."
            f" {escape(missing.hint or '')}. The tables below have every number.</p>"
        )
    sections = []
    for model in chart.models([*found, *loaded]):
        mine = [p for p in found if p.model == model]
        figures = []
        for test in chart.tests(mine):
            drawn = chart.svg(chart.figure(mine, only=test))
            curves = " data-depths='yes'" if chart.has_depths(mine, test) else ""
            figures.append(
                f"<figure class='chart' data-test='{escape(test)}'{curves}>{drawn}</figure>"
            )
        frugal = [p for p in drew if p.model == model]
        if frugal:  # tests with a J/token figure: speed against energy, a point per stack
            drawn = chart.svg(energy_chart.figure(frugal))
            figures.append(f"<figure class='chart' data-test='energy'>{drawn}</figure>")
        load = [p for p in loaded if p.model == model]
        if load:  # a serving run: TTFT p90 and throughput against load, per stack
            drawn = chart.svg(serve_chart.figure(load))
            figures.append(f"<figure class='chart' data-test='load'>{drawn}</figure>")
        sections.append(
            f"<section class='model' data-model='{escape(model)}'><h3>{escape(model)}</h3>"
            f"<div class='charts'>{''.join(figures)}</div></section>"
        )
    return f"<h2>Charts</h2>{''.join(sections)}"


def _verdicts(details: Sequence[RunDetail]) -> str:
    items = []
    labels = model_labels(details)
    for d in details:
        for v in verdicts(d.cells):
            model = labels[d.run.info.model_key]
            where = f"{chart.run_label(d)}, {model}: " if len(details) > 1 else ""
            cls = "verdict" if v.significant or v.ratio is None else "verdict noise"
            items.append(f"<li class='{cls}'>{escape(where + v.line)}</li>")
        for line in filter(None, map(unranked, d.cells)):
            where = f"{chart.run_label(d)}, {model}: " if len(details) > 1 else ""
            items.append(f"<li class='verdict unranked'>{escape(where + line)}</li>")
    return "<h2>Verdicts</h2>" + (f"<ul>{''.join(items)}</ul>" if items else "<p>None.</p>")


def _results(details: Sequence[RunDetail]) -> str:
    rows = []
    labels = model_labels(details)
    for d in details:
        for r in rows_of(d):
            rows.append([
                d.run.id, labels[d.run.info.model_key], d.run.info.host,
                f"{r.backend}/{r.driver}" if r.driver else r.backend,
                r.device, r.test, "-" if r.tps is None else r.tps,
                "-" if r.tps_stddev is None else r.tps_stddev, len(r.samples),
                "-" if r.relative is None else f"{r.relative:.2f}x",
                *_drew(r.energy),
                r.status + (f": {r.reason}" if r.reason else "")
                + (f"; output {r.output}" if r.output else ""),
            ])  # fmt: skip
    headers = ["run", "model", "host", "cell", "device", "test", "t/s", "stddev", "samples",
               "relative", "W", "J/token above idle", "status"]  # fmt: skip
    # "relative" is to the fastest cell of the same run and test: one model, one depth.
    return "<h2>Results</h2>" + _table(headers, rows, "results")


def _drew(energy: Energy | None) -> tuple[str, str]:
    """(W, J/token) as the row shows them: "-" where none was measured, the reason in the
    J/token cell where the counter gave none ("no power counter: ...")."""
    if energy is None:
        return "-", "-"
    watts = "-" if energy.watts is None else f"{energy.watts:.1f}"
    per_token = energy.joules_per_token
    return watts, (energy.note or "-") if per_token is None else f"{per_token:.3g}"


def _provenance(details: Sequence[RunDetail]) -> str:
    rows = []
    for d in details:
        info = d.run.info
        gpu = ", ".join(f"{g.get('name')} ({g.get('kernel_driver') or '-'})" for g in info.gpus)
        for c in d.cells:
            p = c.provenance
            rows.append([
                d.run.id, info.host, gpu or "none", cell_name(c), c.image or "-",
                (c.image_id or "-").removeprefix("sha256:")[:12], p.get("llama_cpp_build", "-"),
                p.get("ggml_version", "-"), stack(p), p.get("vkrama_version", "-"),
            ])  # fmt: skip
    headers = ["run", "host", "GPU (kernel driver)", "cell", "image", "image id",
               "llama.cpp build", "ggml", "Mesa / ROCm / CUDA", "image's vkrama"]  # fmt: skip
    return "<h2>Provenance</h2>" + _table(headers, rows, "provenance")


def _parameters(details: Sequence[RunDetail]) -> str:
    parts = ["<h2>Exact parameters</h2>"]
    for d in details:
        params = json.dumps(d.run.info.params, sort_keys=True)
        parts.append(f"<h3>run {d.run.id}</h3><p>parameters: <code>{escape(params)}</code></p>")
        commands = [[cell_name(c), " ".join(c.command) or "-"] for c in d.cells]
        parts.append(_table(["cell", "llama-bench command"], commands, "commands"))
    return "\n".join(parts)
