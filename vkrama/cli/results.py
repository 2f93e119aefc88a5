"""`vkrama results`: list, show, compare, export, report and chart stored bench runs.

Stage: CLI shell over `vkrama.results` (the SQLite store) and `vkrama.results.report` (rendering).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vkrama import results
from vkrama.bench import imports
from vkrama.cli.app import App, pass_app
from vkrama.cli.console import echo_json
from vkrama.errors import ExitStatus, VkramaError
from vkrama.results import chart, html, report, serve_chart
from vkrama.results.scoreboard import scoreboard
from vkrama.store.blobs import write_atomic

EXPORT_FORMATS = ("md", "csv", "json", "scoreboard")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def results_group() -> None:
    """Stored bench runs: list, show, compare, export, report, chart."""


@results_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Runs as JSON.")
@pass_app
def list_runs(app: App, as_json: bool) -> None:
    """Every stored run, newest first."""
    results.abandon_dead_runs(app.settings)  # a run whose vkrama died is not "running"
    records = results.list_runs(app.settings)
    if as_json:
        echo_json(
            [
                {
                    "id": r.id,
                    "status": r.status,
                    "finished": r.finished,
                    "cells": r.cell_count,
                    "cells_ok": r.ok_count,
                    **vars(r.info),
                }
                for r in records
            ]
        )
    elif records:
        click.echo(report.runs_table(records))
    else:
        click.echo("No bench runs stored yet; `vkrama bench MODEL` makes one.")


@results_group.command("show")
@click.argument("run", default="latest")
@click.option("--json", "as_json", is_flag=True, help="The run, its cells and provenance as JSON.")
@pass_app
def show(app: App, run: str, as_json: bool) -> None:
    """One run (an id, or `latest`) with its cells and their images' provenance."""
    results.abandon_dead_runs(app.settings)
    detail = results.get_run(app.settings, run)
    if as_json:
        echo_json(report.export_document([detail]))
        return
    for line in report.run_header(detail):
        click.echo(line)
    click.echo()
    click.echo(report.run_table(detail))
    click.echo()
    click.echo(report.provenance_table(detail))


@results_group.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--json", "as_json", is_flag=True, help="Changes as JSON.")
@pass_app
def compare(app: App, run_a: str, run_b: str, as_json: bool) -> None:
    """Per-cell change from RUN_A to RUN_B (two runs of one model), and whether it exceeds
    the noise (2 σ)."""
    a = results.get_run(app.settings, run_a)
    b = results.get_run(app.settings, run_b)
    changes = results.compare(a, b)
    if as_json:
        echo_json(changes)
        return
    click.echo(
        f"A = run {a.run.id} ({a.run.info.started}), B = run {b.run.id} ({b.run.info.started})"
    )
    click.echo(report.compare_table(changes))


@results_group.command("import")
@click.argument("source", metavar="FILE|-")
@click.option("--json", "as_json", is_flag=True, help="The stored runs as JSON.")
@pass_app
def import_runs(app: App, source: str, as_json: bool) -> None:
    """Add runs from other machines: fleet Job output or `results export --format json`."""
    text = sys.stdin.read() if source == "-" else read_text(Path(source))
    found = imports.import_text(app.settings, text, "stdin" if source == "-" else source)
    if as_json:
        echo_json(found)
        return
    for run in found:
        click.echo(f"stored run {run.run_id} from {run.host}: {run.ok}/{run.cells} cells ok")


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VkramaError(
            f"cannot read {path}: {exc.strerror}",
            hint="give a file of fleet Job output or a JSON export, or - for stdin",
            status=ExitStatus.NOT_FOUND,
        ) from None


@results_group.command("export")
@click.argument("runs", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="md", show_default=True)
@pass_app
def export(app: App, runs: tuple[str, ...], fmt: str) -> None:
    """Runs as a markdown table (for a blog post), CSV, JSON, or the llama.cpp scoreboards'
    table (`scoreboard`: llama-bench's columns, with GPU, driver and stack versions above)."""
    details = [results.get_run(app.settings, run) for run in runs]
    if fmt == "scoreboard":
        click.echo("\n\n".join(scoreboard(d) for d in details))
        return
    if fmt == "json":
        echo_json(report.export_document(details))
        return
    try:
        click.echo(report.export(details, fmt).rstrip("\n"))
    except ValueError as error:
        raise VkramaError(
            f"cannot export these runs as {fmt}: {error}",
            hint="export serving runs (bench --serve) and llama-bench runs separately",
            status=ExitStatus.USAGE,
        ) from None


@results_group.command("report")
@click.argument("runs", nargs=-1, required=True)
@click.option("-o", "--output", default="report.html", show_default=True, help="The HTML file.")
@pass_app
def report_html(app: App, runs: tuple[str, ...], output: str) -> None:
    """One self-contained HTML page of RUNS side by side: charts (with the `charts` extra),
    verdicts, every number, provenance and exact parameters. Opens offline."""
    details = [results.get_run(app.settings, run) for run in runs]
    write_atomic(Path(output), html.render(details))
    click.echo(output)


@results_group.command("chart")
@click.argument("runs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="chart.png or chart.svg")
@click.option("--test", "only", default=None, help="Draw one test only (e.g. tg128).")
@pass_app
def chart_image(app: App, runs: tuple[str, ...], output: str, only: str | None) -> None:
    """One image of RUNS to paste into an issue or a post: a bar per cell for each test
    (± stddev), and curves over depth; for `bench --serve` runs, TTFT p90 and throughput
    against load, a curve per stack. Needs `pip install 'vkrama[charts]'`."""
    if not output.lower().endswith((".png", ".svg")):
        raise VkramaError(
            f"-o {output}: a chart is a .png or .svg file",
            hint="e.g. -o chart.png",
            status=ExitStatus.USAGE,
        )
    details = [results.get_run(app.settings, run) for run in runs]
    found = chart.points(details)
    loaded = serve_chart.load_points(details)
    if loaded and not found and only is None:
        image = chart.render(serve_chart.figure(loaded), Path(output).suffix[1:].lower())
        Path(output).write_bytes(image)
        click.echo(output)
        return
    if only is not None and only not in chart.tests(found):
        raise VkramaError(
            f"--test {only}: no such test in these runs",
            hint=f"they measured {', '.join(chart.tests(found)) or 'nothing'}",
            status=ExitStatus.USAGE,
        )
    image = chart.render(chart.figure(found, only), Path(output).suffix[1:].lower())
    Path(output).write_bytes(image)  # rendered whole first: a failure leaves no file
    click.echo(output)
