"""`vkrama results report` of real runs, opened in a real headless chromium.

One real bench (cpu + vulkan on lavapipe at depths 0 and 16, real podman and llama-bench,
the tiny model) is made once; its report and a report of it beside a second host's run
are opened in Debian's chromium: the charts are drawn (bars and depth curves with a
rendered size, per cell), nothing is fetched from the network, and a screenshot of each
is kept under tests/artifacts/ (ignored by git).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from browser import Page, open_page

from vkrama import config, results

ARTIFACTS = Path(__file__).parent / "artifacts"
SHAPES = "[...document.querySelectorAll('figure.chart svg g[id^=\"{}\"]')]"

pytestmark = [pytest.mark.podman, pytest.mark.slow]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """VKRAMA_HOME of one real bench run (run 1)."""
    home = tmp_path_factory.mktemp("report-home")
    done = subprocess.run(
        [sys.executable, "-m", "vkrama", "bench", str(tiny_model), "--backend", "cpu,vulkan",
         "--vk-driver", "lavapipe", "-p", "64", "-n", "16", "-r", "2", "--depth", "0,16"],
        capture_output=True, text=True, env={**os.environ, "VKRAMA_HOME": str(home)}, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return home


def store_like(
    settings: config.Settings, run: results.RunDetail, info: results.RunInfo, scale: float = 1.0
) -> int:
    """Another run stored through the results API as another machine (or model) would have
    stored it: `run`'s cells under `info`, every rate times `scale`."""
    run_id = results.start_run(settings, info)
    for position, cell in enumerate(run.cells):
        faster = tuple(dataclasses.replace(m, tps=m.tps * scale) for m in cell.measurements)
        results.add_cell(settings, run_id, position, dataclasses.replace(cell, measurements=faster))
    results.finish_run(settings, run_id, results.RunStatus.OK)
    return run_id


def drawn(page: Page, kind: str = "bar ") -> list[tuple[str, float]]:
    """(id, rendered height in px) of every bar (or curve) the browser laid out."""
    shapes = SHAPES.format(kind)
    found = page.js(f"return {shapes}.map(e => [e.id, e.getBoundingClientRect().height])")
    return [(name, float(height)) for name, height in found]


def test_report_of_a_real_run_in_chromium(
    vkrama: Callable[..., Any], real_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    done = vkrama("results", "report", "1", "-o", str(out), env={"VKRAMA_HOME": str(real_run)})
    assert done.returncode == 0, done.stderr
    page_text = out.read_text()
    assert "<script" not in page_text and " src=" not in page_text and "<metadata>" not in page_text
    with open_page(out) as page:
        bars = drawn(page)
        assert [name for name, _ in bars] == [
            "bar pp64 cpu", "bar pp64 vulkan/lavapipe", "bar tg16 cpu", "bar tg16 vulkan/lavapipe",
        ]  # fmt: skip
        assert all(height > 0 for _, height in bars)
        curves = drawn(page, "curve ")
        assert [name for name, _ in curves] == [
            "curve pp64 cpu", "curve pp64 vulkan/lavapipe",
            "curve tg16 cpu", "curve tg16 vulkan/lavapipe",
        ]  # fmt: skip
        assert all(height > 0 for _, height in curves)
        verdicts = page.js(
            "return [...document.querySelectorAll('li.verdict')].map(e => e.textContent)"
        )
        tests = sorted(v.split(":")[0] for v in verdicts)
        assert tests == ["pp64", "pp64 @ d16", "tg16", "tg16 @ d16"]
        provenance = page.js("return document.querySelector('table.provenance').innerText")
        assert "Mesa 26" in provenance and "11669" in provenance
        page.screenshot(ARTIFACTS / "report-one-run.png")
        assert page.requests() == [out.resolve().as_uri()]
    assert (ARTIFACTS / "report-one-run.png").stat().st_size > 10_000


@pytest.fixture
def the_real_run(real_run: Path, monkeypatch: pytest.MonkeyPatch) -> results.RunDetail:
    """Run 1, read through the results API of its VKRAMA_HOME (set for the test)."""
    monkeypatch.setenv("VKRAMA_HOME", str(real_run))
    return results.get_run(config.load(), 1)


def test_report_of_two_hosts_side_by_side_in_chromium(
    vkrama: Callable[..., Any], real_run: Path, tmp_path: Path, the_real_run: results.RunDetail
) -> None:
    # The second host's run: the real run's cells, stored through the results API as
    # another machine would have stored them.
    settings, mine = config.load(), the_real_run
    other = dataclasses.replace(
        mine.run.info, host="other-host", started="2026-11-20T09:00:00+00:00"
    )
    run_id = store_like(settings, mine, other)

    out = tmp_path / "two.html"
    done = vkrama(
        "results", "report", "1", str(run_id), "-o", str(out), env={"VKRAMA_HOME": str(real_run)}
    )
    assert done.returncode == 0, done.stderr
    with open_page(out) as page:
        bars = drawn(page)
        assert len(bars) == 8 and all(height > 0 for _, height in bars)
        assert sum("other-host" in name for name, _ in bars) == 4
        assert len(drawn(page, "curve ")) == 8
        hosts = page.js("return [...document.querySelectorAll('.run')].map(e => e.innerText)")
        assert len(hosts) == 2 and "other-host" in hosts[1]
        page.screenshot(ARTIFACTS / "report-two-hosts.png")
        assert page.requests() == [out.resolve().as_uri()]
    assert (ARTIFACTS / "report-two-hosts.png").stat().st_size > 10_000


def test_runs_of_two_models_get_a_section_each_and_every_legend_and_row_names_its_model(
    vkrama: Callable[..., Any], real_run: Path, tmp_path: Path, the_real_run: results.RunDetail
) -> None:
    # Beside the real run: the same model's run on another host (a legend within the
    # model's section), and a run of another model (an 8B Q4_K_M's facts and sha256, the
    # real cells at ten times their speed), stored through the results API.
    settings, mine = config.load(), the_real_run
    big = {"name": "big-shape", "architecture": "llama", "parameter_count": 8_030_261_248,
           "quantization": "Q4_K_M", "size": 4_915_635_904}  # fmt: skip
    other_model = dataclasses.replace(
        mine.run.info, model_name="big.gguf", model_sha256="cd" * 32, model=big
    )
    others = [(dataclasses.replace(mine.run.info, host="other-host"), 1.0), (other_model, 10.0)]
    ids = [str(store_like(settings, mine, info, scale)) for info, scale in others]

    out = tmp_path / "models.html"
    home = {"VKRAMA_HOME": str(real_run)}
    done = vkrama("results", "report", "1", *ids, "-o", str(out), env=home)
    assert done.returncode == 0, done.stderr
    sections = "[...document.querySelectorAll('section.model')]"
    with open_page(out) as page:
        models = page.js(f"return {sections}.map(s => s.dataset.model)")
        assert models == ["vkrama-tiny F16", "big-shape Q4_K_M"]
        headings = page.js(f"return {sections}.map(s => s.querySelector('h3').innerText)")
        assert headings == models
        # Each section's bars: the tiny model's two runs (a bar per run and cell), the big
        # model's one run; no section holds the other model's bars.
        bars = page.js(
            f"return {sections}.map(s => [...s.querySelectorAll('g[id^=\"bar \"]')]"
            ".map(e => [e.id, e.getBoundingClientRect().height]))"
        )
        assert [len(found) for found in bars] == [8, 4]
        assert all(height > 0 for found in bars for _, height in found)
        assert all("other-host" not in name for name, _ in bars[1])
        # Every legend names its section's model: its title is the model's label.
        legends = page.js(
            f"return {sections}.map(s => [...s.querySelectorAll('g[id^=\"legend\"]')]"
            ".map(e => e.textContent))"
        )
        assert [len(found) for found in legends] == [4, 2]  # tiny: 2 bar + 2 curve panels
        for model, found in zip(models, legends, strict=True):
            assert all(model in text for text in found), (model, found)
        # Every panel's title names the model too (text in the SVG, the browser's fonts).
        svg_text = page.js(f"return {sections}.map(s => s.textContent)")
        assert "big-shape" not in svg_text[0] and "vkrama-tiny" not in svg_text[1]
        rows = page.js(
            "return [...document.querySelectorAll('table.results tbody tr')]"
            ".map(r => [r.cells[0].innerText, r.cells[1].innerText])"
        )
        assert {tuple(r) for r in rows} == {
            ("1", "vkrama-tiny F16"), (ids[0], "vkrama-tiny F16"), (ids[1], "big-shape Q4_K_M"),
        }  # fmt: skip
        verdicts = page.js(
            "return [...document.querySelectorAll('li.verdict')].map(e => e.textContent)"
        )
        assert all(("big-shape Q4_K_M: " in v) == v.startswith(f"run {ids[1]},") for v in verdicts)
        page.screenshot(ARTIFACTS / "report-two-models.png")
        assert page.requests() == [out.resolve().as_uri()]
