"""`serve --backend best --rank-by joules`: the stored stack with the least J/token above idle
in generation, among stacks whose output check said ok; a clear error where none has one.

The stored figures are chosen by hand (a frugal stack with a drifting output, a faster one
that costs more per token), so the expected pick is known without ranking's code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench_fakes import SHA, cell, store_run

from vkrama import config, results
from vkrama.errors import ExitStatus
from vkrama.results.energy import Energy
from vkrama.results.records import CellResult, OutputCheck


def drawing(
    base: CellResult, joules: float | None, verdict: str | None, sha: str = SHA, gpu: str = "none"
) -> CellResult:
    """`base` with its tg row at `joules` J/token above idle (None: a note instead) and its
    output check's `verdict` (None: never checked)."""
    drew = Energy("RAPL package-0", 40.0, 10.0, joules, 3.0)
    if joules is None:
        drew = Energy(note="no power counter: no /sys/class/powercap")
    rows = tuple(replace(m, energy=drew) if m.metric == "tg" else m for m in base.measurements)
    check = None
    if verdict is not None:
        check = OutputCheck(gpu, sha, base.backend, base.driver, base.device, "", verdict,
                            "KL 0.001 mean vs CPU", 0.001, 0.004, 1.0)  # fmt: skip
    return replace(base, measurements=rows, output=check)


def test_the_least_joules_per_generated_token_wins_among_stacks_whose_output_is_ok(
    settings: config.Settings,
) -> None:
    store_run(
        settings,
        drawing(cell("cpu", None, 800, 30), 0.50, "ok"),  # slowest, but frugal
        drawing(cell("vulkan", "radv", 900, 120), 0.90, "ok"),  # fastest, costs most
        drawing(cell("vulkan", "lavapipe", 200, 60), 0.20, "drift"),  # least, not ok
        drawing(cell("rocm", None, 850, 100), 0.10, None),  # least of all, never checked
    )
    best = results.best(settings, SHA, "none", "joules")
    assert best is not None and (best.backend, best.driver, best.test) == ("cpu", None, "tg16")
    assert best.reason.startswith(
        "least energy per generated token (tg16 at depth 0, output check ok): cpu on CPU at "
        "0.5 J/token above idle, 30.0 ± 1.0 t/s (bench run 1"
    )
    assert "vs vulkan/radv at 0.9 J/token above idle (run 1)" in best.reason
    # by speed the same store picks radv, the check's drift aside
    tg = results.best(settings, SHA, "none", "tg")
    assert tg is not None and (tg.backend, tg.driver) == ("vulkan", "radv")


def test_serve_best_rank_by_joules_starts_the_frugal_stack_or_says_why_it_cannot(
    vkrama: Callable[..., Any], tiny_model: Path, settings: config.Settings
) -> None:
    from vkrama import hardware

    sha = hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    gpu = hardware.detect_host(settings).gpu_key(None)
    args = ("--dry-run", "serve", str(tiny_model), "--backend", "best", "--rank-by", "joules")
    # stored rows without a J/token figure (a VM's cpu): nothing to rank, said in one line
    store_run(settings, drawing(cell("cpu", None, 800, 30), None, "ok", sha, gpu),
              model_sha256=sha, gpu_key=gpu)  # fmt: skip
    done = vkrama(*args)
    assert done.returncode == ExitStatus.NO_POWER_COUNTER
    error, hint = done.stderr.strip().splitlines()
    assert error == (
        f"Error: no stored generation (tg) result of {tiny_model} on this machine has a "
        "J/token figure from a stack whose output check said ok"
    )
    assert hint.startswith("Hint: run `vkrama bench ") and "vkrama doctor" in hint
    store_run(
        settings,
        drawing(cell("cpu", None, 800, 30), 0.5, "ok", sha, gpu),
        drawing(cell("vulkan", "lavapipe", 200, 60), 0.2, "wrong", sha, gpu),
        model_sha256=sha, gpu_key=gpu,
    )  # fmt: skip
    done = vkrama(*args)
    assert done.returncode == 0, done.stderr
    assert "localhost/vkrama/cpu:latest" in done.stdout
    assert "--backend best: least energy per generated token (tg16 at depth 0" in done.stderr
