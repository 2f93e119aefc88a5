"""A fair comparison is one llama.cpp build under different GPU stacks. The rocm image
compiled with ROCm 7 runs another build (11434) than Debian's images (11669): every table,
verdict and `best` choice that compares such cells says so plainly."""

from __future__ import annotations

from dataclasses import replace

from bench_fakes import SHA, cell, store_run

from vkrama import config, results
from vkrama.results import report
from vkrama.results.records import CellResult


def rocm7(pp: float, tg: float) -> CellResult:
    """A rocm cell whose image llama.cpp was compiled from the 11434 source."""
    found = cell("rocm", None, pp, tg)
    return replace(
        found,
        device="AMD Radeon RX 9070 XT",
        provenance={**found.provenance, "llama_cpp_build": "11434", "gfx_targets": "gfx1201"},
    )


def radv(pp: float, tg: float) -> CellResult:
    return replace(cell("vulkan", "radv", pp, tg), device="AMD Radeon RX 9070 XT (RADV GFX1201)")


def test_verdicts_between_builds_say_they_are_not_the_same_llama_cpp() -> None:
    lines = [v.line for v in results.verdicts([rocm7(3000, 90), radv(2500, 100)])]
    assert lines == [
        "pp64: rocm fastest at 3000.0 ± 1.0 t/s, 1.20x vulkan/radv: beyond noise; "
        "not the same llama.cpp: rocm ran build 11434, vulkan/radv 11669",
        "tg16: vulkan/radv fastest at 100.0 ± 1.0 t/s, 1.11x rocm: beyond noise; "
        "not the same llama.cpp: vulkan/radv ran build 11669, rocm 11434",
    ]


def test_verdicts_of_one_build_say_nothing_about_builds() -> None:
    lines = [v.line for v in results.verdicts([cell("cpu", None, 800, 30), radv(2500, 100)])]
    assert not any("llama.cpp" in line for line in lines)


def test_the_bench_table_gets_a_build_column_and_a_warning_only_when_builds_differ() -> None:
    cells = [rocm7(3000, 90), radv(2500, 100), cell("cpu", None, 800, 30)]
    table = report.bench_table(report.rows(1, cells))
    header = table.splitlines()[0].split()
    assert header[:3] == ["backend", "driver", "llama.cpp"]
    assert (
        "warning: these cells ran different llama.cpp builds (build 11434: rocm; "
        "build 11669: vulkan/radv, cpu): a gap between them is the GPU stack and llama.cpp's "
        "own changes together"
    ) in table.splitlines()
    same = report.bench_table(report.rows(1, cells[1:]))
    assert "llama.cpp" not in same.splitlines()[0] and "different llama.cpp" not in same


def test_best_says_when_the_winner_and_runner_up_ran_different_builds(
    settings: config.Settings,
) -> None:
    store_run(settings, rocm7(3000, 90), radv(2500, 100), gpu_key="1002:7550")
    found = results.best(settings, SHA, "1002:7550")
    assert found is not None and (found.backend, found.driver) == ("vulkan", "radv")
    assert found.reason.endswith(
        "vs rocm at 90.0 t/s (run 1); not the same llama.cpp: vulkan/radv ran build 11669, "
        "rocm 11434"
    )
