"""`vkrama results chart` and `results report` over stored runs (no podman): the image
decodes and shows what it should, and a missing `charts` extra is one clear error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from bench_fakes import cell, llama_bench_entry, store_run
from PIL import Image

from vkrama import config
from vkrama.errors import ExitStatus
from vkrama.results.chart import PALETTE
from vkrama.results.records import CellResult, Measurement


def three_cells() -> None:
    store_run(
        config.load(),
        cell("cpu", None, 800, 60, sd=20),
        cell("vulkan", "lavapipe", 370, 90, sd=15),
        cell("vulkan", "radv", 600, 120, sd=10),
    )


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def segments(row: list[tuple[int, int, int]], colour: tuple[int, int, int]) -> int:
    """Runs of `colour` along a pixel row; gaps of up to 4 px (an error bar's line drawn
    over the bar) do not split a run."""
    count, gap = 0, None
    for pixel in row:
        close = all(abs(a - b) <= 8 for a, b in zip(pixel, colour, strict=True))
        if close:
            count += gap is None or gap > 4
            gap = 0
        elif gap is not None:
            gap += 1
    return count


def test_png_has_one_bar_per_cell_in_each_tests_panel(
    vkrama: Callable[..., Any], tmp_path: Path
) -> None:
    three_cells()
    out = tmp_path / "chart.png"
    done = vkrama("results", "chart", "1", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{out}\n"
    image = Image.open(out).convert("RGB")
    assert image.size == (840, 360)  # two panels (pp64, tg16), 4.2 x 3.6 in each at 100 dpi
    pixels: list[list[Any]] = [
        [image.getpixel((x, y)) for x in range(image.width)] for y in range(image.height)
    ]
    first = rgb(PALETTE[0])
    bottom = max(y for y, row in enumerate(pixels) if first in row)
    row = pixels[bottom - 2]  # just above the x axis, where every bar is
    assert [segments(row, rgb(c)) for c in PALETTE[:4]] == [2, 2, 2, 0]
    assert image.getpixel((0, 0)) == (255, 255, 255)


def test_svg_chart_names_each_bar(vkrama: Callable[..., Any], tmp_path: Path) -> None:
    three_cells()
    out = tmp_path / "chart.svg"
    assert vkrama("results", "chart", "latest", "-o", str(out), "--test", "tg16").returncode == 0
    text = out.read_text()
    assert text.count('<g id="bar tg16 ') == 3 and "pp64" not in text
    assert "<dc:date>" not in text


def test_depth_curves_are_drawn_when_a_run_measured_several_depths(
    vkrama: Callable[..., Any], tmp_path: Path
) -> None:
    def deep(backend: str, driver: str | None, rates: list[float]) -> CellResult:
        found = tuple(
            Measurement(f"tg16 @ d{d}", 0, 16, r, 1.0, (r - 1, r + 1), "X", "", n_depth=d)
            for d, r in zip((0, 256, 1024), rates, strict=True)
        )
        raw = [llama_bench_entry(backend, m, d) for m, d in zip(found, (0, 256, 1024), strict=True)]
        return replace(cell(backend, driver, 0, 0), measurements=found, raw_json=raw)

    store_run(config.load(), deep("cpu", None, [60, 50, 30]), deep("vulkan", "radv", [90, 85, 80]))
    out = tmp_path / "chart.svg"
    assert vkrama("results", "chart", "1", "-o", str(out)).returncode == 0
    text = out.read_text()
    assert text.count('<g id="bar tg16 ') == 2  # the bars: the shallowest depth
    assert '<g id="curve tg16 cpu">' in text and '<g id="curve tg16 vulkan/radv">' in text
    report = tmp_path / "report.html"
    assert vkrama("results", "report", "1", "-o", str(report)).returncode == 0
    assert "data-depths='yes'" in report.read_text()
    board = vkrama("results", "export", "1", "--format", "scoreboard").stdout
    assert "| tg16 @ d1024 |" in board.replace("  ", "")


@pytest.fixture
def without_matplotlib(tmp_path: Path) -> dict[str, str]:
    """An environment whose `import matplotlib` fails, as on a host without the extra."""
    hidden = tmp_path / "hide" / "matplotlib"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    return {"PYTHONPATH": str(hidden.parent)}


def test_chart_without_the_extra_is_one_error_with_the_pip_line(
    vkrama: Callable[..., Any], tmp_path: Path, without_matplotlib: dict[str, str]
) -> None:
    three_cells()
    done = vkrama("results", "chart", "1", "-o", str(tmp_path / "c.png"), env=without_matplotlib)
    assert done.returncode == ExitStatus.MISSING_EXTRA
    assert done.stderr == (
        "Error: charts need matplotlib, which is not installed\n"
        "Hint: pip install 'vkrama[charts]' (matplotlib draws the charts)\n"
    )
    assert not (tmp_path / "c.png").exists()


def test_report_without_the_extra_still_has_every_table(
    vkrama: Callable[..., Any], tmp_path: Path, without_matplotlib: dict[str, str]
) -> None:
    three_cells()
    out = tmp_path / "r.html"
    done = vkrama("results", "report", "1", "-o", str(out), env=without_matplotlib)
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    assert "<svg" not in page and "pip install &#x27;vkrama[charts]&#x27;" in page
    assert page.count("<td>vulkan/radv</td>") == 4  # results (pp, tg), provenance, command


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-o", "chart.jpg"), "Error: -o chart.jpg: a chart is a .png or .svg file"),
        (("-o", "c.png", "--test", "pp512"), "Error: --test pp512: no such test in these runs"),
    ],
    ids=["unknown-image-format", "test-the-runs-did-not-measure"],
)
def test_bad_chart_flags_are_usage_errors(
    vkrama: Callable[..., Any], args: tuple[str, ...], message: str
) -> None:
    three_cells()
    done = vkrama("results", "chart", "1", *args)
    assert done.returncode == ExitStatus.USAGE
    assert done.stderr.splitlines()[0] == message
