"""`vkrama results chart` and `results report` over stored runs (no podman): the image
decodes and shows what it should, and a missing `charts` extra is one clear error."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from bench_fakes import cell, drawn, llama_bench_entry, store_run
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
    drawn(vkrama, "chart", out, "1")
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
    text = drawn(vkrama, "chart", tmp_path / "chart.svg", "latest", "--test", "tg16")
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
    text = drawn(vkrama, "chart", tmp_path / "chart.svg", "1")
    assert text.count('<g id="bar tg16 ') == 2  # the bars: the shallowest depth
    assert '<g id="curve tg16 cpu">' in text and '<g id="curve tg16 vulkan/radv">' in text
    assert "data-depths='yes'" in drawn(vkrama, "report", tmp_path / "report.html", "1")
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


BIG = {"name": "big", "architecture": "llama", "parameter_count": 8_030_261_248,
       "quantization": "Q4_K_M", "size": 4_915_635_904}  # fmt: skip


def two_models() -> None:
    """Run 1 and 3: the tiny F16 on two hosts; run 2: another model (big Q4_K_M), whose
    cells are faster than anything of the tiny one's."""
    store_run(config.load(), cell("cpu", None, 800, 60), cell("vulkan", "radv", 600, 120))
    store_run(config.load(), cell("cpu", None, 9000, 900), cell("vulkan", "radv", 9900, 990),
              model_name="big.gguf", model_sha256="cd" * 32, model=BIG)  # fmt: skip
    store_run(config.load(), cell("cpu", None, 700, 50), cell("vulkan", "radv", 650, 110),
              host="other-host")  # fmt: skip


def panel_texts(svg: str) -> list[str]:
    """Every line of text of the SVG, in order (titles, ticks, legends): matplotlib draws
    text as paths and writes each line beside them as a comment."""
    return re.findall(r"<!-- (.*?) -->", svg)


def test_runs_of_two_models_get_a_row_of_panels_each_named_by_its_model(
    vkrama: Callable[..., Any], tmp_path: Path
) -> None:
    two_models()
    text = drawn(vkrama, "chart", tmp_path / "chart.svg", "1", "2", "3", "--test", "pp64")
    # Two panels (one per model), never one: the tiny model's two runs share a panel, with
    # a bar per run and cell; big's panel has its two cells alone.
    assert text.count('<g id="bar pp64 ') == 6
    assert '<g id="bar pp64 cpu">' in text and '<g id="bar pp64 vulkan/radv">' in text
    assert text.count('<g id="bar pp64 cpu run ') == 2
    texts = panel_texts(text)
    assert texts.count("tiny F16") == 2  # the tiny panel's title and its legend's title
    assert texts.count("big Q4_K_M") == 1  # one run: a title, no legend
    assert texts.index("big Q4_K_M") > texts.index("tiny F16")  # a row each, in run order
    png = tmp_path / "chart.png"
    drawn(vkrama, "chart", png, "1", "2", "3")
    assert Image.open(png).size == (840, 720)  # two panels wide (pp64, tg16), a row a model


def test_compare_refuses_runs_of_two_models(vkrama: Callable[..., Any]) -> None:
    two_models()
    done = vkrama("results", "compare", "1", "2")
    assert done.returncode == ExitStatus.USAGE
    assert done.stderr == (
        "Error: run 1 measured tiny F16 and run 2 big Q4_K_M: a change between two models is"
        " not the stack's\n"
        "Hint: compare two runs of one model; `vkrama results report 1 2` shows both, each"
        " model in its own section\n"
    )
    assert done.stdout == ""
    assert vkrama("results", "compare", "1", "3").returncode == 0  # one model, two hosts


def test_exports_of_two_models_name_the_model_on_every_verdict_line(
    vkrama: Callable[..., Any],
) -> None:
    two_models()
    text = vkrama("results", "export", "1", "2").stdout
    said = [line for line in text.splitlines() if line.startswith("- run ") and "fastest" in line]
    assert said == [
        "- run 1 (tiny F16), pp64: cpu fastest at 800.0 ± 1.0 t/s, 1.33x vulkan/radv: beyond noise",
        "- run 1 (tiny F16), tg16: vulkan/radv fastest at 120.0 ± 1.0 t/s, 2.00x cpu: beyond noise",
        "- run 2 (big Q4_K_M), pp64: vulkan/radv fastest at 9900.0 ± 1.0 t/s, 1.10x cpu: beyond"
        " noise",
        "- run 2 (big Q4_K_M), tg16: vulkan/radv fastest at 990.0 ± 1.0 t/s, 1.10x cpu: beyond"
        " noise",
    ]
    one = vkrama("results", "export", "1", "3").stdout  # one model: the rows say it already
    assert "- run 1, pp64: cpu fastest" in one and "(tiny F16)" not in one
