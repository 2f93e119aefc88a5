"""`vkrama results import` of another machine's `results export --format json`.

The inputs are the real exports of the H100 runs kept in benchmarks/results/: a run with
depths and flash attention varied, and a run with GPU sets (`bench --gpu each`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench_fakes import cell, store_run

from vkrama import config, results
from vkrama.results.records import CellResult, CellStatus, HostLoad

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
DATA = Path(__file__).resolve().parent / "data"
STARTED = "2026-11-25T10:00:00+00:00"


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


def test_the_json_export_document_is_pinned_byte_for_byte(
    vkrama: Callable[..., Any], settings: config.Settings
) -> None:
    # What scripts read: `results export --format json` and `results show --json` print the
    # same document, every key in this order (a run with an owner, a cell measured on a
    # busy host, one that could not run here), encoded by cli.console.to_json alone.
    busy = HostLoad(2, 0.5, 1.25, 0.75, (), ("4242 llama-server 512MiB",))
    never_ran = CellResult("rocm", None, "-", CellStatus.UNAVAILABLE, "no AMD GPU, no /dev/kfd")
    owner = results.RunOwner(4242, 17, "boot-id")
    measured = replace(cell("cpu", None, 800, 30), host_load=busy)
    run_id = store_run(settings, measured, never_ran, started=STARTED, owner=owner)
    pinned = (DATA / "results_export_document.json").read_text()
    for args in (("export", str(run_id), "--format", "json"), ("show", str(run_id), "--json")):
        done = vkrama("results", *args)
        assert done.returncode == 0, done.stderr
        assert done.stdout == pinned
