"""`vkrama results import` of another machine's `results export --format json`.

The inputs are the real exports of the H100 runs kept in benchmarks/results/: a run with
depths and flash attention varied, and a run with GPU sets (`bench --gpu each`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def test_an_export_with_depths_imports_with_its_tests_depths_and_verdicts(
    vkrama: Callable[..., Any],
) -> None:
    done = vkrama("results", "import", str(RESULTS / "gpu-h100-2026-11-25.json"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "stored run 1 from vm: 2/2 cells ok",
        "stored run 2 from vm: 2/2 cells ok",
    ]
    shown = vkrama("results", "show", "2", "--json")
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)[0]["rows"]
    assert sorted({(r["test"], r["depth"]) for r in rows if r["backend"] == "cuda"}) == [
        ("pp512 @ d16384 fa=on", 16384),
        ("pp512 @ d4096 fa=on", 4096),
        ("pp512 fa=on", 0),
        ("tg128 @ d16384 fa=on", 16384),
        ("tg128 @ d4096 fa=on", 4096),
        ("tg128 fa=on", 0),
    ]
    text = vkrama("results", "show", "2").stdout
    assert "pp512 @ d16384 fa=on: cuda fastest at 6845.1 ± 96.7 t/s, 1.42x vulkan/nvidia" in text


def test_an_export_with_gpu_sets_keeps_one_cell_per_set(vkrama: Callable[..., Any]) -> None:
    export = RESULTS / "gpu-2xh100-2026-11-25" / "split-results.json"
    done = vkrama("results", "import", str(export))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stored run 1 from vm: 6/6 cells ok"
    rows = json.loads(vkrama("results", "show", "1", "--json").stdout)[0]["rows"]
    sets = sorted({(r["backend"], str(r["gpus"])) for r in rows})
    assert len(sets) == 6, sets
