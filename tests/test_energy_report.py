"""What each stack costs, in the report: the speed-against-energy scatter opened in a real
headless chromium, the scoreboard's J/token column and the JSON and CSV exports.

The stored figures are chosen by hand (radv faster and more frugal than cpu at tg16, cpu
more frugal at pp64, lavapipe without a counter), so where each point must land is known
without the drawing code.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench_fakes import cell, store_run
from browser import open_page

from vkrama import config
from vkrama.results.energy import Energy
from vkrama.results.records import CellResult

ARTIFACTS = Path(__file__).parent / "artifacts"
# (stack, test) -> J/token above idle; t/s: cpu 800 pp64, 30 tg16; radv 900 pp64, 120 tg16
JOULES = {("cpu", "pp64"): 0.05, ("cpu", "tg16"): 0.9,
          ("radv", "pp64"): 0.08, ("radv", "tg16"): 0.4}  # fmt: skip


def drawing(base: CellResult, key: str) -> CellResult:
    rows = []
    for m in base.measurements:
        joules = JOULES.get((key, m.test))
        drew = Energy("NVML energy 0000:03:00.0", 200.0, 50.0, joules, 3.0)
        if joules is None:
            drew = Energy(note="no power counter: hwmon not readable")
        rows.append(replace(m, energy=drew))
    return replace(base, measurements=tuple(rows))


def stored() -> None:
    store_run(
        config.load(),
        drawing(cell("cpu", None, 800, 30), "cpu"),
        drawing(cell("vulkan", "radv", 900, 120), "radv"),
        drawing(cell("vulkan", "lavapipe", 200, 60), "lavapipe"),
    )


def test_the_report_draws_speed_against_energy_a_labelled_point_per_stack_and_test(
    vkrama: Callable[..., Any], tmp_path: Path
) -> None:
    stored()
    out = tmp_path / "report.html"
    done = vkrama("results", "report", "1", "-o", str(out))
    assert done.returncode == 0, done.stderr
    with open_page(out) as page:
        points = 'figure[data-test="energy"] g[id^="energy "]'
        found = page.js(
            f"return [...document.querySelectorAll('{points}')]"
            ".map(e => { const r = e.getBoundingClientRect();"
            " return [e.id, r.x + r.width / 2, r.y + r.height / 2, r.width]; })"
        )
        where = {name: (x, y) for name, x, y, width in found if width > 0}
        assert sorted(where) == [
            "energy pp64 cpu",
            "energy pp64 vulkan/radv",
            "energy tg16 cpu",
            "energy tg16 vulkan/radv",
        ]  # fmt: skip  (lavapipe has no counter: no point, never one at 0)
        # Left is less energy per token, up is faster (the screen's y grows downwards).
        tg_cpu, tg_radv = where["energy tg16 cpu"], where["energy tg16 vulkan/radv"]
        assert tg_radv[0] < tg_cpu[0] and tg_radv[1] < tg_cpu[1]
        pp_cpu, pp_radv = where["energy pp64 cpu"], where["energy pp64 vulkan/radv"]
        assert pp_cpu[0] < pp_radv[0] and pp_radv[1] < pp_cpu[1]
        assert pp_cpu[0] < tg_radv[0] and pp_cpu[1] < tg_cpu[1]
        labels = page.js(
            "return document.querySelector('figure[data-test=\"energy\"]').textContent"
        )
        for label in ("cpu pp64", "cpu tg16", "vulkan/radv pp64", "vulkan/radv tg16"):
            assert label in labels
        assert "J/token above the idle draw" in labels
        table = page.js(
            "return [...document.querySelectorAll('table.results tbody tr')]"
            ".map(r => [r.cells[3].innerText, r.cells[5].innerText,"
            " r.cells[10].innerText, r.cells[11].innerText])"
        )
        assert table == [
            ["cpu", "pp64", "200.0", "0.05"], ["cpu", "tg16", "200.0", "0.9"],
            ["vulkan/radv", "pp64", "200.0", "0.08"], ["vulkan/radv", "tg16", "200.0", "0.4"],
            ["vulkan/lavapipe", "pp64", "-", "no power counter: hwmon not readable"],
            ["vulkan/lavapipe", "tg16", "-", "no power counter: hwmon not readable"],
        ]  # fmt: skip
        page.screenshot(ARTIFACTS / "report-energy.png")
        assert page.requests() == [out.resolve().as_uri()]


def test_the_scoreboard_and_exports_carry_each_tests_joules_per_token(
    vkrama: Callable[..., Any],
) -> None:
    stored()
    board = vkrama("results", "export", "1", "--format", "scoreboard").stdout
    rows = [line.split("|") for line in board.splitlines() if line.startswith("| llama")]
    assert [r[-2].strip() for r in rows] == ["0.05", "0.9", "0.08", "0.4", "-", "-"]
    assert "- vulkan/lavapipe tg16: no power counter: hwmon not readable" in board
    (run,) = json.loads(vkrama("results", "export", "1", "--format", "json").stdout)
    assert [r["energy"]["joules_per_token"] for r in run["rows"]] == [
        0.05, 0.9, 0.08, 0.4, None, None,
    ]  # fmt: skip
    table = vkrama("results", "export", "1", "--format", "csv").stdout
    found = list(csv.DictReader(io.StringIO(table)))
    assert [r["J/token"] for r in found] == ["0.05", "0.9", "0.08", "0.4", "", ""]
