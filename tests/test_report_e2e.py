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


def test_report_of_two_hosts_side_by_side_in_chromium(
    vkrama: Callable[..., Any], real_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second host's run: the real run's cells, stored through the results API as
    # another machine would have stored them.
    monkeypatch.setenv("VKRAMA_HOME", str(real_run))
    settings = config.load()
    mine = results.get_run(settings, 1)
    other = dataclasses.replace(
        mine.run.info, host="other-host", started="2026-11-20T09:00:00+00:00"
    )
    run_id = results.start_run(settings, other)
    for position, cell in enumerate(mine.cells):
        results.add_cell(settings, run_id, position, cell)
    results.finish_run(settings, run_id, results.RunStatus.OK)

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
