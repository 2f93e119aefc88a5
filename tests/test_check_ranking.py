"""A stack whose output check is wrong is shown but never ranked: not in the verdict lines,
the exports, the report or `serve --backend best`; the check is stored with its cell."""

from __future__ import annotations

import csv
import io
from dataclasses import replace

from bench_fakes import SHA, cell, store_run

from vkrama import config, results
from vkrama.results import checks, html, report, scoreboard
from vkrama.results.records import CellResult, OutputCheck


def checked(c: CellResult, verdict: str, kl_mean: float) -> CellResult:
    output = OutputCheck(
        gpu_key="none", model_sha256=SHA, backend=c.backend, driver=c.driver, device=c.device,
        image_id=c.image_id, verdict=verdict, reason=f"KL {kl_mean} mean", kl_mean=kl_mean,
        kl_p99=kl_mean, top1=0.0 if verdict == "wrong" else 1.0,
    )  # fmt: skip
    return replace(c, output=output)


FAST_WRONG = checked(cell("vulkan", "radv", 9000, 900), "wrong", 2.3)
SLOW_OK = checked(cell("cpu", None, 800, 30), "ok", 1e-6)


def test_a_wrong_stack_is_kept_out_of_every_verdict_line() -> None:
    lines = report.verdict_lines([FAST_WRONG, SLOW_OK])
    assert lines == [
        "pp64: cpu fastest at 800.0 ± 1.0 t/s (the only cell measured)",
        "tg16: cpu fastest at 30.0 ± 1.0 t/s (the only cell measured)",
        "vulkan/radv: wrong output (KL 2.3 vs CPU), not ranked",
    ]


def test_the_table_shows_the_wrong_stack_with_its_output_column(
    settings: config.Settings,
) -> None:
    run_id = store_run(settings, FAST_WRONG, SLOW_OK)
    detail = results.get_run(settings, run_id)
    assert detail.cells[0].output == FAST_WRONG.output  # stored with the run, read back
    text = report.run_table(detail)
    header, _, *rows = text.splitlines()
    assert header.split()[-2:] == ["status", "output"]
    assert [r.split()[0] + " " + r.split()[-1] for r in rows[:4]] == [
        "vulkan wrong", "vulkan wrong", "cpu ok", "cpu ok",
    ]  # fmt: skip
    assert "vulkan/radv: wrong output (KL 2.3 vs CPU), not ranked" in text
    exported = list(csv.DictReader(io.StringIO(report.export([detail], "csv"))))
    assert [r["output"] for r in exported] == ["wrong", "wrong", "ok", "ok"]
    assert "- run 1, vulkan/radv: wrong output (KL 2.3 vs CPU), not ranked" in report.export(
        [detail], "md"
    )
    (document,) = report.export_document([detail])
    assert document["unranked"] == ["vulkan/radv: wrong output (KL 2.3 vs CPU), not ranked"]
    assert "vulkan/radv: wrong output (KL 2.3 vs CPU), not ranked" in html.render([detail])
    assert "output wrong (KL 2.3 vs CPU)" in scoreboard.scoreboard(detail)


def test_serve_best_never_picks_a_wrong_stack(settings: config.Settings) -> None:
    store_run(settings, FAST_WRONG, SLOW_OK)
    best = results.best(settings, SHA, "none")
    assert best is not None and best.backend == "cpu"


def test_serve_best_skips_a_stack_whose_newest_check_is_wrong(settings: config.Settings) -> None:
    """Benched with --no-check, checked later: the stored check decides."""
    store_run(settings, cell("vulkan", "radv", 9000, 900), cell("cpu", None, 800, 30))
    best = results.best(settings, SHA, "none")
    assert best is not None and best.backend == "vulkan"
    assert FAST_WRONG.output is not None
    checks.store(settings, FAST_WRONG.output)
    best = results.best(settings, SHA, "none")
    assert best is not None and best.backend == "cpu"


def test_a_tuning_whose_output_check_failed_keeps_the_defaults() -> None:
    """What `tune` stores when its won flags changed the output beyond ok: tried, won,
    refused; nothing of it is applied (bench --tuned, serve --backend best)."""
    from vkrama.results import tunings

    won = tunings.TunedStack(
        gpu_key="none", model_sha256=SHA, backend="vulkan", driver="radv", device="RX 7900",
        driver_version="Mesa 26.2", image_id="sha256:v", objective="pp", test="pp2048",
        flags={"fa": "on", "ctk": "q4_0", "ub": "512"},
        defaults={"fa": "auto", "ctk": "f16", "ub": "512"},
        tps=1180.0, tps_stddev=1.0, default_tps=1000.0, default_stddev=1.0, beyond_noise=True,
        spent_s=80.0, trials=9,
    )  # fmt: skip
    assert won.changed == {"fa": "on", "ctk": "q4_0"}
    refused = replace(won, refused="wrong output (KL 0.3 mean, 0.9 p99 vs CPU)")
    assert refused.changed == {} and refused.server_args == () and refused.bench_args == ()
    assert refused.line == (
        "vulkan/radv: llama-bench's defaults stay: -fa on -ctk q4_0 refused, wrong output"
        " (KL 0.3 mean, 0.9 p99 vs CPU) (1.18× its defaults (1180.0 vs 1000.0 t/s pp2048))"
    )
